# The smallest useful configuration: one VIP, one port, two reals.
# Everything else has a default (see docs/config.md): wrr scheduling,
# IPIP tunnel forwarding, no health checks (the reals are always up).
service "quickstart" {
  vip  = "198.51.100.10"
  port = 80

  real "203.0.113.11" {}
  real "203.0.113.12" {}
}
