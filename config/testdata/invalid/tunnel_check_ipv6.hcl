daemon {
  health_source = "192.0.2.10"
}

service "web6" {
  vip  = "2001:db8::10"
  port = 80

  real "2001:db8:1::11" {}

  check "tcp" {
    tunnel = true
  }
}
