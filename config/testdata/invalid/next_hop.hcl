service "web6" {
  vip  = "2001:db8::10"
  port = 80

  announce {
    next_hop = "192.0.2.10"
    prepend  = 40
  }
}
