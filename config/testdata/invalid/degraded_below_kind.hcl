service "web" {
  vip  = "198.51.100.10"
  port = 80

  real "203.0.113.11" {}
  real "203.0.113.12" {}
  real "203.0.113.13" {}
  real "203.0.113.14" {}

  announce {
    min_healthy = 1

    degraded {
      below = "75%"
      med   = 200
    }
  }
}
