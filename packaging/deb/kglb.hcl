# /etc/kglb/kglb.hcl: kglb reads every *.hcl file in /etc/kglb as one
# configuration. As installed it runs no services and announces nothing.
#
# Add services in files of their own (for example /etc/kglb/web.hcl; see
# /usr/share/doc/kglb/examples/ and /usr/share/doc/kglb/config.md.gz), then:
#
#   kglb validate            # every problem, with file:line:col
#   systemctl reload kglb    # validate again, then apply the difference live
#   kglb status              # VIPs, services, reals and BGP peers
#
# Editing a file is picked up on its own too; a broken edit is refused and
# the last good configuration keeps running.

daemon {
  # Dummy link that holds the VIPs; created if missing.
  vip_interface = "kglb0"

  # Read-only: /metrics (Prometheus), /status (JSON), /stats, /healthz.
  # Reloads go through the control socket /run/kglb/control.sock.
  stats_address = "127.0.0.1:5678"

  # Re-read the kernel this often and repair what someone else changed.
  resync_interval = "30s"

  # At stop: withdraw routes, wait stop_hold, then "keep" the IPVS services
  # and VIPs (a restart or upgrade is hitless) or "cleanup" what kglb owns.
  on_stop   = "keep"
  stop_hold = "5s"

  # log_level  = "info"     # trace, debug, info, warn, error
  # log_format = "text"     # or "json"
}

# Announce VIPs to your routers over BGP:
#
# bgp {
#   asn       = 65010
#   router_id = "192.0.2.10"
#
#   neighbor "tor-a" {
#     address       = "192.0.2.1"
#     asn           = 65000
#     hold_time     = "9s"
#     password_file = "/etc/kglb/tor-a.secret"
#   }
# }
