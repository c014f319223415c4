service "web" {
  vip  = "198.51.100.10"
  port = 443

  check "https" {
    ca_file = "certs/internal-ca.pem"
  }
}
