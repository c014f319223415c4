service "web" {
  vip  = "198.51.100.10"
  port = 80

  real "203.0.113.11" {}

  check "tcp" {
    tunnel = true
  }
}

service "mark" {
  fwmark = 12

  real "203.0.113.12" {}

  check "tcp" {
    port   = 80
    tunnel = true
  }
}
