package health

import (
	"context"
	"io"
	"log"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// fakeClock is a Clock that moves only when told.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) NewTimer(d time.Duration) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, ch: make(chan time.Time, 1), when: c.now.Add(d), active: true}
	c.timers = append(c.timers, t)
	return t
}

// Advance moves time and fires the timers that are due.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	for _, t := range c.timers {
		if t.active && !t.when.After(c.now) {
			t.active = false
			select {
			case t.ch <- c.now:
			default:
			}
		}
	}
}

type fakeTimer struct {
	c      *fakeClock
	ch     chan time.Time
	when   time.Time
	active bool
}

func (t *fakeTimer) C() <-chan time.Time { return t.ch }

func (t *fakeTimer) ResetAt(at time.Time) {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	select { // drop a stale tick, as time.Timer does since Go 1.23
	case <-t.ch:
	default:
	}
	t.when, t.active = at, true
	if !at.After(t.c.now) {
		t.active = false
		t.ch <- t.c.now
	}
}

func (t *fakeTimer) Stop() {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	t.active = false
	select {
	case <-t.ch:
	default:
	}
}

// fakeChecker answers from a table of outcomes per real, and counts its calls.
type fakeChecker struct {
	mu       sync.Mutex
	outcomes map[netip.AddrPort]Outcome
	calls    map[netip.AddrPort]int
	block    chan struct{} // when set, Check waits for it (or ctx)
	// hold: Check of these reals waits on the network until the channel closes
	hold     map[netip.AddrPort]chan struct{}
	onCheck  func(Target) // when set, called as Check starts
	inFlight int
	maxIn    int
}

func newFakeChecker() *fakeChecker {
	return &fakeChecker{outcomes: map[netip.AddrPort]Outcome{}, calls: map[netip.AddrPort]int{}}
}

func (f *fakeChecker) set(addr netip.AddrPort, o Outcome) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.outcomes[addr] = o
}

func (f *fakeChecker) callsOf(addr netip.AddrPort) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[addr]
}

func (f *fakeChecker) Check(ctx context.Context, t Target) Result {
	f.mu.Lock()
	f.calls[t.Real]++
	o := f.outcomes[t.Real]
	f.inFlight++
	f.maxIn = max(f.maxIn, f.inFlight)
	block := f.block
	if h, ok := f.hold[t.Real]; ok {
		block = h
	}
	onCheck := f.onCheck
	f.mu.Unlock()
	if onCheck != nil {
		onCheck(t)
	}
	if block != nil {
		// A wait on the network, as far as the CPU slots go.
		resume := idle(ctx)
		defer resume()
		select {
		case <-block:
		case <-ctx.Done():
		}
	}
	f.mu.Lock()
	f.inFlight--
	f.mu.Unlock()
	return Result{Outcome: o, Reason: "fake " + o.String()}
}

func (f *fakeChecker) factory(Spec, Dialer) (Checker, error) { return f, nil }

func stringsReader(s string) *strings.Reader { return strings.NewReader(s) }

func quietLog() *log.Logger { return log.New(io.Discard, "", 0) }
