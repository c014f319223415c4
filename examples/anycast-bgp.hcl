# An anycast VIP announced to two top-of-rack routers. Every kglb node with
# this configuration announces the VIP while enough reals are healthy; the
# routers spread flows over the nodes by ECMP.

daemon {
  vip_interface   = "kglb0"
  stats_address   = "127.0.0.1:5678"
  resync_interval = "30s"
  on_stop         = "keep"
  stop_hold       = "5s"
  health_source   = ["192.0.2.10", "2001:db8::10"]
}

bgp {
  asn               = 65010
  router_id         = "192.0.2.10"
  graceful_shutdown = true

  neighbor "tor-a" {
    address       = "192.0.2.1"
    asn           = 65000
    hold_time     = "9s"
    password_file = "/etc/kglb/tor-a.secret"
    families      = ["ipv4", "ipv6"]
  }

  neighbor "tor-b" {
    address       = "192.0.2.2"
    asn           = 65000
    hold_time     = "9s"
    password_file = "/etc/kglb/tor-b.secret"
    families      = ["ipv4", "ipv6"]
  }
}

service "api" {
  vip       = "198.51.100.80"
  port      = 443
  scheduler = "mh"
  flags     = ["mh-port"]
  forward   = "tunnel"

  real "203.0.113.81" {}
  real "203.0.113.82" {}
  real "203.0.113.83" {}
  real "203.0.113.84" {}

  # Probe through the VIP, over the same tunnel as real traffic.
  check "https" {
    path     = "/healthz"
    sni      = "api.example.com"
    interval = "2s"
    timeout  = "1s"
    tunnel   = true
  }

  announce {
    min_healthy     = 2
    restore_healthy = 3
    communities     = ["65010:100"]

    degraded {
      below   = 4
      prepend = 2
    }
  }
  when_all_down = "withdraw"
}
