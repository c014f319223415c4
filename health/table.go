package health

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"time"
)

// durationBuckets are the upper bounds of the probe duration histogram, in seconds.
var durationBuckets = [...]float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// entry is the state of one Target: its schedule, its verdict and its counters.
// All fields are guarded by the Scheduler's mutex, except real, spec and checker,
// which never change.
type entry struct {
	real    netip.AddrPort
	spec    *Spec  // interned: Targets with equal Specs share one copy
	id      string // spec.ID(), shared too
	checker Checker
	refs    int // occurrences in the last Update (services sharing this probe)

	due     time.Time // start time of the next probe, or of the running one
	hidx    int       // index in its heap; -1 when not queued
	urgent  bool      // queued in table.urgent, not table.heap (see table.queue)
	running bool
	removed bool

	state   State
	since   time.Time
	reason  string
	okRun   int
	failRun int
	last    Result
	lastAt  time.Time

	counts [numOutcomes]uint64
}

// durations is the probe duration histogram of one check type. It is kept per
// type, not per Target: per Target it cost 17 series per real in every scrape
// (170,000 of 200,000 health series at 10,000 reals) and 128 bytes per entry,
// for a figure an operator reads per check type anyway; each real's results
// and verdict stay per real.
type durations struct {
	buckets [len(durationBuckets) + 1]uint64 // per bucket, not cumulative; last is +Inf
	count   uint64
	sum     float64 // seconds
}

// target is the entry's Target.
func (e *entry) target() Target { return Target{Real: e.real, Spec: *e.spec} }

// pending says the entry's last results point to a verdict they have not yet
// reached: passes toward Up, or failures toward Down. Such an entry is probed
// faster (see complete) and before the others (see queue).
func (e *entry) pending() bool {
	return (e.okRun > 0 && e.state != Up) || (e.failRun > 0 && e.state != Down)
}

// tkey is the table's key for a Target: the real and the interned Spec. A Spec is a
// few hundred bytes; interning keeps that cost per distinct check, not per Target.
type tkey struct {
	real netip.AddrPort
	spec *Spec
}

// table is the scheduler's core without goroutines or clocks: entries, min-heaps of
// due times, spreading, and the rise/fall state machine. The Scheduler drives it
// under its mutex; tests drive it directly with made-up times.
type table struct {
	entries    map[tkey]*entry
	specs      map[Spec]*Spec   // interned Specs of the entries
	ids        map[*Spec]string // their IDs
	heap       entryHeap        // entries whose verdict is not pending
	urgent     entryHeap        // entries whose verdict is pending (see queue)
	minRecheck time.Duration
	checkers   map[Spec]Checker // by checkerKey: one per distinct probe kind
	newChecker func(Spec) (Checker, error)
	validate   func(Target) error
	durations  map[Type]*durations // by check type, as probes of it complete
	unknown    int                 // entries still Unknown: no verdict yet
}

func newTable(minRecheck time.Duration, newChecker func(Spec) (Checker, error), validate func(Target) error) *table {
	return &table{
		entries:    map[tkey]*entry{},
		specs:      map[Spec]*Spec{},
		ids:        map[*Spec]string{},
		minRecheck: minRecheck,
		checkers:   map[Spec]Checker{},
		durations:  map[Type]*durations{},
		newChecker: newChecker,
		validate:   validate,
	}
}

// get returns the entry of a Target, or nil.
func (t *table) get(tg Target) *entry {
	sp, ok := t.specs[tg.Spec]
	if !ok {
		return nil
	}
	return t.entries[tkey{tg.Real, sp}]
}

// checkerKey is the part of a Spec a checker depends on (not timing, port, VIP or
// mark, which come with each Target).
func checkerKey(s Spec) Spec {
	return Spec{Type: s.Type, HTTP: s.HTTP, DNS: s.DNS, Syslog: s.Syslog}
}

// Change is one verdict change of one Target.
type Change struct {
	Key    Target
	State  State
	Reason string    // the result that decided it
	Since  time.Time // when it changed
}

// update makes the table hold exactly targets (duplicates counted as refs). Kept
// Targets keep everything, including their phase. A new Target whose probe identity
// matches a removed one (only the timing changed) inherits its verdict and counters.
// New Targets are spread into the largest gaps of their interval's schedule.
// Invalid Targets are skipped and reported in the error.
func (t *table) update(now time.Time, targets []Target) error {
	var errs []error
	refs := make(map[Target]int, len(targets))
	order := make([]Target, 0, len(targets))
	bad := map[Target]bool{}
	for _, tg := range targets {
		if n, ok := refs[tg]; ok {
			refs[tg] = n + 1
			continue
		}
		if bad[tg] {
			continue
		}
		if err := t.validate(tg); err != nil {
			bad[tg] = true
			errs = append(errs, fmt.Errorf("check %s: %w", tg, err))
			continue
		}
		refs[tg] = 1
		order = append(order, tg)
	}

	// Removed entries by probe identity, several per identity when services
	// probe one real with one check at different timings: keyed by the
	// identity alone, all but one of them were lost (their new Targets
	// started Unknown) and the one kept went to any of the new Targets.
	gone := map[Target][]*entry{}
	for k, e := range t.entries {
		tg := e.target()
		if _, ok := refs[tg]; ok {
			continue
		}
		e.removed = true
		if e.state == Unknown {
			t.unknown--
		}
		t.dequeue(e)
		delete(t.entries, k)
		id := tg.probeIdentity()
		gone[id] = append(gone[id], e)
	}
	specs := make(map[Spec]*Spec, len(t.specs))
	ids := make(map[*Spec]string, len(t.ids))
	intern := func(s Spec) *Spec {
		if p, ok := specs[s]; ok {
			return p
		}
		p, ok := t.specs[s]
		if !ok {
			p = &s
			ids[p] = s.ID()
		} else {
			ids[p] = t.ids[p]
		}
		specs[s] = p
		return p
	}

	checkers := make(map[Spec]Checker, len(t.checkers))
	var fresh []*entry
	for _, tg := range order {
		ck := checkerKey(tg.Spec)
		sp := intern(tg.Spec)
		if e, ok := t.entries[tkey{tg.Real, sp}]; ok {
			e.refs = refs[tg]
			if _, ok := checkers[ck]; !ok {
				checkers[ck] = e.checker
			}
			continue
		}
		c, ok := checkers[ck]
		if !ok {
			var err error
			if c, err = t.newChecker(tg.Spec); err != nil {
				errs = append(errs, fmt.Errorf("check %s: %w", tg, err))
				continue
			}
			checkers[ck] = c
		}
		e := &entry{real: tg.Real, spec: sp, id: ids[sp], checker: c, refs: refs[tg], hidx: -1}
		if old := inherit(gone, tg); old != nil {
			e.state, e.since, e.reason = old.state, old.since, old.reason
			e.okRun, e.failRun, e.last, e.lastAt = old.okRun, old.failRun, old.last, old.lastAt
			e.counts = old.counts
		}
		if e.state == Unknown {
			t.unknown++
		}
		t.entries[tkey{tg.Real, sp}] = e
		fresh = append(fresh, e)
	}
	t.checkers = checkers
	t.specs, t.ids = specs, ids
	t.spread(now, fresh)
	for _, e := range fresh {
		t.queue(e)
	}
	return errors.Join(errs...)
}

// inherit takes from gone the removed entry whose verdict tg carries on: of
// those with tg's probe identity, the one of tg's interval (the same service's
// check, its other timing changed), else the first. It returns nil when there
// is none.
func inherit(gone map[Target][]*entry, tg Target) *entry {
	id := tg.probeIdentity()
	olds := gone[id]
	if len(olds) == 0 {
		return nil
	}
	i := 0
	for j, o := range olds {
		if o.spec.Interval == tg.Spec.Interval {
			i = j
			break
		}
	}
	old := olds[i]
	gone[id] = append(olds[:i], olds[i+1:]...)
	return old
}

// spread gives each fresh entry a first due time so that, per interval, all probe
// start times stay as evenly spaced as possible: existing entries keep their phase
// and fresh ones go, one by one, into the gap that is largest after splitting it
// evenly among the entries it already got. With no existing entries that is an exact
// even spread over one interval starting now.
func (t *table) spread(now time.Time, fresh []*entry) {
	groups := map[time.Duration][]*entry{}
	var intervals []time.Duration
	for _, e := range fresh {
		iv := e.spec.Interval
		if groups[iv] == nil {
			intervals = append(intervals, iv)
		}
		groups[iv] = append(groups[iv], e)
	}
	if len(intervals) == 0 {
		return
	}
	phases := map[time.Duration][]int64{}
	for _, e := range t.entries {
		iv := e.spec.Interval
		if groups[iv] == nil || e.due.IsZero() {
			continue
		}
		phases[iv] = append(phases[iv], mod(e.due.UnixNano(), int64(iv)))
	}
	for _, iv := range intervals {
		t.spreadGroup(now, iv, phases[iv], groups[iv])
	}
}

func mod(a, m int64) int64 {
	r := a % m
	if r < 0 {
		r += m
	}
	return r
}

func (t *table) spreadGroup(now time.Time, iv time.Duration, pos []int64, fresh []*entry) {
	I := int64(iv)
	nowPos := mod(now.UnixNano(), I)
	if len(pos) == 0 {
		for j, e := range fresh {
			e.due = now.Add(time.Duration(I * int64(j) / int64(len(fresh))))
		}
		return
	}
	sort.Slice(pos, func(i, j int) bool { return pos[i] < pos[j] })
	gaps := make(gapHeap, len(pos))
	for i := range pos {
		next := I + pos[0]
		if i+1 < len(pos) {
			next = pos[i+1]
		}
		gaps[i] = &gap{start: pos[i], length: next - pos[i]}
	}
	gaps.init()
	for range fresh {
		g := gaps[0]
		g.k++
		gaps.down(0)
	}
	i := 0
	for _, g := range gaps {
		for j := 1; j <= g.k; j++ {
			p := mod(g.start+g.length*int64(j)/int64(g.k+1), I)
			fresh[i].due = now.Add(time.Duration(mod(p-nowPos, I)))
			i++
		}
	}
}

// queue puts e in the heap it belongs to: urgent while its verdict is pending,
// heap otherwise. Due probes of urgent go first (popDue). When the checks ask for
// more probes than the machine runs, every due time is late by the backlog, and
// in one heap a real's next probe, due interval/fall after a failure, queued
// behind the backlog again for each of its fall probes: at N=1000 in make
// e2ebench (10,000 probes a second asked, 1,166 to 1,429 run, so a round of
// every real takes 7 to 8.6 s) a real taken away was found down after 20.25 s
// (25.54 s in a profiled run), against a configured 3 s. With urgent first it
// waits for the backlog once, for its first failure: 1.79 s in the next run
// (at N=200, 0.72 s, from 3.11). Urgent probes hold the others back for a
// bounded time: an entry is urgent for at most rise-1 or fall-1 probes in a
// row, each interval/rise or interval/fall after the last, and it leaves
// urgent with a verdict or with a result that resets its run.
func (t *table) queue(e *entry) {
	e.urgent = e.pending()
	if e.urgent {
		t.urgent.push(e)
	} else {
		t.heap.push(e)
	}
}

// dequeue takes e out of its heap, if it is queued.
func (t *table) dequeue(e *entry) {
	switch {
	case e.hidx < 0:
	case e.urgent:
		t.urgent.remove(e)
	default:
		t.heap.remove(e)
	}
}

// popDue takes the entry that runs next if it is due by now, marking it
// running, or returns nil: the earliest due of urgent, else the earliest due
// of heap.
func (t *table) popDue(now time.Time) *entry {
	var e *entry
	switch {
	case len(t.urgent) > 0 && !t.urgent[0].due.After(now):
		e = t.urgent.pop()
	case len(t.heap) > 0 && !t.heap[0].due.After(now):
		e = t.heap.pop()
	default:
		return nil
	}
	e.running = true
	return e
}

// nextDue is the earliest due time, if any entry is queued.
func (t *table) nextDue() (time.Time, bool) {
	switch {
	case len(t.heap) == 0 && len(t.urgent) == 0:
		return time.Time{}, false
	case len(t.urgent) == 0:
		return t.heap[0].due, true
	case len(t.heap) == 0 || t.urgent[0].due.Before(t.heap[0].due):
		return t.urgent[0].due, true
	}
	return t.heap[0].due, true
}

// verdicts counts the entries Up and Down.
func (t *table) verdicts() (up, down int) {
	for _, e := range t.entries {
		switch e.state {
		case Up:
			up++
		case Down:
			down++
		}
	}
	return up, down
}

// complete records a probe result: counters, hysteresis, and the next due time. It
// returns the Change when the verdict changed. Results of removed entries are dropped.
func (t *table) complete(e *entry, r Result, now time.Time) (Change, bool) {
	e.running = false
	if e.removed {
		return Change{}, false
	}
	e.counts[r.Outcome]++
	d := t.durations[e.spec.Type]
	if d == nil {
		d = &durations{}
		t.durations[e.spec.Type] = d
	}
	sec := r.Duration.Seconds()
	d.buckets[sort.SearchFloat64s(durationBuckets[:], sec)]++
	d.count++
	d.sum += sec
	e.last, e.lastAt = r, now

	spec := e.spec
	from := e.state
	var ch Change
	changed := false
	if r.Outcome == OK {
		e.okRun++
		e.failRun = 0
		if e.state != Up && e.okRun >= spec.Rise {
			changed = true
			e.state = Up
		}
	} else {
		e.failRun++
		e.okRun = 0
		if e.state != Down && e.failRun >= spec.Fall {
			changed = true
			e.state = Down
		}
	}
	if changed {
		if from == Unknown {
			t.unknown-- // a first verdict: no entry goes back to Unknown
		}
		e.since, e.reason = now, r.Reason
		ch = Change{Key: e.target(), State: e.state, Reason: r.Reason, Since: now}
	}

	// While a verdict is pending, probe faster: rise (or fall) probes then fit in
	// about one interval, so detection takes about one interval plus the time to
	// the first failing probe, instead of fall intervals.
	step := spec.Interval
	if e.pending() {
		runs := spec.Fall
		if e.okRun > 0 {
			runs = spec.Rise
		}
		step = min(max(spec.Interval/time.Duration(runs), t.minRecheck), spec.Interval)
	}
	next := e.due.Add(step)
	if !next.After(now) {
		// Late (overload, or a probe that ran long): skip the missed slots rather
		// than bunch probes, keeping the phase.
		late := now.Sub(next)
		next = next.Add((late/step + 1) * step)
	}
	e.due = next
	t.queue(e)
	return ch, changed
}

// entryHeap is a binary min-heap on due time that tracks each entry's index, so an
// entry can be removed from the middle on reload.
type entryHeap []*entry

func (h entryHeap) less(i, j int) bool { return h[i].due.Before(h[j].due) }

func (h entryHeap) swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].hidx = i
	h[j].hidx = j
}

func (h *entryHeap) push(e *entry) {
	e.hidx = len(*h)
	*h = append(*h, e)
	h.up(e.hidx)
}

func (h *entryHeap) pop() *entry {
	old := *h
	n := len(old) - 1
	old.swap(0, n)
	e := old[n]
	old[n] = nil
	*h = old[:n]
	if n > 0 {
		h.down(0)
	}
	e.hidx = -1
	return e
}

func (h *entryHeap) remove(e *entry) {
	i := e.hidx
	old := *h
	n := len(old) - 1
	if i != n {
		old.swap(i, n)
	}
	old[n] = nil
	*h = old[:n]
	if i != n {
		if !h.down(i) {
			h.up(i)
		}
	}
	e.hidx = -1
}

func (h entryHeap) up(j int) {
	for j > 0 {
		i := (j - 1) / 2
		if !h.less(j, i) {
			break
		}
		h.swap(i, j)
		j = i
	}
}

func (h entryHeap) down(i0 int) bool {
	i, n := i0, len(h)
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		j := l
		if r := l + 1; r < n && h.less(r, l) {
			j = r
		}
		if !h.less(j, i) {
			break
		}
		h.swap(i, j)
		i = j
	}
	return i > i0
}

// gap is a stretch of one interval's circle between two existing phases that k
// fresh entries will share.
type gap struct {
	start, length int64
	k             int
}

// gapHeap is a max-heap on the sub-gap length a gap would have after one more entry.
type gapHeap []*gap

func (h gapHeap) score(i int) float64 { return float64(h[i].length) / float64(h[i].k+1) }

func (h gapHeap) init() {
	for i := len(h)/2 - 1; i >= 0; i-- {
		h.down(i)
	}
}

func (h gapHeap) down(i int) {
	n := len(h)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		j := l
		if r := l + 1; r < n && h.score(r) > h.score(l) {
			j = r
		}
		if h.score(j) <= h.score(i) {
			return
		}
		h[i], h[j] = h[j], h[i]
		i = j
	}
}
