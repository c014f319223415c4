service "sum" {
  vip  = "198.51.100.10"
  port = 8000 + 80
}

service "template" {
  vip  = "198.51.100.${11}"
  port = 80
}

service "directive" {
  vip  = "%{ if true }198.51.100.12%{ endif }"
  port = 80
}

service "conditional" {
  vip  = "198.51.100.13"
  port = true ? 80 : 8080
}

service "parentheses" {
  vip  = "198.51.100.14"
  port = (80)
}

daemon {
  health_source = [for a in ["192.0.2.1"] : a]
}
