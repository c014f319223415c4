package health

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"
)

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
