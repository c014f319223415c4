service "web" {
  vip  = "198.51.100.10"
  port = 80

  check "http" {
    headers = { "X-Probe" = "kglb\r\nX-Forwarded-For: 10.0.0.1" }
  }
}
