bgp {
  asn       = 23456
  router_id = "192.0.2.10"

  neighbor "tor-a" {
    address = "192.0.2.1"
    asn     = 0
  }
  neighbor "tor-b" {
    address = "192.0.2.2"
    asn     = 65535
  }
  neighbor "tor-c" {
    address = "192.0.2.3"
    asn     = 4294967296
  }
}
