service "zero" {
  vip  = "198.51.100.10"
  port = 0
}

service "too_big" {
  vip  = "198.51.100.10"
  port = 65536
}
