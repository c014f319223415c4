daemon {
  health_source = "2001:db8::10"
}

service "web" {
  vip  = "198.51.100.10"
  port = 80

  real "203.0.113.11" {}

  check "tcp" {
    tunnel = true
  }
}
