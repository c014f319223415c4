service "web" {
  vip  = "198.51.100.10"
  port = 80

  announce {
    communities       = ["65010:100", "70000:1", "no-such-thing", 42]
    large_communities = ["65010:1", "65010:1:x"]
  }
}
