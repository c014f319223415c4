package health

import (
	"context"
	"sync"
	"time"
)

// probeCtx is the context a probe runs under: the scheduler's context plus the
// probe's deadline. Unlike context.WithDeadline it arms no timer and registers with
// no parent until someone asks for Done: the TCP checker's common path only reads
// the deadline, and at tens of thousands of probes per second the timer and the
// parent's child-set bookkeeping were a tenth of the cost of a probe.
//
// Kept for the row BenchmarkTCPChecksPerSecond (>= 40000 checks/cpu-s): with
// context.WithDeadline instead (and the slots as a context value) it gave
// 24,657-37,976 checks/cpu-s over 8 runs, against 23,267-38,919 for this
// type in the same interleaved runs on a loaded 2-core host (means 31.1k and
// 35.0k), about a tenth less, as above (issue 12).
type probeCtx struct {
	parent   context.Context
	deadline time.Time
	slots    *cpuSlots // the scheduler's CPU slots, one held by this probe; nil outside it
	// start is the probe's start (deadline = start + timeout); end is set by
	// probeSince when the checker reaches its verdict. Both are the probe's only
	// reads of the clock (see probeSince).
	start, end time.Time

	mu         sync.Mutex
	done       chan struct{}
	err        error
	timer      *time.Timer
	stopParent func() bool
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func newProbeCtx(parent context.Context, start time.Time, timeout time.Duration) *probeCtx {
	return &probeCtx{parent: parent, start: start, deadline: start.Add(timeout)}
}

// probeStart is when the probe under ctx started: the scheduler's read of the
// clock under a probeCtx, else now.
func probeStart(ctx context.Context) time.Time {
	if pc, ok := ctx.(*probeCtx); ok {
		return pc.start
	}
	return time.Now()
}

// probeSince is the time from start to the probe's verdict, now. Under a
// probeCtx it keeps that read as the probe's end, which the scheduler uses
// as the time of the result and, when it takes the next due probe at once,
// as that probe's start: a probe reads the clock once at its start and once
// at its end, and back to back probes share the read. Under the emulated VM
// of make e2ebench (clocksource hpet) every read of the clock is a syscall
// and an emulated device read; each probe read it five times before.
func probeSince(ctx context.Context, start time.Time) time.Duration {
	now := time.Now()
	if pc, ok := ctx.(*probeCtx); ok {
		pc.end = now
	}
	return now.Sub(start)
}

func (c *probeCtx) Deadline() (time.Time, bool) { return c.deadline, true }

func (c *probeCtx) Value(key any) any { return c.parent.Value(key) }

func (c *probeCtx) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done != nil {
		return c.done
	}
	if err := c.expiredLocked(); err != nil {
		c.err, c.done = err, closedChan
		return c.done
	}
	c.done = make(chan struct{})
	c.timer = time.AfterFunc(time.Until(c.deadline), func() { c.cancel(context.DeadlineExceeded) })
	c.stopParent = context.AfterFunc(c.parent, func() { c.cancel(c.parent.Err()) })
	return c.done
}

// expiredLocked reports the error the context has by now, whether or not Done was
// asked for.
func (c *probeCtx) expiredLocked() error {
	if c.err != nil {
		return c.err
	}
	if err := c.parent.Err(); err != nil {
		return err
	}
	if !time.Now().Before(c.deadline) {
		return context.DeadlineExceeded
	}
	return nil
}

func (c *probeCtx) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	err := c.expiredLocked()
	if err != nil && c.err == nil {
		c.err = err
		if c.done != nil && c.done != closedChan {
			close(c.done)
		} else if c.done == nil {
			c.done = closedChan
		}
	}
	return err
}

func (c *probeCtx) cancel(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return
	}
	c.err = err
	if c.done != nil && c.done != closedChan {
		close(c.done)
	}
}

// release stops the timer and the parent registration, if Done armed them.
func (c *probeCtx) release() {
	c.mu.Lock()
	timer, stopParent := c.timer, c.stopParent
	c.mu.Unlock()
	if timer != nil {
		timer.Stop()
	}
	if stopParent != nil {
		stopParent()
	}
}
