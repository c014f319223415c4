service "web" {
  vip  = "198.51.100.10"
  port = 80

  real "web01.example.com" {}
  real "203.0.113.11:0" {}
  real "0.0.0.0" {}
  real "203.0.113.12:8080" { port = 8081 }
}
