package health

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"
)

// Outcome classifies one probe result.
type Outcome uint8

// Outcomes. Only OK counts as a success; the others say why a probe failed.
const (
	// OK: the real answered as expected.
	OK Outcome = iota
	// Fail: the real answered, or refused, but not as expected (wrong status,
	// connection refused or reset, garbage).
	Fail
	// Timeout: no complete answer before the probe's deadline.
	Timeout
	// Error: the probe could not be made from this side (no socket, bad CA file,
	// missing permission for SO_MARK, bad address); says nothing about the real.
	Error
	numOutcomes
)

var outcomeNames = [...]string{OK: "ok", Fail: "fail", Timeout: "timeout", Error: "error"}

func (o Outcome) String() string {
	if int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return fmt.Sprintf("outcome(%d)", o)
}

// Result is what one probe found.
type Result struct {
	Outcome  Outcome
	Reason   string        // short, human: "HTTP 503", "connection refused", "timeout after 1s"
	Duration time.Duration // from the start of the probe to its verdict
}

// State is a real's verdict for one Target.
type State uint8

// States. A Target starts Unknown and leaves it after rise successes or fall failures.
const (
	Unknown State = iota // never decided (new, or not yet enough results)
	Up
	Down
)

func (s State) String() string {
	switch s {
	case Up:
		return "up"
	case Down:
		return "down"
	default:
		return "unknown"
	}
}

// errLocal marks an error made on this side (socket, bind, SO_MARK, config).
type errLocal struct{ err error }

func (e errLocal) Error() string { return e.err.Error() }
func (e errLocal) Unwrap() error { return e.err }

// classify turns a probe error into a Result. A probe whose context has passed its
// deadline is a timeout, whatever error the I/O layer chose to report.
// runProbe times probe and turns what it returns into a Result: its text
// is the reason of an OK, its error is classified.
func runProbe(ctx context.Context, t Target, probe func(context.Context, Target) (string, error)) Result {
	start := probeStart(ctx)
	reason, err := probe(ctx, t)
	r := classify(ctx, start, err)
	if r.Outcome == OK {
		r.Reason = reason
	}
	return r
}

func classify(ctx context.Context, start time.Time, err error) Result {
	d := probeSince(ctx, start)
	if err == nil {
		return Result{Outcome: OK, Reason: "ok", Duration: d}
	}
	return classifyErr(ctx, d, err)
}

func classifyErr(ctx context.Context, d time.Duration, err error) Result {
	var le errLocal
	switch {
	case errors.As(err, &le):
		return Result{Outcome: Error, Reason: le.Error(), Duration: d}
	case ctx.Err() == context.DeadlineExceeded, errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, os.ErrDeadlineExceeded), isTimeout(err):
		return Result{Outcome: Timeout, Reason: "timeout: " + shortErr(err), Duration: d}
	case ctx.Err() != nil:
		return Result{Outcome: Error, Reason: "canceled", Duration: d}
	default:
		return Result{Outcome: Fail, Reason: shortErr(err), Duration: d}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// shortErr drops the address noise of a net.OpError ("dial tcp 127.0.0.1:1->...: ")
// at the top of err and keeps the cause, which is what an operator reads in /status.
func shortErr(err error) string {
	switch e := err.(type) {
	case *net.OpError:
		if e.Err != nil {
			return e.Op + ": " + shortErr(e.Err)
		}
	case *os.SyscallError:
		return e.Err.Error()
	}
	return err.Error()
}
