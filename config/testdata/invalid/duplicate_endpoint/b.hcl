service "web-copy" {
  vip      = "198.51.100.10"
  port     = 80
  protocol = "tcp"
}

# Same port, other protocol: fine.
service "web-udp" {
  vip      = "198.51.100.10"
  port     = 80
  protocol = "udp"
}
