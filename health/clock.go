package health

import "time"

// Clock is the scheduler's source of time, injectable so that tests can step time.
// Probe deadlines always use the real clock: probes do real I/O.
type Clock interface {
	Now() time.Time
	NewTimer(d time.Duration) Timer
}

// Timer is a one-shot timer set to an absolute time (so that a fake clock that
// moves between reading the time and arming the timer cannot make it late).
type Timer interface {
	C() <-chan time.Time
	ResetAt(t time.Time)
	Stop()
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }

type realTimer struct{ t *time.Timer }

func (t realTimer) C() <-chan time.Time  { return t.t.C }
func (t realTimer) ResetAt(at time.Time) { t.t.Reset(time.Until(at)) }
func (t realTimer) Stop()                { t.t.Stop() }
