service "web" {
  vip  = var.vip
  port = max(80, 443)
}
