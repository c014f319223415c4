service "web" {
  vip  = "198.51.100.10"
  port = 80

  check "tcp" {
    path = "/healthz"
  }

  check "http" {
    name = "www.example.com"
    sni  = "www.example.com"
  }

  check "htpp" {
  }
}
