service "dns" {
  vip      = "198.51.100.53"
  port     = 53
  protocol = "udp"

  check "dns" {
    name = "http://health.example.com/"
  }
}
