service "web" {
  vip  = "198.51.100.10"
  port = 80

  real "203.0.113.11" {
    upper_threshold = 100
    lower_threshold = 100
  }
  real "203.0.113.12" {
    lower_threshold = 10
  }
  real "203.0.113.13" {
    weight = 70000
  }
}
