service "zero" {
  vip  = "198.51.100.10"
  port = 0
}

service "big" {
  vip  = "198.51.100.11"
  port = 70000
}

service "fraction" {
  vip  = "198.51.100.12"
  port = 80.5
}

service "none" {
  vip = "198.51.100.13"
}
