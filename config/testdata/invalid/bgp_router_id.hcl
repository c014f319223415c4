bgp {
  asn       = 65010
  router_id = "2001:db8::10"

  neighbor "tor-a" {
    address       = "192.0.2.300"
    asn           = 65000
    local_address = "2001:db8::10"
  }
}
