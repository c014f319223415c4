package daemon

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/kglb/kglb/config"
	"github.com/kglb/kglb/internal/atomicfile"
)

// A planned restart is told from a stop by its signal: the unit sets
// RestartKillSignal=SIGUSR2, so systemd sends SIGUSR2 for `systemctl
// restart` and `try-restart` (which is what an upgrade of the package
// runs), and SIGTERM for `systemctl stop`, a removal of the package and
// the shutdown of the host. Nothing has to be queried at stop time, which
// matters because the daemon runs sandboxed without access to systemd's
// bus.
const restartSignal = syscall.SIGUSR2

// restartMarker is the file, in state_dir, that a planned restart leaves
// for the next process: the Unix time it was written. The next process
// reads and removes it; while it is younger than the shortest restart_time
// of the graceful-restart neighbors, the routers still hold kglb's routes
// as stale and the data plane is in place, so the speaker starts in
// restarting mode (bgp.Options.Restarting).
const restartMarker = "bgp-planned-restart"

// keepsRoutes reports whether a planned restart can leave the routes with
// the routers: graceful restart with at least one neighbor and a data plane
// that stays (on_stop = "keep"). Otherwise a restart is a stop and a start,
// and the routes are withdrawn in between.
func keepsRoutes(cfg *config.Config) bool {
	return cfg.BGP.Enabled && cfg.Daemon.OnStop == config.OnStopKeep && restartWindow(cfg.BGP) > 0
}

// restartWindow is the shortest restart_time among the graceful-restart
// neighbors, 0 without any: routers keep stale routes that long.
func restartWindow(b config.BGP) time.Duration {
	var w time.Duration
	for _, n := range b.Neighbors {
		if n.GracefulRestart && (w == 0 || n.RestartTime < w) {
			w = n.RestartTime
		}
	}
	return w
}

// restart ends the daemon for a planned restart. With keepsRoutes it stops
// the engine, leaves the routes and the data plane as they are, writes
// the marker and abandons the BGP sessions without a NOTIFICATION (the
// process exits and the kernel closes them, which routers running graceful
// restart answer by keeping the routes as stale). Without, it is a stop
// whose sessions end without a NOTIFICATION (Speaker.CloseForRestart).
func (d *daemon) restart(cancel context.CancelFunc, engineDone <-chan error) error {
	cfg := d.engineCfg()
	if d.speaker == nil || !keepsRoutes(cfg) {
		if d.speaker != nil {
			d.log.Warn("planned restart without graceful restart (or with on_stop = \"cleanup\"): routes are withdrawn and come back after the first health round")
		}
		return d.stop(cancel, engineDone, true)
	}
	d.notify.send("STOPPING=1")
	cancel()
	if err := <-engineDone; err != nil {
		d.log.Error("engine", "err", err)
	}
	if err := writeRestartMarker(cfg.Daemon.StateDir, time.Now()); err != nil {
		// Without the marker the next process starts as after a crash:
		// routers keep the routes until its End-of-RIB, without the
		// forwarding-preserved bit.
		d.log.Error("planned restart marker", "err", err)
	}
	d.speaker.Abandon()
	d.log.Info("stopped for a planned restart: routes stay with the routers as stale, the data plane stays",
		"restart_window", restartWindow(cfg.BGP).String())
	return nil
}

func writeRestartMarker(dir string, now time.Time) error {
	return atomicfile.WriteFile(filepath.Join(dir, restartMarker), []byte(strconv.FormatInt(now.Unix(), 10)+"\n"), 0o640)
}

// takeRestartMarker reads and removes the marker, and reports whether this
// start follows a planned restart recent enough for the routers to still
// hold the routes.
func takeRestartMarker(dir string, cfg *config.Config, now time.Time) (bool, error) {
	path := filepath.Join(dir, restartMarker)
	// readRegular, not os.ReadFile: the state directory is untrusted, and a
	// FIFO there hung the start. What cannot be read is removed all the
	// same, so that no later start meets it again.
	b, err := readRegular(path, 64)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if rerr := os.Remove(path); rerr != nil {
		return false, errors.Join(err, rerr)
	}
	if err != nil {
		return false, err
	}
	sec, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return false, errors.New("planned restart marker " + path + " is not a Unix time")
	}
	age := now.Sub(time.Unix(sec, 0))
	return keepsRoutes(cfg) && age >= 0 && age < restartWindow(cfg.BGP), nil
}

// restarting is takeRestartMarker for start, logging its outcome.
func restarting(cfg *config.Config, log hclog.Logger) bool {
	ok, err := takeRestartMarker(cfg.Daemon.StateDir, cfg, time.Now())
	if err != nil {
		log.Warn("planned restart marker ignored", "err", err)
	}
	if ok {
		log.Info("starting after a planned restart: routers hold the routes until the first health round is announced")
	}
	return ok
}
