# IPv6 services: an address service with client persistence per /64, and an
# fwmark service (packets marked 10 by the firewall) for a port range.

service "web6" {
  vip       = "2001:db8:100::10"
  port      = 443
  scheduler = "wlc"
  forward   = "nat"

  real "[2001:db8:200::11]:8443" {}
  real "[2001:db8:200::12]:8443" {}

  check "https" {
    path     = "/healthz"
    insecure = true
  }

  persistence {
    timeout = "300s"
    netmask = 64
  }
}

service "mail6" {
  fwmark  = 10
  family  = "ipv6"
  forward = "dr"

  real "2001:db8:200::25" {}
  real "2001:db8:200::26" {}

  check "tcp" {
    port = 25
  }
}
