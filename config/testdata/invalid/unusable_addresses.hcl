service "unspecified" {
  vip  = "0.0.0.0"
  port = 80
}

service "loopback" {
  vip  = "127.0.0.1"
  port = 80
}

service "multicast" {
  vip  = "224.0.0.1"
  port = 80
}

service "broadcast" {
  vip  = "255.255.255.255"
  port = 80
}

service "v6" {
  vip  = "::"
  port = 80
}

service "v6_loopback" {
  vip  = "::1"
  port = 80
}

service "v6_multicast" {
  vip  = "ff02::1"
  port = 80
}

service "reals" {
  vip  = "198.51.100.10"
  port = 80

  real "127.0.0.1" {}
  real "169.254.1.1:8080" {}
  real "::ffff:10.1.0.11" {}
  real "10.1.0.11" {}

  announce {
    next_hop = "224.0.0.5"
  }
}

daemon {
  health_source = ["169.254.0.1", "fe80::1"]
}

bgp {
  asn       = 64512
  router_id = "10.255.0.1"

  neighbor "tor" {
    address       = "127.0.0.1"
    asn           = 64513
    local_address = "0.0.0.0"
  }
}
