services "web" {
}

service "web" {
  vip  = "198.51.100.10"
  port = 80

  backend "203.0.113.11" {}
  port {}
}
