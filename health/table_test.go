package health

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
)

var t0 = time.Unix(1_000_000, 0)

func tcpTarget(addr string, iv time.Duration, rise, fall int) Target {
	return Target{Real: netip.MustParseAddrPort(addr),
		Spec: Spec{Type: TCP, Interval: iv, Timeout: iv / 2, Rise: rise, Fall: fall}}
}

func newTestTable(minRecheck time.Duration) (*table, *fakeChecker) {
	f := newFakeChecker()
	tab := newTable(minRecheck, func(Spec) (Checker, error) { return f, nil },
		func(t Target) error { return t.Spec.Validate() })
	return tab, f
}

// runOne pops the given entry as if it were due now and completes it with outcome o.
func runOne(tab *table, e *entry, o Outcome, now time.Time) (Change, bool) {
	tab.dequeue(e)
	e.running = true
	return tab.complete(e, Result{Outcome: o, Reason: o.String()}, now)
}

func TestRiseFall(t *testing.T) {
	// outcomes: + ok, - fail; want: the state after each result (u unknown, U up,
	// D down), a capital letter where a change was emitted.
	tests := []struct {
		name       string
		rise, fall int
		outcomes   string
		want       string
	}{
		{"rise 2 from unknown", 2, 3, "++++", "uUUU"},
		{"fall 3 from unknown", 2, 3, "----", "uuDD"},
		{"one failure does not go down", 2, 3, "++-+-+", "uUUUUU"},
		{"fall after up", 2, 3, "++---", "uUUUD"},
		{"rise after down", 2, 2, "--+-++", "uDDDDU"},
		{"rise 1 fall 1 follow each result", 1, 1, "+-+-", "UDUD"},
		{"alternating never decides", 2, 2, "+-+-+-", "uuuuuu"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tab, _ := newTestTable(time.Millisecond)
			tg := tcpTarget("127.0.0.1:80", time.Second, tt.rise, tt.fall)
			if err := tab.update(t0, []Target{tg}); err != nil {
				t.Fatal(err)
			}
			e := tab.get(tg)
			var got strings.Builder
			now := t0
			for _, c := range tt.outcomes {
				o := OK
				if c == '-' {
					o = Fail
				}
				now = now.Add(time.Second)
				prev := e.state
				ch, changed := runOne(tab, e, o, now)
				letter := "u"
				switch e.state {
				case Up:
					letter = "U"
				case Down:
					letter = "D"
				}
				if changed != (e.state != prev) || (changed && (ch.State != e.state || ch.Key != tg || ch.Since != now)) {
					t.Fatalf("change %+v does not match state %s", ch, e.state)
				}
				got.WriteString(letter)
			}
			// Changes are emitted exactly where the state differs from before.
			if got.String() != tt.want {
				t.Errorf("states %s, want %s", got.String(), tt.want)
			}
		})
	}
}

func TestOnlyChangesEmitted(t *testing.T) {
	tab, _ := newTestTable(time.Millisecond)
	tg := tcpTarget("127.0.0.1:80", time.Second, 2, 2)
	tab.update(t0, []Target{tg})
	e := tab.get(tg)
	var changes []string
	now := t0
	for _, c := range "+++++--+--+++" {
		o := OK
		if c == '-' {
			o = Fail
		}
		now = now.Add(time.Second)
		if ch, ok := runOne(tab, e, o, now); ok {
			changes = append(changes, ch.State.String())
		}
	}
	if got, want := strings.Join(changes, ","), "up,down,up"; got != want {
		t.Errorf("changes %s, want %s", got, want)
	}
}

func TestRecheckWhileInTransition(t *testing.T) {
	tests := []struct {
		name       string
		iv         time.Duration
		rise, fall int
		minRecheck time.Duration
		outcomes   string
		want       []time.Duration // step to the next due time after each result
	}{
		{"rising from unknown", 3 * time.Second, 3, 2, time.Millisecond, "+++", []time.Duration{time.Second, time.Second, 3 * time.Second}},
		{"falling from up", 2 * time.Second, 1, 4, time.Millisecond, "+---", []time.Duration{2 * time.Second, 500 * time.Millisecond, 500 * time.Millisecond, 500 * time.Millisecond}},
		{"stays down at the interval", 2 * time.Second, 2, 1, time.Millisecond, "--", []time.Duration{2 * time.Second, 2 * time.Second}},
		{"bounded below", 300 * time.Millisecond, 3, 3, 200 * time.Millisecond, "++", []time.Duration{200 * time.Millisecond, 200 * time.Millisecond}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tab, _ := newTestTable(tt.minRecheck)
			tg := tcpTarget("127.0.0.1:80", tt.iv, tt.rise, tt.fall)
			tab.update(t0, []Target{tg})
			e := tab.get(tg)
			for i, c := range tt.outcomes {
				o := OK
				if c == '-' {
					o = Fail
				}
				due := e.due
				runOne(tab, e, o, due.Add(time.Millisecond))
				if got := e.due.Sub(due); got != tt.want[i] {
					t.Errorf("after result %d (%c): next in %s, want %s", i, c, got, tt.want[i])
				}
			}
		})
	}
}

func TestLateProbeKeepsPhase(t *testing.T) {
	tab, _ := newTestTable(time.Millisecond)
	tg := tcpTarget("127.0.0.1:80", time.Second, 1, 1)
	tab.update(t0.Add(300*time.Millisecond), []Target{tg})
	e := tab.get(tg)
	// Completed 3.5 intervals late: the next probe is at the next slot of its phase.
	runOne(tab, e, OK, e.due.Add(3500*time.Millisecond))
	if got, want := e.due, t0.Add(4300*time.Millisecond); !got.Equal(want) {
		t.Errorf("next due %s, want %s", got.Sub(t0), want.Sub(t0))
	}
}

// TestPendingVerdictGoesFirst: with every probe late (the checks ask more than
// the machine runs), a real whose verdict is pending is probed at its faster
// step, before the backlog, not behind it again for each of its fall probes;
// the backlog goes on when it is not due, and it rejoins the others with its verdict.
func TestPendingVerdictGoesFirst(t *testing.T) {
	tab, _ := newTestTable(time.Millisecond)
	ts := realTargets(100, 1, 3)
	tab.update(t0, ts)
	for _, tg := range ts {
		e := tab.get(tg)
		runOne(tab, e, OK, e.due)
	}
	// Ten seconds on, all 100 are due; the first to run fails.
	now := t0.Add(10 * time.Second)
	e := tab.popDue(now)
	if _, changed := tab.complete(e, Result{Outcome: Fail}, now); changed || !e.urgent {
		t.Fatalf("after one failure of fall 3: changed %v, urgent %v; want no change, urgent", changed, e.urgent)
	}
	step := time.Second / 3
	if got := e.due.Sub(now); got <= 0 || got > step {
		t.Fatalf("next probe of the failing real in %s, want within %s", got, step)
	}
	if next, _ := tab.nextDue(); next.After(now) {
		t.Errorf("next due %s after now, want the backlog's, before it", next.Sub(now))
	}
	for fails := 2; fails <= 3; fails++ {
		// Before its step the backlog runs; at it, the failing real, though 99
		// entries have been due for seconds.
		if got := tab.popDue(e.due.Add(-time.Millisecond)); got == nil || got == e {
			t.Fatalf("failure %d: before its due time popDue gave %v, want one of the backlog", fails, got)
		} else {
			tab.complete(got, Result{Outcome: OK}, e.due)
		}
		at := e.due
		if got := tab.popDue(at); got != e {
			t.Fatalf("failure %d: at its due time popDue gave %v, want the failing real", fails, got)
		}
		ch, changed := tab.complete(e, Result{Outcome: Fail}, at)
		if want := fails == 3; changed != want || e.urgent == want {
			t.Fatalf("failure %d: changed %v (%s), urgent %v", fails, changed, ch.State, e.urgent)
		}
	}
	if e.state != Down || len(tab.urgent) != 0 || e.hidx < 0 {
		t.Errorf("after fall: state %s, %d urgent, queued %v; want down, none, in the heap", e.state, len(tab.urgent), e.hidx >= 0)
	}

	// A reload that drops a real while it is urgent takes it out of urgent.
	f := tab.get(ts[50])
	tab.dequeue(f)
	tab.complete(f, Result{Outcome: Fail}, now)
	if !f.urgent || len(tab.urgent) != 1 {
		t.Fatalf("urgent %v, %d urgent; want the failing real", f.urgent, len(tab.urgent))
	}
	tab.update(now, append(ts[:50:50], ts[51:]...))
	if len(tab.urgent) != 0 || f.hidx != -1 {
		t.Errorf("removed real: %d urgent, index %d; want none, -1", len(tab.urgent), f.hidx)
	}
}

func dueOffsets(tab *table, targets []Target, base time.Time) []time.Duration {
	var out []time.Duration
	for _, tg := range targets {
		out = append(out, tab.get(tg).due.Sub(base))
	}
	return out
}

func realN(i int) string { return fmt.Sprintf("127.0.%d.%d:80", i/250, i%250+1) }

// realTargets is n TCP checks of reals realN(0..n-1), every second.
func realTargets(n, rise, fall int) []Target {
	ts := make([]Target, n)
	for i := range ts {
		ts[i] = tcpTarget(realN(i), time.Second, rise, fall)
	}
	return ts
}

func TestSpreadFirstRound(t *testing.T) {
	tab, _ := newTestTable(time.Millisecond)
	var ts []Target
	for i := range 8 {
		ts = append(ts, tcpTarget(realN(i), 800*time.Millisecond, 2, 2))
	}
	// One target with another interval has a schedule of its own.
	other := tcpTarget(realN(99), 3*time.Second, 2, 2)
	tab.update(t0, append(ts, other))
	got := fmt.Sprint(dueOffsets(tab, ts, t0))
	if want := "[0s 100ms 200ms 300ms 400ms 500ms 600ms 700ms]"; got != want {
		t.Errorf("first probes at %s, want %s", got, want)
	}
	if d := tab.get(other).due; !d.Equal(t0) {
		t.Errorf("other interval first probe at %s, want 0", d.Sub(t0))
	}
}

func TestSpreadAfterReload(t *testing.T) {
	tab, _ := newTestTable(time.Millisecond)
	var old, fresh []Target
	for i := range 4 {
		old = append(old, tcpTarget(realN(i), time.Second, 2, 2))
		fresh = append(fresh, tcpTarget(realN(10+i), time.Second, 2, 2))
	}
	tab.update(t0, old)
	// Reload 2.3 s later: the old ones keep their phases (0, 250, 500, 750 ms mod 1 s);
	// the new ones take the middle of each gap.
	now := t0.Add(2300 * time.Millisecond)
	before := dueOffsets(tab, old, t0)
	tab.update(now, append(old, fresh...))
	if after := dueOffsets(tab, old, t0); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("existing targets moved: %v -> %v", before, after)
	}
	var phases []int64
	for _, tg := range fresh {
		d := tab.get(tg).due
		if d.Before(now) || !d.Before(now.Add(time.Second)) {
			t.Errorf("new target due at %s, not within one interval of the reload", d.Sub(now))
		}
		phases = append(phases, mod(d.Sub(t0).Milliseconds(), 1000))
	}
	seen := map[int64]bool{}
	for _, p := range phases {
		seen[p] = true
	}
	for _, want := range []int64{125, 375, 625, 875} {
		if !seen[want] {
			t.Errorf("new phases %v, want 125, 375, 625, 875 ms", phases)
			break
		}
	}
}

func TestDedupeAndRefs(t *testing.T) {
	tab, _ := newTestTable(time.Millisecond)
	shared := tcpTarget("127.0.0.1:80", time.Second, 2, 2)
	alone := tcpTarget("127.0.0.2:80", time.Second, 2, 2)
	// Three services list the same real and check.
	tab.update(t0, []Target{shared, alone, shared, shared})
	if len(tab.entries) != 2 || len(tab.heap) != 2 {
		t.Fatalf("%d entries, %d queued; want 2 and 2", len(tab.entries), len(tab.heap))
	}
	if r := tab.get(shared).refs; r != 3 {
		t.Errorf("shared refs %d, want 3", r)
	}
	tab.update(t0, []Target{shared, alone})
	if r := tab.get(shared).refs; r != 1 {
		t.Errorf("after reload shared refs %d, want 1", r)
	}
}

func TestReloadKeepsState(t *testing.T) {
	tab, _ := newTestTable(time.Millisecond)
	a := tcpTarget("127.0.0.1:80", time.Second, 1, 1)
	b := tcpTarget("127.0.0.2:80", time.Second, 1, 1)
	tab.update(t0, []Target{a, b})
	ea := tab.get(a)
	runOne(tab, ea, OK, t0.Add(time.Second))
	runOne(tab, tab.get(b), Fail, t0.Add(time.Second))
	due := ea.due

	// Unchanged check: same entry, verdict, counters, phase.
	c := tcpTarget("127.0.0.3:80", time.Second, 1, 1)
	tab.update(t0.Add(1500*time.Millisecond), []Target{c, a, b})
	if tab.get(a) != ea || ea.state != Up || ea.counts[OK] != 1 || !ea.due.Equal(due) {
		t.Errorf("kept target lost state: state %s counts %v due %s", ea.state, ea.counts, ea.due.Sub(t0))
	}
	// A changed check (another path) is a new probe: unknown.
	b2 := b
	b2.Spec.Port = 81
	tab.update(t0.Add(2*time.Second), []Target{a, b2})
	if e := tab.get(b2); e.state != Unknown || e.counts[Fail] != 0 {
		t.Errorf("changed check kept state %s", e.state)
	}
	// Only the timing changed: the verdict and counters carry over.
	a2 := a
	a2.Spec.Interval, a2.Spec.Rise = 2*time.Second, 3
	tab.update(t0.Add(3*time.Second), []Target{a2, b2})
	if e := tab.get(a2); e.state != Up || e.counts[OK] != 1 || e.since != ea.since {
		t.Errorf("timing change lost the verdict: %s %v", e.state, e.counts)
	}
	if !ea.removed || ea.hidx != -1 {
		t.Errorf("replaced entry still queued")
	}
	// A result for a removed entry is dropped.
	if _, changed := tab.complete(ea, Result{Outcome: Fail}, t0.Add(4*time.Second)); changed || ea.hidx != -1 {
		t.Errorf("removed entry rescheduled or changed")
	}
}

func TestInvalidTargetsSkipped(t *testing.T) {
	tab, _ := newTestTable(time.Millisecond)
	good := tcpTarget("127.0.0.1:80", time.Second, 1, 1)
	bad := good
	bad.Real = netip.MustParseAddrPort("127.0.0.2:80")
	bad.Spec.Timeout = time.Second // not shorter than the interval
	err := tab.update(t0, []Target{good, bad, bad})
	if err == nil || !strings.Contains(err.Error(), "must be shorter than interval") || strings.Count(err.Error(), "\n") != 0 {
		t.Errorf("error %v, want one timeout error", err)
	}
	if len(tab.entries) != 1 || tab.get(good) == nil {
		t.Errorf("want only the good target, have %d", len(tab.entries))
	}
}

func TestHeapOrder(t *testing.T) {
	tab, _ := newTestTable(time.Millisecond)
	ts := realTargets(50, 1, 1)
	tab.update(t0, ts)
	// Remove every third, then pop all: due times come out sorted.
	var keep []Target
	for i, tg := range ts {
		if i%3 != 0 {
			keep = append(keep, tg)
		}
	}
	tab.update(t0, keep)
	var prev time.Time
	n := 0
	for len(tab.heap) > 0 {
		e := tab.heap.pop()
		if e.due.Before(prev) {
			t.Fatalf("heap out of order")
		}
		prev = e.due
		n++
	}
	if n != len(keep) {
		t.Errorf("popped %d, want %d", n, len(keep))
	}
}

// TestTableCountsUnknown: the count of undecided entries follows first
// verdicts, removals and verdicts inherited across a reload.
func TestTableCountsUnknown(t *testing.T) {
	tab, _ := newTestTable(time.Millisecond)
	a := tcpTarget("127.0.0.1:80", time.Second, 1, 1)
	b := tcpTarget("127.0.0.2:80", time.Second, 1, 1)
	c := tcpTarget("127.0.0.3:80", time.Second, 1, 1)
	if err := tab.update(t0, []Target{a, b, c}); err != nil {
		t.Fatal(err)
	}
	check := func(want int) {
		t.Helper()
		n := 0
		for _, e := range tab.entries {
			if e.state == Unknown {
				n++
			}
		}
		if tab.unknown != want || n != want {
			t.Fatalf("unknown %d (entries say %d), want %d", tab.unknown, n, want)
		}
	}
	check(3)
	runOne(tab, tab.get(a), OK, t0.Add(time.Second))
	check(2)
	runOne(tab, tab.get(a), Fail, t0.Add(2*time.Second)) // a known verdict changes
	check(2)
	if err := tab.update(t0, []Target{a, b}); err != nil { // c goes undecided
		t.Fatal(err)
	}
	check(1)
	// Only a's timing changes: it keeps its verdict (Down), no new unknown.
	a2 := tcpTarget("127.0.0.1:80", 2*time.Second, 1, 1)
	if err := tab.update(t0, []Target{a2, b}); err != nil {
		t.Fatal(err)
	}
	check(1)
	runOne(tab, tab.get(b), Fail, t0.Add(3*time.Second))
	check(0)
}

// TestReloadTimingOfSharedCheck: two services probe one real with the same
// check at different intervals (two Targets, one probe identity). A reload
// that changes the timing of both keeps both verdicts: neither new Target
// starts Unknown, which would take the real's traffic away until it passed
// again.
func TestReloadTimingOfSharedCheck(t *testing.T) {
	tab, _ := newTestTable(time.Millisecond)
	a := tcpTarget("127.0.0.1:80", time.Second, 1, 1)
	b := tcpTarget("127.0.0.1:80", 2*time.Second, 1, 1)
	tab.update(t0, []Target{a, b})
	runOne(tab, tab.get(a), OK, t0.Add(time.Second))
	runOne(tab, tab.get(b), Fail, t0.Add(time.Second))
	a2, b2 := a, b
	a2.Spec.Fall, b2.Spec.Fall = 3, 3
	tab.update(t0.Add(2*time.Second), []Target{a2, b2})
	if got := tab.get(a2).state; got != Up {
		t.Errorf("the 1s check after a reload of its fall: %s, want up", got)
	}
	if got := tab.get(b2).state; got != Down {
		t.Errorf("the 2s check after a reload of its fall: %s, want down", got)
	}
	if tab.unknown != 0 {
		t.Errorf("%d entries unknown", tab.unknown)
	}
}
