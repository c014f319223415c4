service "web" {
  vip  = "198.51.100.10"
  port = 80

  check "http" {
    host = "https://www.example.com/api/v1/health?probe=kglb&verbose=true"
  }
}
