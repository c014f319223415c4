service "web" {
  vip  = "198.51.100.11"
  port = 80
}
