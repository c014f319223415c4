package health

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"
)

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
