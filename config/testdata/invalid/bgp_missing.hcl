bgp {
  neighbor "tor-a" {
  }
}
