service "web" {
  vip  = "198.51.100.10"
  port = 80

  check "http" {
    headers = {
      "X-Probe-Version" = 2
      "X-Debug"         = true
    }
  }
}
