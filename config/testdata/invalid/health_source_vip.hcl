daemon {
  health_source = "198.51.100.10"
}

service "web" {
  vip  = "198.51.100.10"
  port = 80
}
