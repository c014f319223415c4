package daemon

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/kglb/kglb/config"
)

func TestRestartMarker(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	gr := func(onStop config.OnStop, restart ...time.Duration) *config.Config {
		c := &config.Config{Daemon: config.Daemon{OnStop: onStop}, BGP: config.BGP{Enabled: true}}
		for _, r := range restart {
			c.BGP.Neighbors = append(c.BGP.Neighbors, config.Neighbor{GracefulRestart: true, RestartTime: r})
		}
		c.BGP.Neighbors = append(c.BGP.Neighbors, config.Neighbor{})
		return c
	}
	tests := []struct {
		name    string
		marker  string // "" = none
		cfg     *config.Config
		want    bool
		wantErr bool
	}{
		{"no marker: a first start or after a stop", "", gr(config.OnStopKeep, time.Minute), false, false},
		{"fresh marker, graceful restart, data plane kept", "1799999990", gr(config.OnStopKeep, time.Minute, 2*time.Minute), true, false},
		{"older than the shortest restart time: the routers flushed", "1799999900", gr(config.OnStopKeep, time.Minute, 2*time.Minute), false, false},
		{"no graceful-restart neighbor", "1799999990", gr(config.OnStopKeep), false, false},
		{"on_stop cleanup removes the data plane", "1799999990", gr(config.OnStopCleanup, time.Minute), false, false},
		{"from the future", "1800000100", gr(config.OnStopKeep, time.Minute), false, false},
		{"garbage", "yesterday", gr(config.OnStopKeep, time.Minute), false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			tt.cfg.Daemon.StateDir = dir
			if tt.marker != "" {
				if err := os.WriteFile(filepath.Join(dir, restartMarker), []byte(tt.marker+"\n"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			got, err := takeRestartMarker(dir, tt.cfg, now)
			if got != tt.want || (err != nil) != tt.wantErr {
				t.Errorf("takeRestartMarker = %v, %v; want %v, error %v", got, err, tt.want, tt.wantErr)
			}
			if _, err := os.Stat(filepath.Join(dir, restartMarker)); !os.IsNotExist(err) {
				t.Errorf("the marker is still there (%v): a second start must not read it again", err)
			}
		})
	}
	t.Run("written then taken", func(t *testing.T) {
		dir := t.TempDir()
		cfg := gr(config.OnStopKeep, time.Minute)
		if err := writeRestartMarker(dir, now); err != nil {
			t.Fatal(err)
		}
		if got, err := takeRestartMarker(dir, cfg, now.Add(5*time.Second)); !got || err != nil {
			t.Errorf("takeRestartMarker = %v, %v", got, err)
		}
	})
}

// The state directory is untrusted (TestLoadAppliedDoesNotOpenAFIFO): a
// planned-restart marker that is a FIFO must not hang the start, and is
// removed like any marker, so the next start does not meet it again.
func TestRestartMarkerDoesNotOpenAFIFO(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, restartMarker)
	if err := syscall.Mkfifo(p, 0o600); err != nil {
		t.Fatal(err)
	}
	unblockFIFO(t, p)
	cfg := &config.Config{Daemon: config.Daemon{OnStop: config.OnStopKeep, StateDir: dir},
		BGP: config.BGP{Enabled: true, Neighbors: []config.Neighbor{{GracefulRestart: true, RestartTime: time.Minute}}}}
	var got bool
	err := within(t, "takeRestartMarker", func() error {
		var err error
		got, err = takeRestartMarker(dir, cfg, time.Now())
		return err
	})
	if got || err == nil {
		t.Errorf("takeRestartMarker of a FIFO = %v, %v; want false and an error", got, err)
	}
	if _, err := os.Lstat(p); !os.IsNotExist(err) {
		t.Errorf("the FIFO marker is still there (%v)", err)
	}
}
