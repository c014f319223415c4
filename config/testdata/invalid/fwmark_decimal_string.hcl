service "mark" {
  fwmark = "10"

  real "203.0.113.11" {}
}
