# A syslog collector pool over TCP, checked by writing one log line.
service "syslog" {
  vip       = "198.51.100.14"
  port      = 514
  scheduler = "lc"

  real "203.0.113.14" {}
  real "203.0.113.15" {}

  check "syslog" {
    transport = "tcp"
    message   = "kglb health check"
  }
}
