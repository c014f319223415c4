package daemon

import (
	"bytes"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/kglb/kglb/config"
)

// TestReloadVIPSettingsNeedRestart: the VIP reconciler keeps the link and
// mode it started with, so a reload that changes vip_mode or vip_interface
// says that the change waits for a restart, at every reload until then; a
// reload that keeps them says nothing of it.
func TestReloadVIPSettingsNeedRestart(t *testing.T) {
	started := config.DefaultDaemon()
	for _, tc := range []struct {
		name      string
		mode      config.VIPMode
		link      string
		wantWarns bool
	}{
		{"same", started.VIPMode, started.VIPInterface, false},
		{"mode", config.VIPModeAddress, started.VIPInterface, true},
		{"interface", started.VIPMode, "eth1", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			d := &daemon{log: hclog.New(&hclog.LoggerOptions{Output: &buf}),
				vipMode: started.VIPMode, vipInterface: started.VIPInterface}
			old := &config.Config{Daemon: started}
			c := &config.Config{Daemon: started}
			c.Daemon.VIPMode, c.Daemon.VIPInterface = tc.mode, tc.link
			for range 2 { // this reload and the next, with the same files
				d.reconfigure(old, c, true)
				old = c
			}
			if got := strings.Count(buf.String(), "vip_mode or vip_interface changed"); got != map[bool]int{true: 2}[tc.wantWarns] {
				t.Errorf("%d warnings, want %v at each reload:\n%s", got, tc.wantWarns, buf.String())
			}
		})
	}
}
