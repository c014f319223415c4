service "web" {
  vip     = "198.51.100.10"
  port    = 80
  forward = "tunnel"

  real "203.0.113.11:8080" {}
  real "203.0.113.12" { port = 8080 }
}
