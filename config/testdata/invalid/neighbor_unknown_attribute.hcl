bgp {
  asn       = 65010
  router_id = "192.0.2.10"

  neighbor "tor-a" {
    address     = "192.0.2.1"
    asn         = 65000
    description = "ToR A, rack 12"
  }
}
