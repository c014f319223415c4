service "web" {
  vip  = "198.51.100.10"
  port = 80

  real "203.0.113.11" {}
  real "2001:db8::11" {}
}

service "mark" {
  fwmark = 11

  real "2001:db8::12" {}
  real "203.0.113.12" {}
}
