package daemon

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/kglb/kglb/bgp"
	"github.com/kglb/kglb/config"
	"github.com/kglb/kglb/lb"
)

// noBGP, as loadStopConfig's bgp attributes, leaves the bgp block out.
const noBGP = "no bgp block"

// loadStopConfig loads a config of one announced service with the daemon
// and bgp attributes given.
func loadStopConfig(t *testing.T, daemonAttrs, bgpAttrs string) *config.Config {
	t.Helper()
	dir := t.TempDir()
	bgpBlock := fmt.Sprintf(`bgp {
  asn       = 65010
  router_id = "192.0.2.10"
%s
}
`, bgpAttrs)
	if bgpAttrs == noBGP {
		bgpBlock = ""
	}
	hcl := fmt.Sprintf(`daemon {
  state_dir = %q
%s
}
%s
service "web" {
  vip  = "198.51.100.10"
  port = 443
  real "203.0.113.11" {}
  check "tcp" {}
}
`, t.TempDir(), daemonAttrs, bgpBlock)
	if err := os.WriteFile(filepath.Join(dir, "kglb.hcl"), []byte(hcl), 0o640); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// newStopSpeaker starts a speaker of cfg's bgp block, with no neighbor and
// no listener: a stop asks it what it will wait.
func newStopSpeaker(t *testing.T, cfg *config.Config) *bgp.Speaker {
	t.Helper()
	sp, err := bgp.New(context.Background(), speakerConfig(cfg.BGP), bgp.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	return sp
}

// The stop's budget counts every wait of the stop: the graceful-shutdown
// wait the speaker will do (only with graceful_shutdown set and a route
// announced: otherwise nothing waits it), the hold, and stopWrites for the
// writes.
func TestStopBudget(t *testing.T) {
	for _, tc := range []struct {
		name              string
		daemonAttrs, bgpA string
		announced         bool
		want              time.Duration
	}{
		{"defaults", "", "", true, 5*time.Second + stopWrites},
		{"graceful shutdown, default wait", "", "graceful_shutdown = true", true, 10*time.Second + stopWrites},
		{"graceful shutdown, nothing announced", "", "graceful_shutdown = true", false, 5*time.Second + stopWrites},
		{"a wait without graceful shutdown is not waited", "", `graceful_shutdown_wait = "2m"`, true, 5*time.Second + stopWrites},
		{"long waits", `stop_hold = "2m"`, "graceful_shutdown = true\ngraceful_shutdown_wait = \"3m\"", true, 5*time.Minute + stopWrites},
		{"no hold", `stop_hold = "0s"`, "", true, stopWrites},
		{"no bgp block", "", noBGP, false, 5*time.Second + stopWrites},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := loadStopConfig(t, tc.daemonAttrs, tc.bgpA)
			d := &daemon{}
			if cfg.BGP.Enabled {
				d.speaker = newStopSpeaker(t, cfg)
			}
			if tc.announced {
				if err := d.speaker.Apply(context.Background(), []bgp.Route{{Prefix: netip.MustParsePrefix("198.51.100.10/32")}}); err != nil {
					t.Fatal(err)
				}
			}
			if got := d.stopBudget(cfg); got != tc.want {
				t.Errorf("stopBudget = %s, want %s", got, tc.want)
			}
		})
	}
}

// stopAnnouncer is the daemon's adapter of a real speaker (announcer) that
// records the deadline of the context its WithdrawAll gets: the time the
// stop allows the graceful-shutdown wait, the hold and the writes. It hands
// the speaker a context already ended, so that the speaker's wait is cut
// short rather than waited by the test. Once refuse is set, an Apply that
// would withdraw every route fails before it reaches the speaker, as one
// cut short by the stop's context or refused by GoBGP does: the speaker
// keeps the routes.
type stopAnnouncer struct {
	announcer
	announced chan struct{} // closed at the first route announced
	refused   chan struct{} // closed at the first withdrawal refused
	refuse    atomic.Bool
	once      sync.Once
	refusal   sync.Once
	mu        sync.Mutex
	deadline  time.Time
	withdrawn bool
}

func newStopAnnouncer(sp *bgp.Speaker) *stopAnnouncer {
	return &stopAnnouncer{announcer: announcer{sp}, announced: make(chan struct{}), refused: make(chan struct{})}
}

func (a *stopAnnouncer) Apply(ctx context.Context, rs []lb.Route) error {
	if len(rs) == 0 && a.refuse.Load() {
		a.refusal.Do(func() { close(a.refused) })
		return errors.New("withdraw 198.51.100.10/32: refused")
	}
	if err := a.announcer.Apply(ctx, rs); err != nil {
		return err
	}
	if len(rs) > 0 {
		a.once.Do(func() { close(a.announced) })
	}
	return nil
}

func (a *stopAnnouncer) WithdrawAll(ctx context.Context) error {
	a.mu.Lock()
	a.deadline, _ = ctx.Deadline()
	a.withdrawn = true
	a.mu.Unlock()
	cut, cancel := context.WithCancel(context.Background())
	cancel()
	return a.announcer.WithdrawAll(cut)
}

// stopAfter runs an engine of cfg over a real speaker of its bgp block
// until the VIP is announced; with reload, it then hands the engine that
// config, whose withdrawal of the route the router refuses. Then it stops
// the daemon, and returns the datagram systemd got once the engine ended
// and the time the stop gave the withdrawal, the waits and the writes.
func stopAfter(t *testing.T, cfg, reload *config.Config) (string, time.Duration) {
	t.Helper()
	sp := newStopSpeaker(t, cfg)
	ir, vr := fakeDataPlane(t)
	ann := newStopAnnouncer(sp)
	e, err := lb.NewEngine(lb.Options{IPVS: ir, VIPs: vr, Announcer: ann, Prober: newUpProber()}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	configs := make(chan *config.Config)
	engineDone := make(chan error, 1)
	go func() { engineDone <- e.Run(ctx, configs) }()
	select { // the real is up and the VIP announced: a stop withdraws
	case <-ann.announced:
	case <-time.After(time.Minute):
		t.Fatal("never: the VIP announced")
	}
	if reload != nil {
		ann.refuse.Store(true)
		configs <- reload
		select {
		case <-ann.refused:
		case <-time.After(time.Minute):
			t.Fatal("never: the reload's withdrawal")
		}
	}

	path := filepath.Join(t.TempDir(), "notify.sock")
	conn := listenNotify(t, path)
	t.Setenv("NOTIFY_SOCKET", path)
	d := &daemon{log: hclog.NewNullLogger(), notify: newNotifier(hclog.NewNullLogger()), engine: e, speaker: sp}
	before := time.Now()
	if err := d.stop(cancel, engineDone, false); err != nil {
		t.Fatal(err)
	}
	if got := readNotify(t, conn); got != "STOPPING=1" {
		t.Errorf("first datagram at stop %q, want STOPPING=1", got)
	}
	extend := readNotify(t, conn)
	ann.mu.Lock()
	defer ann.mu.Unlock()
	if !ann.withdrawn {
		t.Fatal("the stop withdrew nothing")
	}
	return extend, ann.deadline.Sub(before)
}

// A stop tells systemd how long it may take (EXTEND_TIMEOUT_USEC, beside
// STOPPING=1), and gives the withdrawal, the waits and the cleanup that
// long: graceful_shutdown_wait = "2m" was cut at a minute, and a unit with
// TimeoutStopSec=90s killed the stop in its middle. The wait counted is the
// one the speaker will do: after a reload that removed the bgp block, the
// speaker keeps the block it started with, and when a route is still
// announced at the stop (its withdrawal refused, or cut short by the stop)
// WithdrawAll waits that block's graceful_shutdown_wait; read from the
// running config, which has none, it was cut at the stop's deadline.
func TestStopExtendsTimeoutByEveryWait(t *testing.T) {
	for _, tc := range []struct {
		name   string
		wait   time.Duration
		reload string // the bgp attributes of a reload (loadStopConfig), no reload if empty
	}{
		{name: "graceful_shutdown_wait", wait: 2 * time.Minute},
		{name: "the bgp block removed by a reload", wait: 30 * time.Minute, reload: noBGP},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := loadStopConfig(t, `stop_hold = "0s"`, fmt.Sprintf("graceful_shutdown = true\ngraceful_shutdown_wait = %q", tc.wait))
			var reload *config.Config
			if tc.reload != "" {
				reload = loadStopConfig(t, `stop_hold = "0s"`, tc.reload)
			}
			extend, allowed := stopAfter(t, cfg, reload)
			budget := tc.wait + stopWrites
			if want := fmt.Sprintf("EXTEND_TIMEOUT_USEC=%d", (budget + stopExit).Microseconds()); extend != want {
				t.Errorf("datagram once the engine ended %q, want %q (the speaker's wait, the writes, the exit)", extend, want)
			}
			if allowed < budget {
				t.Errorf("the withdrawal's deadline is %s after the stop began, want at least the speaker's wait and the writes, %s", allowed.Round(time.Second), budget)
			}
		})
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

	d, logs := recordingHangs(t, dir, cfg)
	r := d.rec

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
	// The record before it is still there to load (the fake never swaps
	// one in; that saveApplied swaps in whole records only is
	// TestAppliedRecordRoundTrip's).
	if _, info, ok, err := loadApplied(state); !ok || err != nil || info.Digest != hex.EncodeToString(prev.Digest[:]) {
		t.Errorf("the record after a stop that left one in progress: ok %v, err %v, digest %s, want the previous %x", ok, err, info.Digest, prev.Digest)
	}
}

// TestExitLeavesARecordInProgressAfterItsWait: the ends of Run that are no
// stop (a planned restart that keeps the routes, the engine's error) wait
// for a record in progress within a bound too, and say what they left; a
// second end says nothing more.
func TestExitLeavesARecordInProgressAfterItsWait(t *testing.T) {
	dir, state := t.TempDir(), t.TempDir()
	writeFiles(t, dir, map[string]string{"a.hcl": svcHCL("a", 1, 11)})
	cfg, err := config.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Daemon.StateDir = state
	d, logs := recordingHangs(t, dir, cfg)
	within(t, "the exit's wait for a record that never ends", func() error { d.exitRecording(0, cfg); return nil })
	within(t, "a second end's wait", func() error { d.exitRecording(time.Hour, cfg); return nil })
	if n := strings.Count(logs.String(), "stopping before the newest applied config was recorded"); n != 1 {
		t.Errorf("the exits said %d times that the newest record was not made, want once; logged:\n%s", n, logs.String())
	}
}

// recordingHangs is a daemon whose recorder is making the record of cfg,
// loaded from dir, on a disk that hangs once the copy is in applied.new, at
// its syncfs, until the test ends; and the daemon's log.
func recordingHangs(t *testing.T, dir string, cfg *config.Config) (*daemon, *bytes.Buffer) {
	t.Helper()
	r := newRecorder()
	saving, hung := make(chan struct{}), make(chan struct{})
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
	logs := &bytes.Buffer{}
	d := &daemon{log: hclog.New(&hclog.LoggerOptions{Output: logs}), dir: dir, defaultState: cfg.Daemon.StateDir, rec: r}
	go d.recordApplied(r)
	r.passed()
	r.record(cfg)
	<-saving
	return d, logs
}
