service "web" {
  vip  = "198.51.100.300"
  port = 80
}

service "web2" {
  vip  = "fe80::1%eth0"
  port = 80
}

service "web3" {
  vip  = "::ffff:198.51.100.3"
  port = 80
}
