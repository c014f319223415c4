package daemon

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/kglb/kglb/config"
	"github.com/kglb/kglb/reload"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func svcHCL(name string, vip byte, reals ...byte) string {
	var b strings.Builder
	fmt.Fprintf(&b, "service %q {\n  vip  = \"198.51.100.%d\"\n  port = 80\n", name, vip)
	for _, r := range reals {
		fmt.Fprintf(&b, "  real \"203.0.113.%d\" {}\n", r)
	}
	b.WriteString("}\n")
	return b.String()
}

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func names(c *config.Config) []string {
	var out []string
	for _, s := range c.Services {
		out = append(out, s.Name)
	}
	return out
}

// record loads dir and records it as applied in state, as a running
// daemon does.
func record(t *testing.T, dir, state string) *config.Config {
	t.Helper()
	cfg, err := config.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Daemon.StateDir = state
	if err := saveApplied(cfg, dir, time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestAppliedRecordRoundTrip(t *testing.T) {
	dir, state := t.TempDir(), t.TempDir()
	writeFiles(t, dir, map[string]string{"a.hcl": svcHCL("a", 1, 11), "b.hcl": svcHCL("b", 2, 12)})
	want := record(t, dir, state)
	got, info, ok, err := loadApplied(state)
	if err != nil || !ok {
		t.Fatalf("loadApplied = %v, %v", ok, err)
	}
	if got.Digest != want.Digest || !slices.Equal(names(got), []string{"a", "b"}) {
		t.Errorf("loaded %v, digest equal %v", names(got), got.Digest == want.Digest)
	}
	if !info.Time.Equal(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)) || info.Dir != dir || !slices.Equal(info.Files, []string{"a.hcl", "b.hcl"}) {
		t.Errorf("info = %+v", info)
	}
	// A second record replaces the first whole, and leaves no staging copy.
	if err := os.Remove(filepath.Join(dir, "b.hcl")); err != nil {
		t.Fatal(err)
	}
	record(t, dir, state)
	got, _, _, err = loadApplied(state)
	if err != nil || !slices.Equal(names(got), []string{"a"}) {
		t.Errorf("after the second record: %v, %v", names(got), err)
	}
	if _, err := os.Stat(filepath.Join(state, "applied.new")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("applied.new left behind: %v", err)
	}
	// None recorded: a first install.
	if _, _, ok, err := loadApplied(t.TempDir()); ok || err != nil {
		t.Errorf("loadApplied of an empty state dir = %v, %v", ok, err)
	}
}

// TestAppliedRecordsTheConfigInForce: the record is of the config in force,
// the bytes it was loaded from, whatever its files became between the load
// and the record. A start with files a running daemon would refuse then runs
// that config, not the one recorded before it.
func TestAppliedRecordsTheConfigInForce(t *testing.T) {
	running := svcHCL("a", 1, 11, 12)
	tests := []struct {
		name   string
		change func(t *testing.T, p string) // a.hcl, once loaded
		start  bool                         // a start with the changed files runs the record
	}{
		{"broken", func(t *testing.T, p string) {
			writeFiles(t, filepath.Dir(p), map[string]string{"a.hcl": "service \"a\" {\n  vip = \"198.51.100.1\n}\n"})
		}, true},
		{"edited", func(t *testing.T, p string) {
			writeFiles(t, filepath.Dir(p), map[string]string{"a.hcl": svcHCL("a", 1, 11, 12, 13)})
		}, false},
		{"removed", func(t *testing.T, p string) { // the delete guard refuses it
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"a FIFO", func(t *testing.T, p string) { // must hang neither the record nor the start
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
			if err := syscall.Mkfifo(p, 0o644); err != nil {
				t.Fatal(err)
			}
			unblockFIFO(t, p)
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, state := t.TempDir(), t.TempDir()
			writeFiles(t, dir, map[string]string{"a.hcl": svcHCL("a", 1, 11),
				"kglb.hcl": fmt.Sprintf("daemon {\n  state_dir = %q\n}\n", state)})
			older := record(t, dir, state)
			// The config in force, loaded as the daemon loads it.
			writeFiles(t, dir, map[string]string{"a.hcl": running})
			start := func() *reload.Watcher[*config.Config] {
				t.Helper()
				var w *reload.Watcher[*config.Config]
				err := within(t, "a start", func() (err error) {
					w, err = reload.New(watchOptions(dir, state, &appliedInfo{}, new(atomic.Bool), hclog.NewNullLogger(), prometheus.NewRegistry()))
					return err
				})
				if err != nil {
					t.Fatal(err)
				}
				return w
			}
			cfg := start().Current()
			if cfg.Digest == older.Digest {
				t.Fatal("the edit was not loaded")
			}
			tt.change(t, filepath.Join(dir, "a.hcl"))
			if err := within(t, "saveApplied", func() error { return saveApplied(cfg, dir, time.Now()) }); err != nil {
				t.Errorf("the config in force was not recorded: %v", err)
			}
			if b, err := os.ReadFile(filepath.Join(state, appliedName, "a.hcl")); err != nil || string(b) != running {
				t.Errorf("recorded a.hcl = %q, %v; want what was loaded:\n%s", b, err, running)
			}
			if got, _, ok, err := loadApplied(state); !ok || err != nil || got.Digest != cfg.Digest {
				t.Errorf("the record: ok %v, err %v, digest of the config in force %v", ok, err, ok && got.Digest == cfg.Digest)
			}
			if !tt.start {
				return
			}
			w := start()
			if !w.Status().LastApplied || w.Current().Digest != cfg.Digest {
				t.Errorf("a start with the changed files runs %s (the record: %v), want the config in force, %s", realsOf(w.Current()), w.Status().LastApplied, realsOf(cfg))
			}
		})
	}
}

// realsOf lists c's reals by service, as name[addr ...].
func realsOf(c *config.Config) string {
	var parts []string
	for _, s := range c.Services {
		var rs []string
		for _, r := range s.Reals {
			rs = append(rs, r.Addr.String())
		}
		parts = append(parts, s.Name+"["+strings.Join(rs, " ")+"]")
	}
	return strings.Join(parts, " ")
}

// A config whose removals are held is not what its files make: it is not
// recorded, and the previous record stays.
func TestAppliedNotRecordedWhenHeld(t *testing.T) {
	dir, state := t.TempDir(), t.TempDir()
	writeFiles(t, dir, map[string]string{"a.hcl": svcHCL("a", 1, 11, 12)})
	first := record(t, dir, state)
	writeFiles(t, dir, map[string]string{"a.hcl": svcHCL("a", 1, 11)})
	cfg, err := config.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Daemon.StateDir = state
	held, ok := Hold(first, cfg)
	if !ok {
		t.Fatal("nothing held")
	}
	if err := saveApplied(held, dir, time.Now()); !errors.Is(err, errNotRecorded) {
		t.Errorf("save of a held config = %v, want errNotRecorded", err)
	}
	got, _, _, err := loadApplied(state)
	if err != nil || got.Digest != first.Digest {
		t.Errorf("the first record was replaced: %v", err)
	}
	if _, err := os.Stat(filepath.Join(state, appliedName+".new")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a held config left applied.new: %v", err)
	}
}

// A start is a reload from what ran before, with the daemon's own options:
// the files are judged against the last applied config.
func TestStartIsAReloadFromTheLastApplied(t *testing.T) {
	two := map[string]string{"a.hcl": svcHCL("a", 1, 11), "b.hcl": svcHCL("b", 2, 12)}
	tests := []struct {
		name     string
		recorded bool
		files    map[string]string // after the record
		remove   []string
		want     []string // services at start; nil: New fails
		reason   string   // in Status().Err while the last applied runs
	}{
		{name: "emptied directory", recorded: true, remove: []string{"a.hcl", "b.hcl"}, want: []string{"a", "b"}, reason: "would delete 2 of 2 services"},
		{name: "broken edit", recorded: true, files: map[string]string{"b.hcl": "service \"b\" {\n  vip = \"198.51.100.2\n}\n"}, want: []string{"a", "b"}, reason: "b.hcl:2:"},
		{name: "valid edit", recorded: true, files: map[string]string{"c.hcl": svcHCL("c", 3, 13)}, want: []string{"a", "b", "c"}},
		{name: "half deleted is allowed", recorded: true, remove: []string{"b.hcl"}, want: []string{"a", "b"}},
		{name: "first install, broken", files: map[string]string{"b.hcl": "service {"}},
		{name: "first install, valid", want: []string{"a", "b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, state := t.TempDir(), t.TempDir()
			writeFiles(t, dir, two)
			writeFiles(t, dir, map[string]string{"kglb.hcl": fmt.Sprintf("daemon {\n  state_dir = %q\n}\n", state)})
			if tt.recorded {
				record(t, dir, state)
			}
			writeFiles(t, dir, tt.files)
			for _, f := range tt.remove {
				if err := os.Remove(filepath.Join(dir, f)); err != nil {
					t.Fatal(err)
				}
			}
			var last appliedInfo
			reg := prometheus.NewRegistry()
			w, err := reload.New(watchOptions(dir, state, &last, new(atomic.Bool), hclog.NewNullLogger(), reg))
			if tt.want == nil {
				if err == nil {
					t.Fatal("New succeeded on a first install with broken files")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			// A deletion the guard allows is held until the files settle.
			if got := names(w.Current()); !slices.Equal(got, tt.want) {
				t.Errorf("services at start = %v, want %v", got, tt.want)
			}
			st := w.Status()
			if st.LastApplied != (tt.reason != "") || tt.reason != "" && (st.Err == nil || !strings.Contains(st.Err.Error(), tt.reason)) {
				t.Errorf("Status = %+v, want reason %q", st, tt.reason)
			}
			if tt.reason != "" && last.Time.IsZero() {
				t.Error("the record's time is not reported")
			}
			gauge, err := testutil.GatherAndCount(reg, "kglb_config_running_last_applied")
			if err != nil || gauge != 1 {
				t.Errorf("kglb_config_running_last_applied: %d series, %v", gauge, err)
			}
		})
	}
}

func TestHold(t *testing.T) {
	svc := func(name string, vip byte, reals ...byte) *config.Service {
		s := &config.Service{Name: name, VIP: netip.AddrFrom4([4]byte{198, 51, 100, vip}), Port: 80, Protocol: config.TCP}
		for _, r := range reals {
			s.Reals = append(s.Reals, config.Real{Addr: netip.AddrFrom4([4]byte{203, 0, 113, r}), Port: 80, Weight: 1})
		}
		return s
	}
	mk := func(svcs ...*config.Service) *config.Config {
		return &config.Config{Services: svcs, Digest: [32]byte{byte(len(svcs))}}
	}
	show := func(c *config.Config) string {
		var parts []string
		for _, s := range c.Services {
			var rs []string
			for _, r := range s.Reals {
				rs = append(rs, r.Addr.String())
			}
			parts = append(parts, fmt.Sprintf("%s@%s[%s]", s.Name, s.VIP, strings.Join(rs, " ")))
		}
		return strings.Join(parts, " ")
	}
	tests := []struct {
		name         string
		running, new *config.Config
		want         string
		held         bool
	}{
		{"nothing removed", mk(svc("a", 1, 11)), mk(svc("a", 1, 11, 12), svc("b", 2, 13)), "a@198.51.100.1[203.0.113.11 203.0.113.12] b@198.51.100.2[203.0.113.13]", false},
		{"service removed", mk(svc("a", 1, 11), svc("b", 2, 12)), mk(svc("a", 1, 11)), "a@198.51.100.1[203.0.113.11] b@198.51.100.2[203.0.113.12]", true},
		{"emptied", mk(svc("a", 1, 11)), mk(), "a@198.51.100.1[203.0.113.11]", true},
		{"real removed, service changed", mk(svc("a", 1, 11, 12)), mk(svc("a", 3, 12, 14)), "a@198.51.100.3[203.0.113.11 203.0.113.12 203.0.113.14]", true},
		{"renamed on the same endpoint", mk(svc("a", 1, 11)), mk(svc("b", 1, 11)), "b@198.51.100.1[203.0.113.11]", false},
		{"family changed", mk(svc("a", 1, 11)), mk(func() *config.Service {
			s := svc("a", 1)
			s.Family = config.IPv6
			return s
		}()), "a@198.51.100.1[]", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, held := Hold(tt.running, tt.new)
			if show(got) != tt.want || held != tt.held {
				t.Errorf("Hold = %s, %v\nwant   %s, %v", show(got), held, tt.want, tt.held)
			}
			if held && got.Digest == tt.new.Digest {
				t.Error("a held config has the files' digest")
			}
		})
	}
}

// kglb status and systemd's STATUS say that the last applied config runs,
// since when, and why, positioned.
func TestStatusSaysLastAppliedRuns(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	st := Status{Config: ConfigStatus{RunningLastApplied: true, LastAppliedAt: at, Settling: true,
		LastReloadError: "/etc/kglb/web.hcl:2:10: unterminated string literal\n/etc/kglb/a.hcl:1:1: other"}}
	var b strings.Builder
	WriteStatus(&b, st, at)
	for _, want := range []string{"CONFIG REJECTED AT START (the config applied at 2026-01-02T03:04:05Z runs)", "/etc/kglb/web.hcl:2:10: unterminated string literal", "deletions wait"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("kglb status lacks %q:\n%s", want, b.String())
		}
	}
	if got := firstLine(errors.New("/etc/kglb/web.hcl:2:10: x\nb\nc")); got != "/etc/kglb/web.hcl:2:10: x (and 2 more)" {
		t.Errorf("firstLine = %q", got)
	}
}

// unblockFIFO opens p for writing, without blocking, when the test ends:
// a reader stuck opening it (the bug the test looks for) is let go.
func unblockFIFO(t *testing.T, p string) {
	t.Cleanup(func() {
		if f, err := os.OpenFile(p, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			f.Close()
		}
	})
}

// within runs f and fails the test when it has not returned in time.
func within(t *testing.T, what string, f func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-time.After(3 * time.Second):
		t.Fatalf("%s hangs", what)
		return nil
	}
}

// A state directory is untrusted too: an applied.json that is a FIFO must
// not hang the start.
func TestLoadAppliedDoesNotOpenAFIFO(t *testing.T) {
	state := t.TempDir()
	if err := os.Mkdir(filepath.Join(state, appliedName), 0o750); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(state, appliedName, appliedMeta)
	if err := syscall.Mkfifo(p, 0o644); err != nil {
		t.Fatal(err)
	}
	unblockFIFO(t, p)
	if err := within(t, "loadApplied", func() error { _, _, _, err := loadApplied(state); return err }); err == nil {
		t.Error("loadApplied read a FIFO without error")
	}
}

// TestStateDirChangeDropsTheDefaultRecord: after state_dir moves away from
// the default, a start whose files do not load (they name no state_dir, so
// the record is looked for in the default) must not run the config recorded
// there before the move: it fails, as on a first install, rather than start
// without the services added since.
func TestStateDirChangeDropsTheDefaultRecord(t *testing.T) {
	dir, def, custom := t.TempDir(), t.TempDir(), t.TempDir()
	writeFiles(t, dir, map[string]string{"a.hcl": svcHCL("a", 1, 11)})
	record(t, dir, def) // a run with the default state_dir
	writeFiles(t, dir, map[string]string{"b.hcl": svcHCL("b", 2, 12),
		"kglb.hcl": fmt.Sprintf("daemon {\n  state_dir = %q\n}\n", custom)})
	cfg, err := config.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	d := &daemon{log: hclog.NewNullLogger(), dir: dir, defaultState: def}
	r := newRecorder()
	r.record(cfg)
	go d.recordApplied(r)
	r.passed()
	r.stop(context.Background())
	if _, info, ok, err := loadApplied(custom); !ok || err != nil || info.Digest != hex.EncodeToString(cfg.Digest[:]) {
		t.Fatalf("the record in the new state_dir: ok %v, err %v, digest %s", ok, err, info.Digest)
	}

	writeFiles(t, dir, map[string]string{"b.hcl": "service {"})
	var last appliedInfo
	w, err := reload.New(watchOptions(dir, def, &last, new(atomic.Bool), hclog.NewNullLogger(), prometheus.NewRegistry()))
	if err == nil {
		t.Errorf("a start with a broken file ran %v, recorded in %s before state_dir changed", names(w.Current()), def)
	}
}

// TestDropAppliedKeepsTheSameDirectory: a state_dir that is the default's
// directory under another name (a symlink) keeps the record just made there.
func TestDropAppliedKeepsTheSameDirectory(t *testing.T) {
	dir, def := t.TempDir(), t.TempDir()
	writeFiles(t, dir, map[string]string{"a.hcl": svcHCL("a", 1, 11)})
	record(t, dir, def)
	link := filepath.Join(t.TempDir(), "state")
	if err := os.Symlink(def, link); err != nil {
		t.Fatal(err)
	}
	if err := dropApplied(def, link); err != nil {
		t.Fatal(err)
	}
	if _, _, ok, err := loadApplied(def); !ok || err != nil {
		t.Errorf("the record in %s, also named %s: ok %v, err %v", def, link, ok, err)
	}
	if err := dropApplied(def, t.TempDir()); err != nil {
		t.Fatal(err)
	}
	if _, _, ok, err := loadApplied(def); ok || err != nil {
		t.Errorf("the record in %s after a record elsewhere: ok %v, err %v", def, ok, err)
	}
}

// A BGP password_file replaced by a FIFO after the load must not hang the
// digest a reload compares (Fingerprint reads the password files): it runs
// in the reload loop holding the watcher's lock, so a hang there stops every
// later reload, leaves systemd in "reloading" after a SIGHUP and blocks
// every /status.
func TestDigestDoesNotOpenAFIFOPasswordFile(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "tor-a.secret")
	if err := os.WriteFile(secret, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := writeDirBGP(t, "  neighbor \"tor-a\" {\n    address = \"192.0.2.1\"\n    asn = 65000\n    password_file = \""+secret+"\"\n  }\n", "")
	cfg, err := config.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(secret); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(secret, 0o600); err != nil {
		t.Fatal(err)
	}
	unblockFIFO(t, secret)
	var dropped atomic.Bool
	digest := watchOptions(dir, t.TempDir(), &appliedInfo{}, &dropped, hclog.NewNullLogger(), nil).Digest
	within(t, "the reload's digest", func() error { digest(cfg); return nil })
}
