# A web tier behind one VIP: HTTP and HTTPS over IPIP tunnels, with Maglev
# hashing so every kglb node sends a flow to the same real, and a DR
# service for reals on the same L2 segment.

service "web-http" {
  vip       = "198.51.100.20"
  port      = 80
  scheduler = "mh"
  flags     = ["mh-port"]
  forward   = "tunnel"
  drain     = "60s"

  real "203.0.113.21" {}
  real "203.0.113.22" {}
  real "203.0.113.23" { weight = 200 }

  check "http" {
    path     = "/healthz"
    host     = "www.example.com"
    status   = [200, "300-399"]
    body     = "ok"
    interval = "2s"
    timeout  = "1s"
  }
}

service "web-https" {
  vip       = "198.51.100.20"
  port      = 443
  scheduler = "mh"
  flags     = ["mh-fallback", "mh-port"]
  forward   = "tunnel"

  real "203.0.113.21" {}
  real "203.0.113.22" {}
  real "203.0.113.23" { weight = 200 }

  check "https" {
    path    = "/healthz"
    sni     = "www.example.com"
    headers = { "X-Probe" = "kglb" }
    status  = ["200-299"]
  }

  persistence {
    timeout = "600s"
    netmask = "255.255.255.0"
  }
}

service "web-dr" {
  vip     = "198.51.100.21"
  port    = 80
  forward = "dr"

  real "203.0.113.31" {}
  real "203.0.113.32" {
    upper_threshold = 5000
    lower_threshold = 4000
  }

  check "http" {
    path = "/status"
  }
  check "tcp" {
    port = 8081
  }
}
