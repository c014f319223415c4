service "syslog" {
  vip      = "198.51.100.14"
  port     = 514
  protocol = "udp"

  check "syslog" {
    transport = "udp"
    message   = <<EOT
kglb health check
EOT
  }
}
