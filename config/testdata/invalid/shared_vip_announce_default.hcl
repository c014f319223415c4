service "web-http" {
  vip  = "198.51.100.10"
  port = 80
}

service "web-https" {
  vip  = "198.51.100.10"
  port = 443

  announce {
    communities = ["65010:200"]
  }
}
