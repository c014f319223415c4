package daemon

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/kglb/kglb/config"
	"github.com/kglb/kglb/lb"
)

// loadStopConfig loads a config of one announced service with the daemon
// and bgp attributes given.
func loadStopConfig(t *testing.T, daemonAttrs, bgpAttrs string) *config.Config {
	t.Helper()
	dir := t.TempDir()
	hcl := fmt.Sprintf(`daemon {
  state_dir = %q
%s
}
bgp {
  asn       = 65010
  router_id = "192.0.2.10"
%s
}
service "web" {
  vip  = "198.51.100.10"
  port = 443
  real "203.0.113.11" {}
  check "tcp" {}
}
`, t.TempDir(), daemonAttrs, bgpAttrs)
	if err := os.WriteFile(filepath.Join(dir, "kglb.hcl"), []byte(hcl), 0o640); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// The stop's budget counts every configured wait: the graceful-shutdown
// wait (only when graceful_shutdown is set: otherwise nothing waits it),
// the hold, and stopWrites for the writes.
func TestStopBudget(t *testing.T) {
	for _, tc := range []struct {
		name              string
		daemonAttrs, bgpA string
		want              time.Duration
	}{
		{"defaults", "", "", 5*time.Second + stopWrites},
		{"graceful shutdown, default wait", "", "graceful_shutdown = true", 10*time.Second + stopWrites},
		{"a wait without graceful shutdown is not waited", "", `graceful_shutdown_wait = "2m"`, 5*time.Second + stopWrites},
		{"long waits", `stop_hold = "2m"`, "graceful_shutdown = true\ngraceful_shutdown_wait = \"3m\"", 5*time.Minute + stopWrites},
		{"no hold", `stop_hold = "0s"`, "", stopWrites},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := stopBudget(loadStopConfig(t, tc.daemonAttrs, tc.bgpA)); got != tc.want {
				t.Errorf("stopBudget = %s, want %s", got, tc.want)
			}
		})
	}
	// Without a bgp block nothing is withdrawn, so nothing waits for
	// graceful shutdown.
	cfg := loadStopConfig(t, "", "graceful_shutdown = true")
	cfg.BGP.Enabled = false
	if got := stopBudget(cfg); got != 5*time.Second+stopWrites {
		t.Errorf("stopBudget without bgp = %s", got)
	}
}

// deadlineAnnouncer announces like the speaker and records the deadline of
// the context its WithdrawAll gets: the time the stop allows the
// graceful-shutdown wait, the hold and the writes.
type deadlineAnnouncer struct {
	announced chan struct{} // closed at the first route announced
	once      sync.Once
	mu        sync.Mutex
	deadline  time.Time
	withdrawn bool
}

func (a *deadlineAnnouncer) Apply(_ context.Context, rs []lb.Route) error {
	if len(rs) > 0 {
		a.once.Do(func() { close(a.announced) })
	}
	return nil
}

func (a *deadlineAnnouncer) WithdrawAll(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.deadline, _ = ctx.Deadline()
	a.withdrawn = true
	return nil
}

// A stop tells systemd how long it may take (EXTEND_TIMEOUT_USEC, beside
// STOPPING=1), and gives the withdrawal, the waits and the cleanup that
// long: graceful_shutdown_wait = "2m" was cut at a minute, and a unit with
// TimeoutStopSec=90s killed the stop in its middle.
func TestStopExtendsTimeoutByEveryWait(t *testing.T) {
	cfg := loadStopConfig(t, `stop_hold = "0s"`, "graceful_shutdown = true\ngraceful_shutdown_wait = \"2m\"")
	budget := stopBudget(cfg)

	ir, vr := fakeDataPlane(t)
	ann := &deadlineAnnouncer{announced: make(chan struct{})}
	e, err := lb.NewEngine(lb.Options{IPVS: ir, VIPs: vr, Announcer: ann, Prober: newUpProber()}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	engineDone := make(chan error, 1)
	go func() { engineDone <- e.Run(ctx, make(chan *config.Config)) }()
	select { // the real is up and the VIP announced: a stop withdraws
	case <-ann.announced:
	case <-time.After(time.Minute):
		t.Fatal("never: the VIP announced")
	}

	path := filepath.Join(t.TempDir(), "notify.sock")
	conn := listenNotify(t, path)
	t.Setenv("NOTIFY_SOCKET", path)
	d := &daemon{log: hclog.NewNullLogger(), notify: newNotifier(hclog.NewNullLogger()), engine: e}
	before := time.Now()
	if err := d.stop(cancel, engineDone, false); err != nil {
		t.Fatal(err)
	}

	if got := readNotify(t, conn); got != "STOPPING=1" {
		t.Errorf("first datagram at stop %q, want STOPPING=1", got)
	}
	want := fmt.Sprintf("EXTEND_TIMEOUT_USEC=%d", (2*time.Minute + stopWrites + stopExit).Microseconds())
	if got := readNotify(t, conn); got != want {
		t.Errorf("datagram once the engine ended %q, want %q", got, want)
	}
	ann.mu.Lock()
	defer ann.mu.Unlock()
	if !ann.withdrawn {
		t.Fatal("the stop withdrew nothing")
	}
	if ann.deadline.Before(before.Add(budget)) {
		t.Errorf("the withdrawal's deadline is %s after the stop began, want at least the budget %s",
			ann.deadline.Sub(before).Round(time.Second), budget)
	}
}

// A record of the applied config in progress at a stop (a syncfs on a disk
// that does not answer) is waited for until the stop's own deadline only:
// the stop waited for it after that deadline, past what systemd was told,
// and was killed. The record left behind is cut off by the exit; the one
// before it stays whole.
func TestStopLeavesARecordInProgressAtItsDeadline(t *testing.T) {
	dir, state := t.TempDir(), t.TempDir()
	writeFiles(t, dir, map[string]string{"a.hcl": svcHCL("a", 1, 11)})
	prev := record(t, dir, state)
	writeFiles(t, dir, map[string]string{"b.hcl": svcHCL("b", 2, 12)})
	cfg, err := config.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Daemon.StateDir = state

	r := newRecorder()
	saving, hung := make(chan struct{}), make(chan struct{})
	// The disk hangs once the copy is in applied.new, at its syncfs.
	r.save = func(c *config.Config, _ string, _ time.Time) error {
		tmp := filepath.Join(c.Daemon.StateDir, appliedName+".new")
		if err := os.MkdirAll(tmp, 0o750); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(tmp, "a.hcl"), []byte(svcHCL("a", 1, 11)), 0o640); err != nil {
			return err
		}
		close(saving)
		<-hung
		return errors.New("syncfs: input/output error")
	}
	t.Cleanup(func() { close(hung); <-r.done })
	var logs bytes.Buffer
	d := &daemon{log: hclog.New(&hclog.LoggerOptions{Output: &logs}), dir: dir, defaultState: state, rec: r}
	go d.recordApplied(r)
	r.passed()
	r.record(cfg)
	<-saving

	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the stop's deadline has come
	within(t, "the stop's wait for a record that never ends", func() error { d.endRecording(ctx, cfg); return nil })
	if !strings.Contains(logs.String(), "stopping before the newest applied config was recorded") {
		t.Errorf("the stop did not say the newest record was not made; logged:\n%s", logs.String())
	}
	// Run's own wait, after the stop's, returns at once.
	if within(t, "Run's wait for the recorder after the stop's", func() error {
		if r.stop(context.Background()) {
			return errors.New("reported the recorder ended")
		}
		return nil
	}) != nil {
		t.Error("the recorder ended while its save hangs")
	}
	// What the exit cuts off leaves the record before it.
	if _, info, ok, err := loadApplied(state); !ok || err != nil || info.Digest != hex.EncodeToString(prev.Digest[:]) {
		t.Errorf("the record after a stop that left one in progress: ok %v, err %v, digest %s, want the previous %x", ok, err, info.Digest, prev.Digest)
	}
}
