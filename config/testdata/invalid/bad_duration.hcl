service "web" {
  vip   = "198.51.100.10"
  port  = 80
  drain = "30"

  check "tcp" {
    interval = 5
    timeout  = "-1s"
  }
}
