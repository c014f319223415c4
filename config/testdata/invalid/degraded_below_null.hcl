service "web" {
  vip  = "198.51.100.10"
  port = 80

  real "203.0.113.11" {}
  real "203.0.113.12" {}

  announce {
    degraded {
      below = null
      med   = 200
    }
  }
}
