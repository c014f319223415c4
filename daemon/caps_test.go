package daemon

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/kglb/kglb/config"
	"github.com/kglb/kglb/reload"
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

// TestForcedReloadKeepsBindGuard: `kglb reload -force` overrules the
// delete guard (max_delete_share), nothing else. After the start dropped
// CAP_NET_BIND_SERVICE, a forced reload to a BGP listen_port below 1024
// would restart the BGP server (every session resets, every route goes),
// which then cannot bind: it must be refused as an unforced one is.
func TestForcedReloadKeepsBindGuard(t *testing.T) {
	state := t.TempDir()
	bgpBlock := func(port string) string {
		return "daemon {\n  state_dir = \"" + state + "\"\n}\nbgp {\n  asn = 65010\n  router_id = \"192.0.2.10\"\n  listen_port = " + port + "\n}\n"
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "kglb.hcl")
	if err := os.WriteFile(file, []byte(bgpBlock("1179")), 0o640); err != nil {
		t.Fatal(err)
	}
	var last appliedInfo
	var dropped atomic.Bool
	w, err := reload.New(watchOptions(dir, t.TempDir(), &last, &dropped, hclog.NewNullLogger(), nil))
	if err != nil {
		t.Fatal(err)
	}
	dropped.Store(true) // as dropUnneededCaps does after the first load
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() { cancel(); <-done }()

	if err := os.WriteFile(file, []byte(bgpBlock("179")), 0o640); err != nil {
		t.Fatal(err)
	}
	for _, force := range []bool{false, true} {
		o, err := w.ReloadWait(ctx, force)
		if err != nil {
			t.Fatal(err)
		}
		if o.Result != reload.Refused || o.Err == nil || !strings.Contains(o.Err.Error(), "CAP_NET_BIND_SERVICE") {
			t.Errorf("reload (force %v) to listen_port 179 after the drop: %s %v; want refused by the bind guard", force, o.Result, o.Err)
		}
		if got := w.Current().BGP.ListenPort; got != 1179 {
			t.Errorf("reload (force %v): listen_port %d runs, want 1179", force, got)
		}
	}
}
