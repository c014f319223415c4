bgp {
  asn       = 65010
  router_id = "192.0.2.10"

  neighbor "tor-a-v6" {
    address       = "2001:db8::1"
    asn           = 65000
    local_address = "192.0.2.10"
  }
}
