service "mark" {
  fwmark = 10
  family = "ipv4"

  real "203.0.113.11" {}

  announce {
    min_healthy = 1
  }
}
