service "web" {
  vip  = "198.51.100.10"
  port = 80

  check "tcp" {
    rise = 0
    fall = -1
  }
}
