service "web server" {
  vip  = "198.51.100.10"
  port = 80
}

service {
  vip  = "198.51.100.11"
  port = 80
}

daemon "main" {
}
