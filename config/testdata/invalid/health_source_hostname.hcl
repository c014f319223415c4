daemon {
  health_source = "lb1.example.com"
}
