service "web" {
  vip  = "198.51.100.10"
  port = 443

  persistence {
    netmask = ["255.255.255.0"]
  }
}

service "web6" {
  vip  = "2001:db8::10"
  port = 443

  persistence {
    netmask = ["ffff:ffff:ffff:ffff::"]
  }
}
