daemon {
  vip_interface      = "this-name-is-too-long"
  state_dir          = "var/lib/kglb"
  stats_address      = "localhost:5678"
  resync_interval    = "10ms"
  health_concurrency = 0
  health_source      = ["192.0.2.10", "192.0.2.11"]
  tunnel_mark_base   = "0xffffff00"
  stop_hold          = "5h"
}
