service "dns" {
  vip      = "198.51.100.53"
  port     = 53
  protocol = "udp"

  check "dns" {
    type = "A"
  }

  check "dns" {
    name      = "example.com"
    type      = "AAAA"
    answer    = "192.0.2.1"
    transport = "quic"
    rcode     = "nxdomain"
  }
}
