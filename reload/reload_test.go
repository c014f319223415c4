package reload

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/kglb/kglb/config"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sys/unix"
)

// set is what the test loader makes of a directory: the sorted "name=content"
// of every *.hcl file. A file containing "INVALID" fails the load, as a
// syntax error would.
type set struct {
	files []string
}

func loadSet(dir string) (set, error) {
	names, err := filepath.Glob(filepath.Join(dir, "*.hcl"))
	if err != nil {
		return set{}, err
	}
	if _, err := os.Stat(dir); err != nil {
		return set{}, err
	}
	slices.Sort(names)
	var s set
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			return set{}, err
		}
		if strings.Contains(string(b), "INVALID") {
			return set{}, fmt.Errorf("%s:1:1: invalid content", filepath.Base(n))
		}
		s.files = append(s.files, filepath.Base(n)+"="+string(b))
	}
	return s, nil
}

func digestSet(s set) [32]byte { return sha256.Sum256([]byte(strings.Join(s.files, "\x00"))) }

// lines counts the non-empty lines of all files: the test's "services".
func (s set) lines() int {
	n := 0
	for _, f := range s.files {
		_, content, _ := strings.Cut(f, "=")
		for _, l := range strings.Split(content, "\n") {
			if strings.TrimSpace(l) != "" {
				n++
			}
		}
	}
	return n
}

// halfGuard refuses a change that drops more than half of the lines.
func halfGuard(old, new set) error {
	if o, n := old.lines(), new.lines(); o > 0 && n*2 < o {
		return fmt.Errorf("would delete %d of %d services", o-n, o)
	}
	return nil
}

type harness struct {
	t   *testing.T
	dir string
	w   *Watcher[set]
	reg *prometheus.Registry
}

func start(t *testing.T, dir string, files map[string]string, opts Options[set]) *harness {
	t.Helper()
	for name, content := range files {
		write(t, filepath.Join(dir, name), content)
	}
	reg := prometheus.NewRegistry()
	opts.Dir, opts.Digest, opts.Registerer = dir, digestSet, reg
	if opts.Load == nil {
		opts.Load = loadSet
	}
	if opts.Debounce == 0 {
		opts.Debounce = 50 * time.Millisecond
	}
	if opts.Poll == 0 {
		opts.Poll = -1
	}
	w, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	// Give the watch a moment to be in place before the test edits files:
	// a reload now is a no-op (same digest) and proves the loop is running.
	h := &harness{t: t, dir: dir, w: w, reg: reg}
	before := h.loads()
	w.Reload(false)
	deadline := time.Now().Add(20 * time.Second)
	for h.loads() == before {
		if time.Now().After(deadline) {
			t.Fatal("the first reload did not happen")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return h
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// next waits for the next accepted configuration. The deadline only bounds a
// hung test; it asserts nothing about speed.
func (h *harness) next() set {
	h.t.Helper()
	select {
	case s := <-h.w.Updates():
		return s
	case <-time.After(20 * time.Second):
		h.t.Fatal("no configuration update arrived")
		return set{}
	}
}

func (h *harness) count(result string) float64 {
	return testutil.ToFloat64(h.w.metrics.reloads.WithLabelValues(result))
}

// loads counts the loads of every result.
func (h *harness) loads() float64 {
	n := 0.0
	for _, r := range []string{"success", "unchanged", "failure", "refused"} {
		n += h.count(r)
	}
	return n
}

// waitResult waits until the reloads counter for result reaches n.
func (h *harness) waitResult(result string, n float64) {
	h.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for h.count(result) < n {
		if time.Now().After(deadline) {
			h.t.Fatalf("reloads{result=%q} = %v, want %v", result, h.count(result), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (h *harness) noUpdate() {
	h.t.Helper()
	select {
	case s := <-h.w.Updates():
		h.t.Fatalf("unexpected update %v", s.files)
	default:
	}
}

func TestAtomicRename(t *testing.T) {
	h := start(t, t.TempDir(), map[string]string{"web.hcl": "a\n"}, Options[set]{})
	tmp := filepath.Join(h.dir, ".web.hcl.swp")
	write(t, tmp, "a\nb\n")
	if err := os.Rename(tmp, filepath.Join(h.dir, "web.hcl")); err != nil {
		t.Fatal(err)
	}
	if got := h.next(); !slices.Equal(got.files, []string{"web.hcl=a\nb\n"}) {
		t.Errorf("got %q", got.files)
	}
}

func TestInPlaceWrite(t *testing.T) {
	h := start(t, t.TempDir(), map[string]string{"web.hcl": "a\n"}, Options[set]{})
	f, err := os.OpenFile(filepath.Join(h.dir, "web.hcl"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(f, "c\n")
	f.Close()
	if got := h.next(); !slices.Equal(got.files, []string{"web.hcl=a\nc\n"}) {
		t.Errorf("got %q", got.files)
	}
	if v := testutil.ToFloat64(h.w.metrics.success); v != 1 {
		t.Errorf("last_reload_successful = %v, want 1", v)
	}
}

func TestTruncationRefusedUntilForced(t *testing.T) {
	h := start(t, t.TempDir(), map[string]string{"web.hcl": "a\nb\nc\nd\n"}, Options[set]{Guard: halfGuard})
	write(t, filepath.Join(h.dir, "web.hcl"), "a\n")
	h.waitResult("refused", 1)
	h.noUpdate()
	if err := h.w.LastError(); err == nil || !strings.Contains(err.Error(), "would delete 3 of 4") {
		t.Errorf("LastError = %v", err)
	}
	if v := testutil.ToFloat64(h.w.metrics.success); v != 0 {
		t.Errorf("last_reload_successful = %v, want 0", v)
	}
	if got := h.w.Current(); got.lines() != 4 {
		t.Errorf("current config changed to %q", got.files)
	}
	h.w.Reload(true)
	if got := h.next(); got.lines() != 1 {
		t.Errorf("forced reload gave %q", got.files)
	}
	if h.w.LastError() != nil {
		t.Errorf("LastError after forced reload = %v", h.w.LastError())
	}
}

func TestSymlinkSwap(t *testing.T) {
	// The layout kubelet makes for a ConfigMap volume.
	dir := t.TempDir()
	mkdata := func(name, content string) {
		if err := os.Mkdir(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
		write(t, filepath.Join(dir, name, "web.hcl"), content)
	}
	mkdata("..2026_a", "a\n")
	if err := os.Symlink("..2026_a", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("..data/web.hcl", filepath.Join(dir, "web.hcl")); err != nil {
		t.Fatal(err)
	}
	h := start(t, dir, nil, Options[set]{})
	mkdata("..2026_b", "b\n")
	if err := os.Symlink("..2026_b", filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(dir, "..2026_a")); err != nil {
		t.Fatal(err)
	}
	if got := h.next(); !slices.Equal(got.files, []string{"web.hcl=b\n"}) {
		t.Errorf("got %q", got.files)
	}
}

func TestBurstIsDebounced(t *testing.T) {
	h := start(t, t.TempDir(), map[string]string{"web.hcl": "a\n"}, Options[set]{Debounce: time.Second})
	for i := range 30 {
		write(t, filepath.Join(h.dir, "web.hcl"), fmt.Sprintf("a\nb%d\n", i))
	}
	if got := h.next(); !slices.Equal(got.files, []string{"web.hcl=a\nb29\n"}) {
		t.Errorf("got %q, want the last edit", got.files)
	}
	// 30 edits within one debounce window make one load (two if the
	// machine stalled for a whole second mid-burst), not thirty.
	if n := h.count("success") - 1; n > 2 {
		t.Errorf("%v loads for one burst", n)
	}
}

func TestInvalidEditThenFix(t *testing.T) {
	h := start(t, t.TempDir(), map[string]string{"web.hcl": "a\n"}, Options[set]{})
	write(t, filepath.Join(h.dir, "web.hcl"), "a\nINVALID\n")
	h.waitResult("failure", 1)
	h.noUpdate()
	if err := h.w.LastError(); err == nil || !strings.Contains(err.Error(), "web.hcl:1:1") {
		t.Errorf("LastError = %v, want the positioned message", err)
	}
	if v := testutil.ToFloat64(h.w.metrics.success); v != 0 {
		t.Errorf("last_reload_successful = %v, want 0", v)
	}
	if got := h.w.Current(); !slices.Equal(got.files, []string{"web.hcl=a\n"}) {
		t.Errorf("current = %q, want the last good config", got.files)
	}
	write(t, filepath.Join(h.dir, "web.hcl"), "a\nfixed\n")
	if got := h.next(); !slices.Equal(got.files, []string{"web.hcl=a\nfixed\n"}) {
		t.Errorf("got %q", got.files)
	}
	if v := testutil.ToFloat64(h.w.metrics.success); v != 1 {
		t.Errorf("last_reload_successful = %v, want 1", v)
	}
}

func TestUnchangedContentIsNoop(t *testing.T) {
	h := start(t, t.TempDir(), map[string]string{"web.hcl": "a\n"}, Options[set]{})
	write(t, filepath.Join(h.dir, "web.hcl"), "a\n") // same bytes, new mtime
	h.waitResult("unchanged", 2)
	h.noUpdate()
}

func TestDirectoryDeletedAndRecreated(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "kglb")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	h := start(t, dir, map[string]string{"web.hcl": "a\n"}, Options[set]{})
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	h.waitResult("failure", 1) // a missing directory is rejected, not applied
	h.noUpdate()
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "web.hcl"), "a\nnew\n")
	if got := h.next(); !slices.Equal(got.files, []string{"web.hcl=a\nnew\n"}) {
		t.Errorf("got %q", got.files)
	}
}

func TestPollFallback(t *testing.T) {
	// A file written through another mount namespace or a network file
	// system sends no inotify event; the poll still finds it. Simulate by
	// a watcher whose poll is short.
	dir := t.TempDir()
	h := start(t, dir, nil, Options[set]{Poll: 50 * time.Millisecond, Stamp: config.DirStamp, Debounce: time.Hour})
	write(t, filepath.Join(dir, "a.hcl"), "abc\n")
	if got := h.next(); !slices.Equal(got.files, []string{"a.hcl=abc\n"}) {
		t.Errorf("got %q", got.files)
	}
}

func TestNewFailsOnBadInitialConfig(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "web.hcl"), "INVALID")
	_, err := New(Options[set]{Dir: dir, Load: loadSet, Digest: digestSet})
	if err == nil || !strings.Contains(err.Error(), "web.hcl:1:1") {
		t.Fatalf("New = %v, want the load error", err)
	}
	if _, err := New(Options[set]{Dir: dir}); err == nil {
		t.Fatal("New without Load succeeded")
	}
}

// ReloadWait reports each outcome to the caller that asked, which is what
// lets systemd's reload and `kglb reload` tell a rejected edit from success.
func TestReloadWaitReportsOutcome(t *testing.T) {
	h := start(t, t.TempDir(), map[string]string{"web.hcl": "a\nb\nc\nd\n"}, Options[set]{Guard: halfGuard, Debounce: time.Hour})
	ctx := context.Background()
	steps := []struct {
		content string
		force   bool
		want    Result
		errHas  string
	}{
		{"a\nb\nc\nd\n", false, Unchanged, ""},
		{"a\nb\nc\nd\ne\n", false, Applied, ""},
		{"INVALID\n", false, Failed, "web.hcl:1:1"},
		{"a\n", false, Refused, "would delete 4 of 5"},
		{"a\n", true, Applied, ""},
	}
	for i, s := range steps {
		write(t, filepath.Join(h.dir, "web.hcl"), s.content)
		o, err := h.w.ReloadWait(ctx, s.force)
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if o.Result != s.want {
			t.Errorf("step %d: result %q, want %q (err %v)", i, o.Result, s.want, o.Err)
		}
		if (o.Err == nil) != (s.errHas == "") || (o.Err != nil && !strings.Contains(o.Err.Error(), s.errHas)) {
			t.Errorf("step %d: err %v, want one containing %q", i, o.Err, s.errHas)
		}
	}
	// A ReloadWait on a watcher that is not running gives up with ctx.
	w, err := New(Options[set]{Dir: h.dir, Load: loadSet, Digest: digestSet})
	if err != nil {
		t.Fatal(err)
	}
	for range cap(w.trigger) {
		w.Reload(false)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := w.ReloadWait(cctx, false); err == nil {
		t.Error("ReloadWait without Run returned no error")
	}
}

// TestLoadChangedNamesTheEdits: a burst of events on the directory's
// entries reaches LoadChanged with the paths they named; an explicit
// reload is a full load, and a chmod of the directory is no load at all.
func TestLoadChangedNamesTheEdits(t *testing.T) {
	var mu sync.Mutex
	var hinted [][]string
	fulls := 0
	opts := Options[set]{LoadChanged: func(dir string, changed []string) (set, error) {
		mu.Lock()
		hinted = append(hinted, slices.Clone(changed))
		mu.Unlock()
		return loadSet(dir)
	}, Load: func(dir string) (set, error) {
		mu.Lock()
		fulls++
		mu.Unlock()
		return loadSet(dir)
	}}
	h := start(t, t.TempDir(), map[string]string{"web.hcl": "a\n", "db.hcl": "x\n"}, opts)
	web := filepath.Join(h.dir, "web.hcl")
	// until waits for the update whose web.hcl says content; a slow
	// machine may split one write's events into two loads.
	until := func(content string) {
		t.Helper()
		for !slices.Contains(h.next().files, "web.hcl="+content) {
		}
	}
	// onlyWeb checks that every LoadChanged call named web.hcl alone.
	onlyWeb := func(step string) {
		t.Helper()
		for _, names := range hinted {
			if len(names) == 0 || slices.ContainsFunc(names, func(n string) bool { return n != web }) {
				t.Errorf("%s: LoadChanged calls %q, want each to name %s alone", step, hinted, web)
				return
			}
		}
	}
	mu.Lock()
	fulls = 0 // New's load and start's reload
	mu.Unlock()

	write(t, web, "b\n")
	until("b\n")
	mu.Lock()
	if len(hinted) == 0 || fulls != 0 {
		t.Errorf("an edit of web.hcl: %d LoadChanged calls and %d full loads, want some and none", len(hinted), fulls)
	}
	onlyWeb("an edit")
	mu.Unlock()

	if _, err := h.w.ReloadWait(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if fulls != 1 {
		t.Errorf("an explicit reload: %d full loads, want 1", fulls)
	}
	mu.Unlock()

	if err := os.Chmod(h.dir, 0o700); err != nil { // an event on the directory itself
		t.Fatal(err)
	}
	write(t, web, "c\n")
	until("c\n")
	mu.Lock()
	defer mu.Unlock()
	if fulls != 1 {
		t.Errorf("after a chmod of the directory and an edit: %d full loads, want still 1", fulls)
	}
	onlyWeb("after a chmod and an edit")
}

// holdLines is the test's Hold: the lines (services) that new drops from
// running are kept, in a file of their own named "held", so the result's
// digest is its own.
func holdLines(running, new set) (set, bool) {
	have := map[string]int{}
	for _, l := range contentLines(new) {
		have[l]++
	}
	var removed []string
	for _, l := range contentLines(running) {
		if have[l] > 0 {
			have[l]--
			continue
		}
		removed = append(removed, l)
	}
	if len(removed) == 0 {
		return new, false
	}
	return set{files: append(slices.Clone(new.files), "held="+strings.Join(removed, "\n"))}, true
}

func contentLines(s set) []string {
	var out []string
	for _, f := range s.files {
		_, content, _ := strings.Cut(f, "=")
		for _, l := range strings.Split(content, "\n") {
			if strings.TrimSpace(l) != "" {
				out = append(out, l)
			}
		}
	}
	return out
}

func lastApplied(last set) func(set, error) (set, bool, error) {
	return func(set, error) (set, bool, error) { return last, true, nil }
}

// A start is a reload from what ran before: a directory that does not load
// starts the last applied config, says why, and fixing the files applies
// them.
func TestStartInvalidRunsLastApplied(t *testing.T) {
	dir := t.TempDir()
	last := set{files: []string{"web.hcl=a\nb\n"}}
	h := start(t, dir, map[string]string{"web.hcl": "INVALID"}, Options[set]{LastApplied: lastApplied(last)})
	if got := h.w.Current(); !slices.Equal(got.files, last.files) {
		t.Errorf("Current = %q, want the last applied %q", got.files, last.files)
	}
	st := h.w.Status()
	if !st.LastApplied || st.Err == nil || !strings.Contains(st.Err.Error(), "web.hcl:1:1") {
		t.Errorf("Status = %+v, want running the last applied config because of web.hcl:1:1", st)
	}
	if v := testutil.ToFloat64(h.w.metrics.lastApplied); v != 1 {
		t.Errorf("kglb_config_running_last_applied = %v, want 1", v)
	}
	write(t, filepath.Join(dir, "web.hcl"), "a\nb\nc\n")
	if got := h.next(); !slices.Equal(got.files, []string{"web.hcl=a\nb\nc\n"}) {
		t.Errorf("after the fix got %q", got.files)
	}
	if st := h.w.Status(); st.LastApplied || st.Err != nil {
		t.Errorf("Status after the fix = %+v", st)
	}
	if v := testutil.ToFloat64(h.w.metrics.lastApplied); v != 0 {
		t.Errorf("kglb_config_running_last_applied = %v, want 0", v)
	}
}

// A restart is no way around the guard: an emptied directory is refused
// against the last applied config, until forced.
func TestStartRefusedByGuardRunsLastApplied(t *testing.T) {
	dir := t.TempDir()
	last := set{files: []string{"web.hcl=a\nb\nc\nd\n"}}
	h := start(t, dir, map[string]string{"web.hcl": "a\n"}, Options[set]{Guard: halfGuard, LastApplied: lastApplied(last)})
	if got := h.w.Current(); got.lines() != 4 {
		t.Errorf("Current = %q, want the last applied", got.files)
	}
	if st := h.w.Status(); !st.LastApplied || st.Err == nil || !strings.Contains(st.Err.Error(), "would delete 3 of 4") {
		t.Errorf("Status = %+v", st)
	}
	if n := h.count("refused"); n < 1 {
		t.Errorf("reloads{result=refused} = %v, want the start counted", n)
	}
	h.w.Reload(true)
	if got := h.next(); got.lines() != 1 {
		t.Errorf("forced reload gave %q", got.files)
	}
	if st := h.w.Status(); st.LastApplied || st.Err != nil {
		t.Errorf("Status after the forced reload = %+v", st)
	}
}

// A valid directory the guard allows starts as it is, even with a last
// applied config; without one (a first install), an invalid directory stops
// the start.
func TestStartValidOrFirstInstall(t *testing.T) {
	dir := t.TempDir()
	h := start(t, dir, map[string]string{"web.hcl": "a\nb\n"}, Options[set]{Guard: halfGuard, LastApplied: lastApplied(set{files: []string{"web.hcl=a\n"}})})
	if got := h.w.Current(); !slices.Equal(got.files, []string{"web.hcl=a\nb\n"}) || h.w.Status().LastApplied {
		t.Errorf("Current = %q, Status = %+v", got.files, h.w.Status())
	}
	bad := t.TempDir()
	write(t, filepath.Join(bad, "web.hcl"), "INVALID")
	none := func(set, error) (set, bool, error) { return set{}, false, nil }
	if _, err := New(Options[set]{Dir: bad, Load: loadSet, Digest: digestSet, LastApplied: none}); err == nil || !strings.Contains(err.Error(), "web.hcl:1:1") {
		t.Errorf("New on a first install = %v, want the load error", err)
	}
}

// A writer that truncates, pauses less than the settle time, then writes
// deletes nothing: every configuration handed on keeps both services.
func TestTruncatePauseWriteDeletesNothing(t *testing.T) {
	h := start(t, t.TempDir(), map[string]string{"web.hcl": "a\nb\n"}, Options[set]{Hold: holdLines, Settle: 10 * time.Second})
	write(t, filepath.Join(h.dir, "web.hcl"), "")
	if got := h.next(); got.lines() != 2 || !h.w.Status().Settling {
		t.Errorf("after the truncation got %q (settling %v), want both lines kept", got.files, h.w.Status().Settling)
	}
	write(t, filepath.Join(h.dir, "web.hcl"), "a\nb\n")
	if got := h.next(); !slices.Equal(got.files, []string{"web.hcl=a\nb\n"}) {
		t.Errorf("after the write got %q", got.files)
	}
	if h.w.Status().Settling {
		t.Error("still settling once the files are whole again")
	}
}

// A removal that stays is applied once the directory has settled; an
// explicit reload applies it at once.
func TestRemovalAppliesOnceSettled(t *testing.T) {
	h := start(t, t.TempDir(), map[string]string{"web.hcl": "a\nb\nc\n"}, Options[set]{Hold: holdLines, Settle: 200 * time.Millisecond})
	write(t, filepath.Join(h.dir, "web.hcl"), "a\nb\n")
	if got := h.next(); got.lines() != 3 {
		t.Errorf("at the debounce got %q, want the removed line kept", got.files)
	}
	if got := h.next(); !slices.Equal(got.files, []string{"web.hcl=a\nb\n"}) {
		t.Errorf("once settled got %q", got.files)
	}
	if v := testutil.ToFloat64(h.w.metrics.settling); v != 0 {
		t.Errorf("kglb_config_deletions_settling = %v, want 0", v)
	}

	h2 := start(t, t.TempDir(), map[string]string{"web.hcl": "a\nb\n"}, Options[set]{Hold: holdLines, Settle: time.Hour})
	write(t, filepath.Join(h2.dir, "web.hcl"), "a\n")
	if got := h2.next(); got.lines() != 2 {
		t.Errorf("at the debounce got %q", got.files)
	}
	o, err := h2.w.ReloadWait(context.Background(), false)
	if err != nil || o.Result != Applied {
		t.Fatalf("ReloadWait = %+v, %v", o, err)
	}
	if got := h2.next(); !slices.Equal(got.files, []string{"web.hcl=a\n"}) {
		t.Errorf("after an explicit reload got %q", got.files)
	}
}

// listErr is an error that is a slice, as config.Diagnostics is: hclog
// prints such a value element by element unless given its text.
type listErr []string

func (l listErr) Error() string { return strings.Join(l, "\n") }

// The journal gets rejected configs as "file:line:col: message" lines, not
// as Go values.
func TestRejectionLoggedAsText(t *testing.T) {
	var out strings.Builder
	var mu sync.Mutex
	log := hclog.New(&hclog.LoggerOptions{Output: writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return out.Write(p)
	})})
	load := func(dir string) (set, error) {
		s, err := loadSet(dir)
		if err != nil {
			return s, listErr{"/etc/kglb/web.hcl:8:17: unterminated string literal"}
		}
		return s, nil
	}
	h := start(t, t.TempDir(), map[string]string{"web.hcl": "a\n"}, Options[set]{Load: load, Logger: log})
	write(t, filepath.Join(h.dir, "web.hcl"), "INVALID")
	h.waitResult("failure", 1)
	mu.Lock()
	got := out.String()
	mu.Unlock()
	if !strings.Contains(got, "err=\"/etc/kglb/web.hcl:8:17: unterminated string literal\"") && !strings.Contains(got, "err=/etc/kglb/web.hcl:8:17:") {
		t.Errorf("log = %q, want the positioned message as text", got)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// Making a file readable again is a fix like any other: a mode change of
// an entry loads.
func TestChmodOfAnEntryLoads(t *testing.T) {
	// Judge readability by the mode bits, as the daemon (without
	// CAP_DAC_OVERRIDE) must, even when the test runs as root.
	load := func(dir string) (set, error) {
		fi, err := os.Stat(filepath.Join(dir, "web.hcl"))
		if err == nil && fi.Mode().Perm()&0o444 == 0 {
			return set{}, fmt.Errorf("web.hcl: permission denied")
		}
		return loadSet(dir)
	}
	h := start(t, t.TempDir(), map[string]string{"web.hcl": "a\n"}, Options[set]{Load: load})
	web := filepath.Join(h.dir, "web.hcl")
	if err := os.Chmod(web, 0); err != nil {
		t.Fatal(err)
	}
	h.waitResult("failure", 1)
	if err := os.Chmod(web, 0o644); err != nil {
		t.Fatal(err)
	}
	h.waitResult("unchanged", 2)
}

// Files fixed back to exactly the last applied config end the fallback,
// and say so with an update (nothing to apply, but STATUS must change).
func TestFixBackToTheLastAppliedEndsTheFallback(t *testing.T) {
	dir := t.TempDir()
	last := set{files: []string{"web.hcl=a\n"}}
	h := start(t, dir, map[string]string{"web.hcl": "INVALID"}, Options[set]{LastApplied: lastApplied(last)})
	write(t, filepath.Join(dir, "web.hcl"), "a\n")
	if got := h.next(); !slices.Equal(got.files, last.files) {
		t.Errorf("got %q", got.files)
	}
	if st := h.w.Status(); st.LastApplied || st.Err != nil {
		t.Errorf("Status = %+v, want the fallback ended", st)
	}
	if n := h.count("unchanged"); n < 1 {
		t.Errorf("reloads{result=unchanged} = %v", n)
	}
}

// A settle time shorter than the debounce (daemon.settle = "100ms" is a
// valid config) still applies the removal: the settle timer that fires
// while the debounce is pending must not be lost.
func TestSettleShorterThanDebounceStillApplies(t *testing.T) {
	h := start(t, t.TempDir(), map[string]string{"web.hcl": "a\nb\nc\n"}, Options[set]{Hold: holdLines, Settle: 20 * time.Millisecond, Debounce: 200 * time.Millisecond})
	write(t, filepath.Join(h.dir, "web.hcl"), "a\nb\n")
	if got := h.next(); got.lines() != 3 {
		t.Errorf("at the debounce got %q, want the removed line kept", got.files)
	}
	select {
	case got := <-h.w.Updates():
		if !slices.Equal(got.files, []string{"web.hcl=a\nb\n"}) {
			t.Errorf("once settled got %q", got.files)
		}
	case <-time.After(3 * time.Second):
		t.Fatalf("the removal was never applied; settling = %v", h.w.Status().Settling)
	}
}

// A watch that cannot be set up (inotify_init1 fails with EMFILE when the
// process is at its file limit, or the user at fs.inotify.max_user_instances)
// must not take the explicit reloads with it: SIGHUP, `kglb reload` and
// systemd's reload still need their answer, and the poll still loads.
func TestReloadsWithoutAWatch(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "web.hcl"), "a\n")
	w, err := New(Options[set]{Dir: dir, Load: loadSet, Digest: digestSet, Poll: -1})
	if err != nil {
		t.Fatal(err)
	}
	// No file can be opened while Run sets up its watch: the limit is
	// the lowest free descriptor, which the kernel would hand out next.
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	next := f.Fd()
	f.Close()
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	low := old
	low.Cur = uint64(next)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &low); err != nil {
		t.Fatalf("lower RLIMIT_NOFILE to %d: %v", low.Cur, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	time.Sleep(200 * time.Millisecond)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cancel()
		<-done
	}()
	write(t, filepath.Join(dir, "web.hcl"), "a\nb\n")
	rctx, rcancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer rcancel()
	o, err := w.ReloadWait(rctx, false)
	if err != nil || o.Result != Applied {
		select {
		case rerr := <-done:
			done <- rerr
			t.Fatalf("ReloadWait = %+v, %v: Run had returned %v", o, err, rerr)
		default:
		}
		t.Fatalf("ReloadWait = %+v, %v", o, err)
	}
}

// An edit between New's load and Run's watch (a daemon's start sets up
// IPVS, addresses and BGP in between) has no event; it must still be
// loaded, not hidden behind a poll stamp taken after it.
func TestEditBeforeRunIsLoaded(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "web.hcl"), "a\n")
	w, err := New(Options[set]{Dir: dir, Load: loadSet, Digest: digestSet, Debounce: 20 * time.Millisecond,
		Poll: 50 * time.Millisecond, Stamp: config.DirStamp})
	if err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "web.hcl"), "a\nb\n")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	select {
	case got := <-w.Updates():
		if !slices.Equal(got.files, []string{"web.hcl=a\nb\n"}) {
			t.Errorf("got %q", got.files)
		}
	case <-time.After(2 * time.Second):
		t.Fatalf("the edit made before Run was never loaded; running %q", w.Current().files)
	}
}

// An edit made while a load reads the files, on a file system that sends no
// events (the poll is all there is), is loaded at the next poll: the stamp
// a load leaves is the one from before it read.
func TestEditDuringLoadIsPolled(t *testing.T) {
	dir := t.TempDir()
	var mu sync.Mutex
	during := ""
	load := func(d string) (set, error) {
		s, err := loadSet(d)
		mu.Lock()
		defer mu.Unlock()
		if during != "" {
			write(t, filepath.Join(dir, "web.hcl"), during)
			during = ""
		}
		return s, err
	}
	h := start(t, dir, map[string]string{"web.hcl": "a\n"}, Options[set]{Load: load, Debounce: time.Hour,
		Poll: 50 * time.Millisecond, Stamp: config.DirStamp})
	mu.Lock()
	during = "a\nb\n"
	mu.Unlock()
	if o, err := h.w.ReloadWait(context.Background(), false); err != nil || o.Result != Unchanged {
		t.Fatalf("ReloadWait = %+v, %v", o, err)
	}
	select {
	case got := <-h.w.Updates():
		if !slices.Equal(got.files, []string{"web.hcl=a\nb\n"}) {
			t.Errorf("the poll got %q", got.files)
		}
	case <-time.After(2 * time.Second):
		t.Fatalf("the edit made during the load was never loaded; running %q", h.w.Current().files)
	}
}

// TestForceGivenUpForcesNothingElse: a forced ReloadWait that gives up
// before its request is queued (the loop busy, the queue full) must not
// leave the force behind for a later, unforced reload (a SIGHUP, a plain
// `kglb reload`), which would then go past the Guard.
func TestForceGivenUpForcesNothingElse(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "web.hcl"), "a\nb\nc\nd\n")
	w, err := New(Options[set]{Dir: dir, Load: loadSet, Digest: digestSet, Guard: halfGuard, Poll: -1, Debounce: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for range cap(w.trigger) { // the loop is not running yet: the queue fills
		w.Reload(false)
	}
	cctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := w.ReloadWait(cctx, true); err == nil {
		t.Fatal("a forced ReloadWait on a full queue did not give up")
	}
	write(t, filepath.Join(dir, "web.hcl"), "a\n") // what the Guard refuses
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() { stop(); <-done }()
	o, err := w.ReloadWait(ctx, false) // after every queued request
	if err != nil {
		t.Fatal(err)
	}
	if got := w.Current().lines(); got != 4 || o.Result != Refused {
		t.Errorf("after a forced request that gave up, unforced reloads: %d lines run, last %q; want 4 and refused", got, o.Result)
	}
}

// TestRejectedEditIsSignalled: an edit the watch picks up that is rejected
// (or refused) changes nothing on Updates, so Rejected tells whoever shows
// the state (systemd's STATUS) to read it again; a good edit does not.
func TestRejectedEditIsSignalled(t *testing.T) {
	h := start(t, t.TempDir(), map[string]string{"web.hcl": "a\n"}, Options[set]{})
	select {
	case <-h.w.Rejected():
		t.Fatal("Rejected signalled before any rejected load")
	default:
	}
	write(t, filepath.Join(h.dir, "web.hcl"), "a\nINVALID\n")
	select {
	case <-h.w.Rejected():
	case <-time.After(5 * time.Second):
		t.Fatalf("a rejected edit was not signalled; last error %v", h.w.LastError())
	}
	write(t, filepath.Join(h.dir, "web.hcl"), "a\nfixed\n")
	h.next()
	select {
	case <-h.w.Rejected():
		t.Error("Rejected signalled for a good edit")
	default:
	}
}
