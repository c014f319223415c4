# A DNS resolver pool on one VIP, over UDP and TCP. UDP uses one_packet
# scheduling: each query may go to a different real.

service "dns-udp" {
  vip        = "198.51.100.53"
  port       = 53
  protocol   = "udp"
  one_packet = true
  scheduler  = "sh"
  flags      = ["sh-fallback"]

  real "203.0.113.53" {}
  real "203.0.113.54" {}

  check "dns" {
    name      = "health.example.com"
    type      = "A"
    transport = "udp"
    answer    = "192.0.2.53"
    interval  = "1s"
    timeout   = "500ms"
  }
}

service "dns-tcp" {
  vip      = "198.51.100.53"
  port     = 53
  protocol = "tcp"

  real "203.0.113.53" {}
  real "203.0.113.54" {}

  check "dns" {
    name      = "example.com."
    type      = "SOA"
    transport = "tcp"
  }
}
