daemon {
  log_level = "verbose"
  on_stop   = "withdraw"
  vip_mode  = "Route"
}

service "web" {
  vip           = "198.51.100.10"
  port          = 80
  protocol      = "TCP"
  scheduler     = "maglev"
  forward       = "masq"
  when_all_down = "fail-open"
}
