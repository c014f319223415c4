service "count" {
  vip  = "198.51.100.10"
  port = 80

  real "203.0.113.11" {}
  real "203.0.113.12" {}

  announce {
    min_healthy = 3
  }
}

service "restore" {
  vip  = "198.51.100.11"
  port = 80

  real "203.0.113.11" {}
  real "203.0.113.12" {}

  announce {
    min_healthy     = "50%"
    restore_healthy = "25%"
  }
}

service "mixed" {
  vip  = "198.51.100.12"
  port = 80

  real "203.0.113.11" {}
  real "203.0.113.12" {}

  announce {
    min_healthy     = 1
    restore_healthy = "75%"
  }
}

service "degraded" {
  vip  = "198.51.100.13"
  port = 80

  real "203.0.113.11" {}
  real "203.0.113.12" {}

  announce {
    min_healthy = "50%"

    degraded {
      below = "40%"
    }
  }
}
