service "web" {
  vip  = "198.51.100.10"
  port = 443

  check "https" {
    method    = "get"
    path      = "healthz"
    status    = [200, 700, "300-299", "2xx"]
    headers   = { "Host" = "www.example.com", "Bad Name" = "x" }
    ca_file   = "/etc/ssl/ca.pem"
    insecure  = true
    max_body  = 0
    proxy_url = "ftp://proxy.example.com/"
  }
}
