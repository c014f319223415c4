package health

import (
	"context"
	"fmt"
)

// Checker runs one kind of probe. Check must honour ctx's deadline and
// cancellation, bound every read, and release every socket before it returns.
type Checker interface {
	Check(ctx context.Context, t Target) Result
}

// NewChecker builds the checker for a Spec. The Spec must be valid (Spec.Validate).
// A checker keeps only what the Spec implies (parsed status codes, a loaded CA
// pool), so one checker serves every Target with the same Spec.
func NewChecker(s Spec, d Dialer) (Checker, error) {
	switch s.Type {
	case TCP:
		return &tcpChecker{d: d}, nil
	case HTTP, HTTPS:
		return newHTTPChecker(s, d)
	case DNS:
		return newDNSChecker(s, d), nil
	case Syslog:
		return newSyslogChecker(s, d), nil
	}
	return nil, fmt.Errorf("no checker for type %s", s.Type)
}
