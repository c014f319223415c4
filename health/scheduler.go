package health

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
)

// Options configure a Scheduler. The zero value of each field has a working default.
type Options struct {
	Logger     hclog.Logger          // named logger; default discards
	Registerer prometheus.Registerer // metrics are registered here; nil: no metrics
	Dialer     Dialer                // source addresses of every probe
	// Concurrency bounds the probes in flight (default 256): the workers, started
	// as probes need them. Probes beyond it wait for a free worker; their
	// lateness shows in kglb_health_probe_lag_seconds.
	Concurrency int
	// CPUSlots bounds the probes that run on the CPU at once (default
	// GOMAXPROCS-1, at least 1: every CPU under the daemon's EngineProcs);
	// see cpuSlots.
	CPUSlots int
	// MinRecheck bounds from below the faster re-check interval used while a verdict
	// is pending (default 100ms).
	MinRecheck time.Duration
	// Early is how long before its due time a probe may start (default 10ms;
	// negative: none). The probes due within it are taken together, one after
	// the other by the worker that took the first, so that probes the machine
	// has time for run in batches, on one wakeup of the daemon and of the
	// reals' servers, instead of one wakeup each. In make e2ebench at N=100
	// (1,000 reals every second, spread evenly) a probe cost kglb 632 to 680
	// us of CPU with a wakeup each, 505 and 555 us with Early (420 to 437 us
	// back to back at N=1000); BenchmarkTCPChecksPartialLoad is the row.
	Early time.Duration
	// NewChecker builds a checker per distinct probe kind; default NewChecker.
	// Tests of other packages may plug in fakes here.
	NewChecker func(Spec, Dialer) (Checker, error)
	Clock      Clock // default the real clock

	afterComplete func(*entry, Result) // test hook, called under the lock
	beforeProbe   func(due time.Time)  // test hook, called as a probe starts
}

// Status is the whole state of one Target, for /status and for the engine.
type Status struct {
	Target  Target
	ID      string // Spec.ID()
	Refs    int    // how many times the last Update listed this Target
	State   State
	Reason  string    // reason of the last change
	Since   time.Time // time of the last change (zero while Unknown and never changed)
	Last    Result    // last probe result
	LastAt  time.Time
	OKRun   int // consecutive successes
	FailRun int // consecutive failures
}

// Scheduler runs the probes of a set of Targets and turns their results into verdicts.
//
// The engine calls Update with the full set of Targets on every config change, reads
// verdict changes from Changes, and Lookup or Snapshot for the current picture. Probes
// are kept in min-heaps of due times (those of reals whose verdict is pending first:
// see table.queue); a dispatcher takes a CPU slot for the probe at the head, then
// hands it to an idle worker, starting one while fewer than Concurrency run, and a
// worker that finishes a probe takes the next due one itself, so the cost per probe
// is a heap operation (and, on an idle machine, a channel hand-off), not a goroutine
// and a timer per Target. The workers are the probes on the CPU plus those waiting
// on the network: a probe that waits for the CPU waits in a heap, not on a
// goroutine's stack (at 2,000 probes/s on a saturated VM, 966 of
// 1,024 workers were parked on the CPU slots, 7.5 MB of stacks).
type Scheduler struct {
	log   hclog.Logger
	clock Clock
	opts  Options
	met   *metrics

	mu  sync.Mutex
	tab *table
	// sleeping: the dispatcher waits for its timer, until wakeAt (zero:
	// unbounded), or a kick.
	sleeping bool
	wakeAt   time.Time
	pending  []Change
	emitted  int // changes emitted so far
	// undecided: when the table last went from every Target decided to some
	// Unknown, for the "every check has a verdict" line (see probe).
	undecided time.Time
	// Probes started since the last rate report, and their summed lateness.
	started int
	lagSum  time.Duration

	slots *cpuSlots

	wake    chan struct{} // the heap's head moved earlier
	changed chan struct{} // pending has changes
	jobs    chan job
	out     chan []Change
	workers int // started; only the dispatcher reads or writes it
	// handing: the dispatcher holds a popped probe and waits for a worker
	// (handOff with every worker busy). A worker that finishes a probe then
	// takes that one instead of the next due from the heap: while probes are
	// due without end (over capacity), workers that kept taking them from the
	// heap never came back for it, and its real was never probed again.
	handing atomic.Bool
}

// job is a probe handed to a worker; slot says the dispatcher took its CPU
// slot.
type job struct {
	e    *entry
	slot bool
}

// New returns a Scheduler; Run starts it.
func New(opts Options) (*Scheduler, error) {
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = 256
	}
	if opts.CPUSlots <= 0 {
		opts.CPUSlots = defaultCPUSlots()
	}
	if opts.MinRecheck <= 0 {
		opts.MinRecheck = 100 * time.Millisecond
	}
	if opts.Early == 0 {
		opts.Early = 10 * time.Millisecond
	}
	opts.Early = max(opts.Early, 0)
	if opts.NewChecker == nil {
		opts.NewChecker = NewChecker
	}
	if opts.Clock == nil {
		opts.Clock = realClock{}
	}
	s := &Scheduler{
		log:     opts.Logger,
		clock:   opts.Clock,
		opts:    opts,
		wake:    make(chan struct{}, 1),
		changed: make(chan struct{}, 1),
		jobs:    make(chan job),
		out:     make(chan []Change),
		slots:   newCPUSlots(opts.CPUSlots),
	}
	s.tab = newTable(opts.MinRecheck,
		func(sp Spec) (Checker, error) { return opts.NewChecker(sp, opts.Dialer) },
		s.validate)
	if opts.Registerer != nil {
		m, err := newMetrics(s, opts.Registerer)
		if err != nil {
			return nil, fmt.Errorf("register health metrics: %w", err)
		}
		s.met = m
	}
	return s, nil
}

func (s *Scheduler) validate(t Target) error {
	if err := t.Spec.Validate(); err != nil {
		return err
	}
	if !t.Real.Addr().IsValid() {
		return errors.New("real has no address")
	}
	dst := t.Dest()
	if dst.Port() == 0 {
		return errors.New("no probe port: set the check's port")
	}
	if t.Spec.Tunnel {
		if !s.opts.Dialer.source(dst.Addr()).IsValid() {
			return fmt.Errorf("tunnel check to %s needs a non-VIP source address of that family", dst.Addr())
		}
		if dst.Addr().Is4() != t.Real.Addr().Is4() {
			return errors.New("tunnel check: VIP and real are of different address families")
		}
	}
	return nil
}

// Update makes the Scheduler probe exactly targets. A Target listed several times
// (services sharing a real and a check) is probed once. Targets already known keep
// their verdict, counters and phase; new Targets start Unknown (or inherit the
// verdict when only the timing of their check changed: see Lookup) and are spread
// into the schedule. Invalid Targets are skipped, and the error lists them.
func (s *Scheduler) Update(targets []Target) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	now, before := s.clock.Now(), s.tab.unknown
	err := s.tab.update(now, targets)
	if before == 0 && s.tab.unknown > 0 {
		s.undecided = now
	}
	s.kick()
	return err
}

// kick wakes the dispatcher when the head of the heap is due before it planned to
// wake. Called with mu held.
func (s *Scheduler) kick() {
	if !s.sleeping {
		return // it looks at the heap before it sleeps again
	}
	due, ok := s.tab.nextDue()
	if !ok || (!s.wakeAt.IsZero() && !due.Before(s.wakeAt)) {
		return
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Changes delivers verdict changes in the order they happened, in batches: each
// receive takes every change made since the last one, so the engine applies a
// burst (the first round of a cold start: one change per real) in as few passes
// as it can keep up with. It is closed when Run returns. The engine must keep
// reading it.
func (s *Scheduler) Changes() <-chan []Change { return s.out }

// Run probes until ctx is done, then waits for probes in flight and returns.
func (s *Scheduler) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.deliver(ctx)
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.reportRate(ctx)
	}()
	s.dispatch(ctx, &wg)
	close(s.jobs)
	wg.Wait()
	s.slots.socks.close()
	close(s.out)
	return nil
}

// instant is one reading of the time: the scheduler's clock (due times, lag,
// verdict times) and the real clock (a probe's deadline and duration). With
// the real clock, the default, they are one read.
type instant struct{ at, real time.Time }

// instant reads the time, or takes real as the real time when it is set (a
// probe's end, read by its checker: see probeSince).
func (s *Scheduler) instant(real time.Time) instant {
	if real.IsZero() {
		real = time.Now()
	}
	if _, ok := s.clock.(realClock); ok {
		return instant{real, real}
	}
	return instant{s.clock.Now(), real}
}

// popDue takes the probe that runs next if it is due by now, or within Early
// after it (table.popDue). Called with mu held.
func (s *Scheduler) popDue(now time.Time) *entry {
	return s.tab.popDue(now.Add(s.opts.Early))
}

// dispatch starts the due probes that no worker takes: it waits until the
// head of the heap is due, takes a CPU slot, pops the head and hands it to a
// worker. A worker that finishes a probe takes the next due one itself while
// it holds its slot (probe), so under load the probes run back to back on
// the slots while the dispatcher waits for one: no hand-off and no wakeup
// per probe. Blocking on the CPU slots, and on a full pool, are the bounds.
func (s *Scheduler) dispatch(ctx context.Context, wg *sync.WaitGroup) {
	timer := s.clock.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		// The slot first, then the probe: a probe popped before it would wait
		// out of the heap while the workers took later ones.
		select {
		case s.slots.c <- struct{}{}:
		case <-ctx.Done():
			return
		}
		s.mu.Lock()
		now := s.instant(time.Time{})
		e := s.popDue(now.at)
		var wakeAt time.Time
		if e == nil {
			wakeAt, _ = s.tab.nextDue()
			s.wakeAt, s.sleeping = wakeAt, true
		}
		s.mu.Unlock()
		if e != nil {
			if !s.handOff(ctx, wg, job{e, true}) {
				return
			}
			continue
		}
		s.slots.release()
		if !wakeAt.IsZero() {
			timer.ResetAt(wakeAt)
		} else {
			timer.Stop()
		}
		select {
		case <-timer.C():
		case <-s.wake:
			timer.Stop()
		case <-ctx.Done():
			return
		}
		s.mu.Lock()
		s.sleeping = false
		s.mu.Unlock()
	}
}

// handOff gives the probe of j (whose CPU slot the dispatcher took) to an idle
// worker or to a new one. With Concurrency workers busy (waiting on the
// network: a probe on the CPU holds a slot), it hands the slot back and waits
// for a worker, which takes a slot itself: a slot held here would keep those
// workers from finishing. It returns false when ctx ends first.
func (s *Scheduler) handOff(ctx context.Context, wg *sync.WaitGroup, j job) bool {
	select {
	case s.jobs <- j:
		return true
	default:
	}
	if s.workers < s.opts.Concurrency {
		s.workers++
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.worker(ctx, j)
		}()
		return true
	}
	s.slots.release()
	j.slot = false
	s.handing.Store(true)
	defer s.handing.Store(false)
	select {
	case s.jobs <- j:
		return true
	case <-ctx.Done():
		return false
	}
}

// worker runs the probe of j, and the due probes after it (see probe), then
// waits for the next job.
func (s *Scheduler) worker(ctx context.Context, j job) {
	for {
		if !j.slot {
			s.slots.acquire()
		}
		for e, now := j.e, s.instant(time.Time{}); e != nil; {
			e, now = s.probe(ctx, e, now)
		}
		s.slots.release()
		var ok bool
		if j, ok = <-s.jobs; !ok {
			return
		}
	}
}

// probe runs the probe of e, started at start, and records its result; it
// holds a CPU slot throughout but while it waits on the network. It returns
// the next due probe, popped with the slot still held, and the time it read
// at the end of this one, which is that probe's start (read again when
// something waited between them: see contended): none when a probe back
// from the network waits for the slot (it goes first), the dispatcher waits to
// hand a popped probe to a worker (that one goes first: see handing) or ctx
// has ended.
func (s *Scheduler) probe(ctx context.Context, e *entry, start instant) (*entry, instant) {
	if s.opts.beforeProbe != nil {
		s.opts.beforeProbe(e.due)
	}
	lag := max(start.at.Sub(e.due), 0) // a probe started Early is not late
	if s.met != nil {
		s.met.lag.Observe(lag.Seconds())
		s.met.inFlight.Inc()
	}
	pctx := newProbeCtx(ctx, start.real, e.spec.Timeout)
	pctx.slots = s.slots
	r := e.checker.Check(pctx, e.target())
	pctx.release()
	end := s.instant(pctx.end)
	if s.met != nil {
		s.met.inFlight.Dec()
	}
	if ctx.Err() != nil {
		// Shutting down: a canceled probe says nothing about the real.
		s.mu.Lock()
		e.running = false
		s.mu.Unlock()
		return nil, end
	}

	// The next probe starts its clock at this one's end (one read of the
	// clock for both) only when nothing waits between them: a wait for the
	// lock (an Update of a large config, a scrape) or the log line and the
	// yield of a change came out of the next probe's timeout, and a real that
	// answered within it was judged down.
	contended := !s.mu.TryLock()
	if contended {
		s.mu.Lock()
	}
	s.started++
	s.lagSum += lag
	from := e.state
	ch, changed := s.tab.complete(e, r, end.at)
	if changed {
		s.pending = append(s.pending, ch)
		s.emitted++
		select {
		case s.changed <- struct{}{}:
		default:
		}
	}
	if s.opts.afterComplete != nil {
		s.opts.afterComplete(e, r)
	}
	decided := changed && from == Unknown && s.tab.unknown == 0
	var up, down int
	var took time.Duration
	if decided {
		up, down = s.tab.verdicts()
		took = end.at.Sub(s.undecided)
	}
	var next *entry
	if s.slots.resuming.Load() == 0 && !s.handing.Load() {
		next = s.popDue(end.at)
	}
	s.kick()
	s.mu.Unlock()
	if changed {
		if s.met != nil {
			s.met.changes.WithLabelValues(ch.State.String()).Inc()
		}
		// A first verdict is no news, and at a cold start of thousands of
		// reals one line each kept the probes queueing on the log writer:
		// only changes of a known state are logged at Info.
		lvl := hclog.Info
		if from == Unknown {
			lvl = hclog.Debug
		}
		if s.log.IsDebug() || lvl == hclog.Info {
			s.log.Log(lvl, "real "+ch.State.String(), "real", e.real.String(), "check", e.spec.Type.String(),
				"id", e.id, "reason", ch.Reason)
		}
		if decided {
			// In place of a line per first verdict: the one line that says the
			// first round (of a start, or of the checks a reload added) is over.
			s.log.Info("every check has a verdict", "up", up, "down", down,
				"after", took.Round(time.Millisecond).String())
		}
		// The change woke deliver, and through it wakes the engine, on this
		// thread: Go runs a goroutine readied here when this one blocks or
		// after a 10 ms preemption tick, and a worker running on into the
		// next due probe (whose connect under load completes inline) would
		// make the engine wait on the probes. Probes yield to the engine.
		runtime.Gosched()
	}
	if next != nil && (contended || changed) {
		return next, s.instant(time.Time{})
	}
	return next, end
}

// deliver moves pending changes to the Changes channel in order, so that a slow
// reader never blocks a probe: changes made while it waits for the reader join
// the next batch.
func (s *Scheduler) deliver(ctx context.Context) {
	for {
		select {
		case <-s.changed:
		case <-ctx.Done():
			return
		}
		s.mu.Lock()
		batch := s.pending
		s.pending = nil
		s.mu.Unlock()
		if len(batch) == 0 {
			continue
		}
		select {
		case s.out <- batch:
		case <-ctx.Done():
			return
		}
	}
}

func (e *entry) status() Status {
	return Status{
		Target: e.target(), ID: e.id, Refs: e.refs, State: e.state, Reason: e.reason, Since: e.since,
		Last: e.last, LastAt: e.lastAt, OKRun: e.okRun, FailRun: e.failRun,
	}
}

// Lookup returns the current status of one Target.
func (s *Scheduler) Lookup(t Target) (Status, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.tab.get(t)
	if e == nil {
		return Status{}, false
	}
	return e.status(), true
}

// Snapshot returns the status of every Target, sorted by real, type and check id.
func (s *Scheduler) Snapshot() []Status {
	s.mu.Lock()
	out := make([]Status, 0, len(s.tab.entries))
	for _, e := range s.tab.entries {
		out = append(out, e.status())
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if c := a.Target.Real.Compare(b.Target.Real); c != 0 {
			return c < 0
		}
		if a.Target.Spec.Type != b.Target.Spec.Type {
			return a.Target.Spec.Type < b.Target.Spec.Type
		}
		return a.ID < b.ID
	})
	return out
}

// rateReport is how often the scheduler compares the probe rate it manages
// with the rate the checks ask for.
const rateReport = 30 * time.Second

// reportRate warns, every rateReport, when the probes ran at less than 90%
// of the configured rate: the machine cannot do what the checks ask, and
// every real is probed less often than its interval (late probes skip their
// missed turns, so the lag is shared evenly and no backlog builds up).
func (s *Scheduler) reportRate(ctx context.Context) {
	t := s.clock.NewTimer(rateReport)
	defer t.Stop()
	last := s.clock.Now()
	for {
		select {
		case <-t.C():
		case <-ctx.Done():
			return
		}
		now := s.clock.Now()
		t.ResetAt(now.Add(rateReport))
		s.mu.Lock()
		want := 0.0
		for _, e := range s.tab.entries {
			want += float64(time.Second) / float64(e.spec.Interval)
		}
		n, lag := s.started, s.lagSum
		s.started, s.lagSum = 0, 0
		s.mu.Unlock()
		got := float64(n) / now.Sub(last).Seconds()
		last = now
		if s.met != nil {
			s.met.rate.WithLabelValues("configured").Set(want)
			s.met.rate.WithLabelValues("managed").Set(got)
		}
		if got < 0.9*want {
			// n may be 0: not one probe finished (all stuck behind the CPU).
			meanLag := time.Duration(0)
			if n > 0 {
				meanLag = lag / time.Duration(n)
			}
			s.log.Warn("health probes cannot keep up: the checks ask for more than this machine gives them, so every real is probed less often than its interval",
				"configured_per_s", int(want), "managed_per_s", int(got), "mean_lag", meanLag.Round(time.Millisecond).String())
		}
	}
}
