daemon {
  tunnel_mark_base  = 1000
  tunnel_mark_count = 100
}

service "mark" {
  fwmark   = 1010
  port     = 80
  protocol = "tcp"
  family   = "ipv6"
  vip      = "198.51.100.10"
}

service "mark-hex" {
  fwmark = "0xZZ"
  family = "ipv4"
}

service "nofamily" {
  fwmark = "0x20"
}

service "family" {
  vip    = "198.51.100.11"
  port   = 80
  family = "ipv4"
}
