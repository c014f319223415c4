daemon {
  log_level = "debug"
}
