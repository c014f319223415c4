service "web" {
  vip  = "198.51.100.10"
  port = 80

  check "tcp" {
    interval = "1s"
    timeout  = "1s"
  }

  check "http" {
    interval = "1s"
  }
}
