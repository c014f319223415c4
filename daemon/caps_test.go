package daemon

import (
	"strings"
	"testing"

	"github.com/kglb/kglb/config"
)

func TestNeedsBindService(t *testing.T) {
	bgp := func(port uint16) *config.Config {
		return &config.Config{BGP: config.BGP{Enabled: true, ListenPort: port}}
	}
	tests := []struct {
		name  string
		cfg   *config.Config
		stats string
		want  string // "" when nothing needs it
	}{
		{"defaults", &config.Config{}, "127.0.0.1:5678", ""},
		{"bgp connects out only", bgp(0), "127.0.0.1:5678", ""},
		{"bgp listens on 179", bgp(179), "127.0.0.1:5678", "bgp listen_port 179"},
		{"bgp listens high", bgp(1179), "127.0.0.1:5678", ""},
		{"stats on 80", &config.Config{}, "[::1]:80", "stats_address [::1]:80"},
		{"stats on an ephemeral port", &config.Config{}, "127.0.0.1:0", ""},
	}
	for _, tt := range tests {
		got := strings.Join(needsBindService(tt.cfg, tt.stats), ", ")
		if got != tt.want {
			t.Errorf("%s: needsBindService = %q, want %q", tt.name, got, tt.want)
		}
	}
}

// Once the capability is gone, a reload that would listen below 1024 is
// refused with the way out; before, or without such a port, it passes.
func TestBindGuard(t *testing.T) {
	low := &config.Config{BGP: config.BGP{Enabled: true, ListenPort: 179}}
	if err := bindGuard(true, low); err == nil || !strings.Contains(err.Error(), "restart kglb") {
		t.Errorf("bindGuard(dropped, port 179) = %v", err)
	}
	if err := bindGuard(false, low); err != nil {
		t.Errorf("bindGuard(kept, port 179) = %v", err)
	}
	if err := bindGuard(true, &config.Config{}); err != nil {
		t.Errorf("bindGuard(dropped, no listener) = %v", err)
	}
}
