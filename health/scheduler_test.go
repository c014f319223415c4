package health

import (
	"context"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/kglb/kglb/internal/promtext"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// harness runs a Scheduler on a fake clock with a fake checker and collects changes.
type harness struct {
	t        *testing.T
	s        *Scheduler
	clk      *fakeClock
	f        *fakeChecker
	reg      *prometheus.Registry
	mu       sync.Mutex
	got      []Change
	stop     context.CancelFunc
	done     chan struct{}
	probe    int
	received int
}

func newHarness(t *testing.T, concurrency int) *harness {
	return newHarnessWith(t, Options{Concurrency: concurrency})
}

// newHarnessWith is newHarness with more options: the harness sets the clock,
// the checker, the registry and MinRecheck.
func newHarnessWith(t *testing.T, opts Options) *harness {
	h := &harness{t: t, clk: newFakeClock(), f: newFakeChecker(), reg: prometheus.NewRegistry(), done: make(chan struct{})}
	opts.Clock, opts.NewChecker, opts.MinRecheck, opts.Registerer = h.clk, h.f.factory, time.Millisecond, h.reg
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	s.opts.afterComplete = func(*entry, Result) { h.probe++ }
	h.s = s
	ctx, cancel := context.WithCancel(context.Background())
	h.stop = cancel
	go func() { s.Run(ctx); close(h.done) }()
	go func() {
		for cs := range s.Changes() {
			h.mu.Lock()
			h.got = append(h.got, cs...)
			h.received += len(cs)
			h.mu.Unlock()
		}
	}()
	t.Cleanup(func() { cancel(); <-h.done })
	return h
}

// settle waits until every probe due by the fake now has run and every emitted
// change has been received. A loop on state, not on time.
func (h *harness) settle() {
	spins := 0
	for {
		h.s.mu.Lock()
		due, ok := h.s.tab.nextDue()
		busy := ok && !due.After(h.clk.Now())
		for _, e := range h.s.tab.entries {
			busy = busy || e.running
		}
		emitted := h.s.emitted
		h.s.mu.Unlock()
		h.mu.Lock()
		received := h.received
		h.mu.Unlock()
		if !busy && received == emitted {
			return
		}
		spins++
		if spins%2000 == 0 {
			h.t.Logf("settle: due %v ok %v now %v busy %v emitted %d received %d", due.Sub(t0), ok, h.clk.Now().Sub(t0), busy, emitted, received)
		}
		runtime.Gosched()
		time.Sleep(100 * time.Microsecond)
	}
}

// advance moves the fake clock in steps, settling after each.
func (h *harness) advance(d, step time.Duration) {
	for end := h.clk.Now().Add(d); h.clk.Now().Before(end); {
		h.clk.Advance(step)
		h.settle()
	}
}

func (h *harness) changes() []Change {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := h.got
	h.got = nil
	return out
}

func TestSchedulerEmitsOnlyChanges(t *testing.T) {
	h := newHarness(t, 4)
	a := tcpTarget("127.0.0.1:80", time.Second, 2, 2)
	b := tcpTarget("127.0.0.2:80", time.Second, 2, 2)
	if err := h.s.Update([]Target{a, b}); err != nil {
		t.Fatal(err)
	}
	h.settle()
	h.advance(5*time.Second, 50*time.Millisecond)
	got := h.changes()
	if len(got) != 2 || got[0].State != Up || got[1].State != Up {
		t.Fatalf("changes %+v, want a and b up once each", got)
	}
	h.f.set(b.Real, Fail)
	h.advance(5*time.Second, 50*time.Millisecond)
	got = h.changes()
	if len(got) != 1 || got[0].Key != b || got[0].State != Down || got[0].Reason != "fake fail" {
		t.Fatalf("changes %+v, want only b down", got)
	}
	if st, _ := h.s.Lookup(a); st.State != Up || st.FailRun != 0 || st.Last.Outcome != OK {
		t.Errorf("a: %+v", st)
	}
	// 10s at 1s, phase 0, plus one fast recheck at 0.5s while rising: 11 probes.
	if n := h.f.callsOf(a.Real); n != 11 {
		t.Errorf("a probed %d times in 10s at 1s interval", n)
	}
}

func TestSchedulerDedupeAcrossServices(t *testing.T) {
	h := newHarness(t, 4)
	shared := tcpTarget("127.0.0.1:80", time.Second, 1, 1)
	alone := tcpTarget("127.0.0.2:80", time.Second, 1, 1)
	// Services web, api and admin use the same real and check; one more is alone.
	h.s.Update([]Target{shared, alone, shared, shared})
	h.settle()
	h.advance(10*time.Second, 100*time.Millisecond)
	// Phases 0 and 0.5s: over 10s, 11 and 10 probes; the shared one is not probed
	// three times as often.
	if s, a := h.f.callsOf(shared.Real), h.f.callsOf(alone.Real); s != 11 || a != 10 {
		t.Errorf("shared probed %d times, alone %d: want 11 and 10", s, a)
	}
	snap := h.s.Snapshot()
	if len(snap) != 2 || snap[0].Refs != 3 || snap[1].Refs != 1 {
		t.Errorf("snapshot %+v", snap)
	}
}

func TestSchedulerReloadKeepsVerdict(t *testing.T) {
	h := newHarness(t, 4)
	a := tcpTarget("127.0.0.1:80", time.Second, 2, 2)
	h.s.Update([]Target{a})
	h.settle()
	h.advance(3*time.Second, 100*time.Millisecond)
	before, _ := h.s.Lookup(a)
	if before.State != Up {
		t.Fatalf("not up: %+v", before)
	}
	h.changes()
	b := tcpTarget("127.0.0.2:80", time.Second, 2, 2)
	h.s.Update([]Target{b, a})
	h.settle()
	after, _ := h.s.Lookup(a)
	if after.State != Up || after.Since != before.Since {
		t.Errorf("reload changed a: %+v -> %+v", before, after)
	}
	h.advance(3*time.Second, 100*time.Millisecond)
	if got := h.changes(); len(got) != 1 || got[0].Key != b {
		t.Errorf("changes after reload %+v, want only b up", got)
	}
}

func TestSchedulerConcurrencyBound(t *testing.T) {
	h := newHarness(t, 3)
	h.f.block = make(chan struct{})
	ts := realTargets(10, 1, 1)
	h.s.Update(ts)
	h.clk.Advance(2 * time.Second) // all ten are due
	for {
		h.f.mu.Lock()
		in := h.f.inFlight
		h.f.mu.Unlock()
		if in == 3 {
			break
		}
		time.Sleep(100 * time.Microsecond)
	}
	// Give the dispatcher every chance to exceed the bound before releasing.
	for range 100 {
		runtime.Gosched()
	}
	close(h.f.block)
	h.settle()
	h.f.mu.Lock()
	maxIn, calls := h.f.maxIn, 0
	for _, n := range h.f.calls {
		calls += n
	}
	h.f.mu.Unlock()
	if maxIn != 3 {
		t.Errorf("%d probes in flight at most, want 3", maxIn)
	}
	if calls < 10 {
		t.Errorf("%d probes ran, want all 10", calls)
	}
}

// Probes that never wait on the network need no more workers than CPU slots
// (plus the one a hand-off may race with a worker on its way back): a probe
// waiting for the CPU waits in the heap, not on a worker's stack.
func TestSchedulerWorkersFollowCPUSlots(t *testing.T) {
	h := newHarness(t, 256)
	ts := realTargets(200, 1, 1)
	h.s.Update(ts)
	h.advance(5*time.Second, time.Second) // every target due at once, five times
	h.stop()
	<-h.done // Run has returned: its workers count is ours to read
	if n, slots := h.s.workers, h.s.opts.CPUSlots; n > 2*slots+1 {
		t.Errorf("%d workers started for %d CPU slots and probes that never wait on the network, want at most %d", n, slots, 2*slots+1)
	}
	if calls := h.f.callsOf(netip.MustParseAddrPort(realN(199))); calls < 5 {
		t.Errorf("last target probed %d times in 5 intervals, want 5", calls)
	}
}

// A worker that finishes a probe keeps its CPU slot for the next due one, but
// not while a probe back from the network waits for a slot: that one goes
// next, not after every due probe.
func TestSchedulerSlotGoesToProbeBackFromNetwork(t *testing.T) {
	// Early: none, so that a round is exactly the 201 probes the clock makes due.
	h := newHarnessWith(t, Options{Concurrency: 256, CPUSlots: 1, Early: -1})
	slow := netip.MustParseAddrPort(realN(0))
	held := make(chan struct{})
	h.f.mu.Lock()
	h.f.hold = map[netip.AddrPort]chan struct{}{slow: held}
	h.f.mu.Unlock()
	ts := []Target{tcpTarget(slow.String(), time.Second, 1, 1)}
	for i := 1; i <= 200; i++ {
		ts = append(ts, tcpTarget(realN(i), time.Second, 1, 1))
	}
	h.s.Update(ts)
	h.clk.Advance(time.Second) // everything due; the slow one stays on the network
	for {
		h.s.mu.Lock()
		n := h.probe
		h.s.mu.Unlock()
		if n == 200 {
			break
		}
		time.Sleep(100 * time.Microsecond)
	}
	// The next round: the first fast probe lets the slow one back from the
	// network and waits until it asks for a slot.
	var once sync.Once
	h.f.mu.Lock()
	h.f.onCheck = func(tg Target) {
		if tg.Real == slow {
			return
		}
		once.Do(func() {
			close(held)
			for h.s.slots.resuming.Load() == 0 {
				runtime.Gosched()
			}
		})
	}
	h.f.mu.Unlock()
	fastBefore := -1
	h.s.mu.Lock()
	h.s.opts.afterComplete = func(e *entry, _ Result) {
		h.probe++
		if e.real == slow {
			fastBefore = h.probe - 1 - 200
		}
	}
	h.s.mu.Unlock()
	h.clk.Advance(time.Second)
	h.settle()
	h.s.mu.Lock()
	defer h.s.mu.Unlock()
	if fastBefore < 0 || fastBefore > 3 {
		t.Errorf("the probe back from the network finished after %d probes of the next round, want at most 3 (-1: never)", fastBefore)
	}
}

// lockedBuffer is a log sink the scheduler's goroutines write to while the test reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// When the probes cannot run at the configured rate, the scheduler says so
// every rateReport: a warning naming the configured and the managed rate, and
// kglb_health_probes_per_second; while they keep up it says nothing.
func TestSchedulerWarnsWhenProbesCannotKeepUp(t *testing.T) {
	var logs lockedBuffer
	h := newHarnessWith(t, Options{Concurrency: 1, CPUSlots: 1,
		Logger: hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Warn})})
	ts := realTargets(10, 1, 1)
	h.s.Update(ts)
	rate := func(kind string) float64 {
		return testutil.ToFloat64(h.s.met.rate.WithLabelValues(kind))
	}
	// Keeping up: 10 probes/s configured, 10 run.
	// (The report's timer starts with Run's goroutines: step until it fired.)
	for rate("configured") == 0 {
		h.advance(time.Second, time.Second)
		time.Sleep(time.Millisecond)
	}
	if got := rate("managed"); got < 9 {
		t.Errorf("managed %.1f probes/s while every probe ran, want 10", got)
	}
	// Stuck: the one worker's probe never ends.
	h.f.mu.Lock()
	h.f.block = make(chan struct{})
	h.f.mu.Unlock()
	const warn = "health probes cannot keep up"
	for !strings.Contains(logs.String(), warn) {
		h.clk.Advance(time.Second)
		time.Sleep(time.Millisecond)
	}
	out := logs.String()
	if got := rate("managed"); got >= 1 {
		t.Errorf("managed %.1f probes/s while the only worker was stuck, want about 0", got)
	}
	if !strings.Contains(out, "configured_per_s=10") || !strings.Contains(out, "managed_per_s=0") {
		t.Errorf("the warning does not name the configured (10/s) and managed (0/s) rates:\n%s", out)
	}
}

func TestSchedulerFirstRoundSpread(t *testing.T) {
	h := newHarness(t, 4)
	ts := realTargets(10, 1, 1)
	h.s.Update(ts)
	h.settle()
	// Every 100ms of the first interval exactly one more target has been probed.
	for step := 1; step <= 10; step++ {
		if n := len(h.f.calls); n != step {
			t.Fatalf("after %d00ms: %d targets probed, want %d", step-1, n, step)
		}
		h.clk.Advance(100 * time.Millisecond)
		h.settle()
	}
}

func TestSchedulerMetrics(t *testing.T) {
	h := newHarness(t, 2)
	a := tcpTarget("127.0.0.1:80", time.Second, 1, 1)
	h.f.set(a.Real, Timeout)
	h.s.Update([]Target{a})
	h.settle()
	h.advance(2*time.Second, time.Second)
	id := a.Spec.ID()
	page := promtext.Gatherer(h.reg, h.s) // the registry's families, then each real's
	if n, err := testutil.GatherAndCount(page, "kglb_health_state", "kglb_health_results_total", "kglb_health_probe_duration_seconds"); err != nil || n != 3 {
		t.Errorf("%d series (%v), want 3", n, err)
	}
	want := `# HELP kglb_health_state Verdict of a real for one check: 1 up, 0 down, -1 unknown (not yet decided).
# TYPE kglb_health_state gauge
kglb_health_state{check="tcp",id="` + id + `",real="127.0.0.1:80"} 0
`
	if err := testutil.GatherAndCompare(page, stringsReader(want), "kglb_health_state"); err != nil {
		t.Error(err)
	}
	// A removed target's series go with it.
	h.s.Update(nil)
	if n, _ := testutil.GatherAndCount(page, "kglb_health_state"); n != 0 {
		t.Errorf("%d state series after removing every target", n)
	}
}

func TestUpdateRejectsTunnelWithoutSource(t *testing.T) {
	s, _ := New(Options{})
	tg := Target{Real: netip.MustParseAddrPort("10.0.0.1:80"), Spec: Spec{Type: TCP, Interval: time.Second,
		Timeout: 500 * time.Millisecond, Rise: 1, Fall: 1, Tunnel: true, VIP: netip.MustParseAddr("192.0.2.1"), Mark: 1001}}
	if err := s.Update([]Target{tg}); err == nil {
		t.Error("tunnel target without a source address accepted")
	}
	s, _ = New(Options{Dialer: Dialer{Source4: netip.MustParseAddr("127.0.0.1")}})
	if err := s.Update([]Target{tg}); err != nil {
		t.Error(err)
	}
}

// TestSchedulerLogsFirstRoundOver: first verdicts are Debug, and one Info line
// says when every Target has one, at a start and again when a reload adds
// Targets; a change of a known verdict is Info on its own.
func TestSchedulerLogsFirstRoundOver(t *testing.T) {
	var logs lockedBuffer
	h := newHarnessWith(t, Options{Concurrency: 4,
		Logger: hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Info})})
	const over = "every check has a verdict"
	a := tcpTarget("127.0.0.1:80", time.Second, 2, 2)
	b := tcpTarget("127.0.0.2:80", time.Second, 2, 2)
	h.f.set(b.Real, Fail)
	if err := h.s.Update([]Target{a, b}); err != nil {
		t.Fatal(err)
	}
	h.advance(500*time.Millisecond, 50*time.Millisecond)
	if strings.Contains(logs.String(), over) {
		t.Fatalf("round over before any verdict:\n%s", logs.String())
	}
	h.advance(3*time.Second, 50*time.Millisecond)
	out := logs.String()
	if strings.Count(out, over) != 1 || !strings.Contains(out, "up=1 down=1") {
		t.Fatalf("want one %q line with up=1 down=1:\n%s", over, out)
	}
	if strings.Contains(out, "real up") || strings.Contains(out, "real down") {
		t.Errorf("a first verdict logged at Info:\n%s", out)
	}
	// A reload that adds a Target: a new round, a second line.
	c := tcpTarget("127.0.0.3:80", time.Second, 2, 2)
	if err := h.s.Update([]Target{a, b, c}); err != nil {
		t.Fatal(err)
	}
	h.advance(4*time.Second, 50*time.Millisecond)
	if out = logs.String(); strings.Count(out, over) != 2 || !strings.Contains(out, "up=2 down=1") {
		t.Fatalf("want a second %q line with up=2 down=1:\n%s", over, out)
	}
	// A known verdict that changes: its own line, no round.
	h.f.set(a.Real, Fail)
	h.advance(4*time.Second, 50*time.Millisecond)
	if out = logs.String(); strings.Count(out, over) != 2 || !strings.Contains(out, "real down") {
		t.Fatalf("want a %q line and no third round line:\n%s", "real down", out)
	}
}

// TestSchedulerStartsProbesEarlyWithinEarly: a probe due within Options.Early
// of now starts now, with the one that is due; none starts earlier than that,
// and none early at all with Early negative.
func TestSchedulerStartsProbesEarlyWithinEarly(t *testing.T) {
	for _, tc := range []struct {
		early, want time.Duration // want: the most a probe may start before its due time
	}{
		{25 * time.Millisecond, 25 * time.Millisecond},
		{-1, 0},
	} {
		var mu sync.Mutex
		var most time.Duration
		var h *harness
		opts := Options{Concurrency: 4, Early: tc.early}
		opts.beforeProbe = func(due time.Time) {
			mu.Lock()
			most = max(most, due.Sub(h.clk.Now()))
			mu.Unlock()
		}
		h = newHarnessWith(t, opts)
		// 100 reals every second: spread 10 ms apart.
		if err := h.s.Update(realTargets(100, 1, 1)); err != nil {
			t.Fatal(err)
		}
		h.settle()
		h.advance(2*time.Second, 5*time.Millisecond)
		mu.Lock()
		got := most
		mu.Unlock()
		if got > tc.want || (tc.want > 0 && got <= 0) {
			t.Errorf("Early %v: a probe started %v before its due time, want up to %v and, with Early, some", tc.early, got, tc.want)
		}
		if h.probe < 200 {
			t.Errorf("Early %v: %d probes in 2s of 100 reals every second, want at least 200", tc.early, h.probe)
		}
	}
}

// networkChecker is a checker whose every probe waits on the network (its CPU
// slot handed back) while the fake clock moves on by took: a probe of a slow
// real, as far as the scheduler can tell.
type networkChecker struct {
	clk   *fakeClock
	took  time.Duration
	mu    sync.Mutex
	calls map[netip.AddrPort]int
	total int
}

func (c *networkChecker) Check(ctx context.Context, t Target) Result {
	c.mu.Lock()
	c.calls[t.Real]++
	c.total++
	c.mu.Unlock()
	resume := idle(ctx)
	// Time for the dispatcher to see the slot free and the clock move.
	time.Sleep(2 * time.Millisecond)
	c.clk.Advance(c.took)
	time.Sleep(2 * time.Millisecond)
	resume()
	return Result{Outcome: Fail, Reason: "slow"}
}

// TestSchedulerFullPoolStarvesNoProbe: with every worker busy (Concurrency
// probes waiting on the network) and more probes due than the workers run,
// the probe the dispatcher popped and waits to hand off must still run. The
// workers take the next due probe from the heap themselves while they can,
// so a probe held by the dispatcher waited as long as anything else was due:
// under a standing overload, forever, and its real's verdict froze.
func TestSchedulerFullPoolStarvesNoProbe(t *testing.T) {
	h := newHarnessWith(t, Options{Concurrency: 1, CPUSlots: 2, Early: -1})
	nc := &networkChecker{clk: h.clk, took: 400 * time.Millisecond, calls: map[netip.AddrPort]int{}}
	h.s.mu.Lock()
	h.s.tab.newChecker = func(Spec) (Checker, error) { return nc, nil }
	h.s.mu.Unlock()
	ts := realTargets(6, 1, 1) // 6 probes a second asked, 2.5 run
	if err := h.s.Update(ts); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		nc.mu.Lock()
		total := nc.total
		nc.mu.Unlock()
		if total >= 60 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	t.Logf("calls %v total %d", nc.calls, nc.total)
	h.stop()
	<-h.done
	nc.mu.Lock()
	defer nc.mu.Unlock()
	for _, tg := range ts {
		if n := nc.calls[tg.Real]; n < 3 {
			t.Errorf("%s probed %d times of %d probes run over 6 reals (calls %v): starved", tg.Real, n, nc.total, nc.calls)
		}
	}
}

// lockedChecker probes a with the scheduler's lock taken by someone else as
// it ends (an Update of a large config, a scrape), and b as a real 20 ms away
// that answers, within the probe's timeout.
type lockedChecker struct {
	s    *Scheduler
	clk  *fakeClock
	a    netip.AddrPort
	hold time.Duration
	mu   sync.Mutex
	got  []Result
}

func (c *lockedChecker) Check(ctx context.Context, t Target) Result {
	start := probeStart(ctx)
	if t.Real == c.a {
		c.clk.Advance(500 * time.Millisecond) // b is due as a ends
		r := classify(ctx, start, nil)
		locked := make(chan struct{})
		go func() {
			c.s.mu.Lock()
			close(locked)
			time.Sleep(c.hold)
			c.s.mu.Unlock()
		}()
		<-locked
		return r
	}
	var err error
	select {
	case <-time.After(20 * time.Millisecond):
	case <-ctx.Done():
		err = ctx.Err()
	}
	r := classify(ctx, start, err)
	c.mu.Lock()
	c.got = append(c.got, r)
	c.mu.Unlock()
	return r
}

// TestBackToBackProbeGetsItsTimeout: a probe a worker takes right after
// another starts its clock at that one's end, a read of the clock shared to
// save one. What happens between the two (the scheduler's lock, held by an
// Update or a scrape; a log line; a yield to the engine) must not come out of
// the next probe's timeout: a real that answers within it is up.
func TestBackToBackProbeGetsItsTimeout(t *testing.T) {
	h := newHarnessWith(t, Options{Concurrency: 4, CPUSlots: 1, Early: -1})
	a := tcpTarget("127.0.0.1:80", time.Second, 1, 1) // timeout 500ms
	b := tcpTarget("127.0.0.2:80", time.Second, 1, 1)
	lc := &lockedChecker{s: h.s, clk: h.clk, a: a.Real, hold: 600 * time.Millisecond}
	h.s.mu.Lock()
	h.s.tab.newChecker = func(Spec) (Checker, error) { return lc, nil }
	h.s.mu.Unlock()
	if err := h.s.Update([]Target{a, b}); err != nil {
		t.Fatal(err)
	}
	for {
		lc.mu.Lock()
		n := len(lc.got)
		lc.mu.Unlock()
		if n > 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	lc.mu.Lock()
	defer lc.mu.Unlock()
	if r := lc.got[0]; r.Outcome != OK {
		t.Errorf("a real that answers in 20 ms, probed with a 500 ms timeout after the scheduler's lock was held 600 ms: %s (%q) after %v", r.Outcome, r.Reason, r.Duration)
	}
}
