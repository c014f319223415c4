service "web" {
  vip     = "198.51.100.10"
  port    = 80
  forward = "nat"

  real "203.0.113.11" {}
  real "203.0.113.11:80" {}
  real "203.0.113.11:8080" {}
  real "203.0.113.11" { port = 8080 }
}
