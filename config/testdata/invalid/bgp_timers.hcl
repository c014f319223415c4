bgp {
  asn       = 65010
  router_id = "192.0.2.10"

  neighbor "tor-a" {
    address   = "192.0.2.1"
    asn       = 65000
    hold_time = "9s"
    keepalive = "9s"
  }
  neighbor "tor-b" {
    address   = "192.0.2.2"
    asn       = 65000
    hold_time = "2s"
  }
  neighbor "tor-c" {
    address      = "192.0.2.3"
    asn          = 65000
    restart_time = "2h"
    families     = ["ipv4", "ipv4", "vpnv4"]
  }
  neighbor "tor-d" {
    address   = "192.0.2.4"
    asn       = 65000
    hold_time = "0s"
  }

  graceful_shutdown_wait = "90m"
}
