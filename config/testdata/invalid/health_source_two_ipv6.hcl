daemon {
  health_source = ["2001:db8::10", "2001:db8::11"]
}
