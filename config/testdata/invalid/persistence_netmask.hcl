service "v4" {
  vip  = "198.51.100.10"
  port = 80

  persistence {
    netmask = 64
  }
}

service "v4-mask" {
  vip  = "198.51.100.11"
  port = 80

  persistence {
    netmask = "255.0.255.0"
  }
}

service "v6" {
  vip  = "2001:db8::10"
  port = 80

  persistence {
    netmask = "ffff:ffff:ffff:ffff::"
  }
}
