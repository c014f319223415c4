service "web" {
  vip  = "198.51.100.10"
  port = 80

  check "http" {
    status = []
  }
}
