service "mark-a" {
  fwmark = 10
  family = "ipv4"
}

service "mark-b" {
  fwmark = 10

  real "203.0.113.11" {}
}

# Same mark, other family: fine.
service "mark-c" {
  fwmark = 10
  family = "ipv6"
}
