service "web" {
  vip       = "198.51.100.10"
  port      = 80
  scheduler = "sh"
  flags     = ["mh-port", "sh-port", "sh-port", "persistent"]
}

service "web2" {
  vip   = "198.51.100.11"
  port  = 80
  flags = ["sh-fallback"]
}
