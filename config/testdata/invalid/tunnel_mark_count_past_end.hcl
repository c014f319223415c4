daemon {
  tunnel_mark_base  = "0xfffff000"
  tunnel_mark_count = 8192
}
