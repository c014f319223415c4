service "web" {
  vip  = "198.51.100.10"
  port = 08
}
