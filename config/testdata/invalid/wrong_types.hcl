service "web" {
  vip     = 198
  port    = "80"
  enabled = "yes"
  flags   = "mh-port"

  real "203.0.113.11" {
    weight = "heavy"
  }
}
