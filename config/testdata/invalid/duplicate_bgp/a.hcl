bgp {
  asn       = 65010
  router_id = "192.0.2.10"
}
