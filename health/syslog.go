package health

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"
)

// syslogChecker delivers one syslog line, as the seed did:
// "<PRI>timestamp host kglb-health[pid]: probe message".
//
// What it can prove differs by transport, and the difference is real:
//   - TCP: the server accepted the connection and the line went into the kernel's send
//     buffer. A server that accepts and then drops lines is not caught, nor one that
//     never reads (its kernel takes the line into its receive buffer). One that resets
//     right after accept is caught only if the reset arrives before the line is
//     written: the handshake completes before accept, so the two race.
//   - UDP: a datagram is never acknowledged. On a connected socket the kernel reports
//     an ICMP port unreachable (nothing listening) as ECONNREFUSED on a later read,
//     and a host or network unreachable likewise; the probe waits a short while for
//     such an error. No error proves only that no ICMP error came back in that time:
//     a lost datagram, a down host that sends no ICMP, or a daemon that discards the
//     line all look healthy.
type syslogChecker struct {
	d   Dialer
	p   SyslogParams
	tag string
}

// udpICMPWait bounds how long a UDP syslog probe waits for an ICMP error.
const udpICMPWait = 200 * time.Millisecond

func newSyslogChecker(s Spec, d Dialer) *syslogChecker {
	c := &syslogChecker{d: d, p: s.Syslog}
	if c.p.Priority == 0 {
		c.p.Priority = 14
	}
	host, _ := os.Hostname()
	if host == "" {
		host = "-"
	}
	msg := strings.NewReplacer("\r", " ", "\n", " ").Replace(c.p.Message) // one line, whatever the caller gave
	if msg == "" {
		msg = "probe message"
	}
	c.tag = fmt.Sprintf("%s kglb-health[%d]: %s", host, os.Getpid(), msg)
	return c
}

func (c *syslogChecker) Check(ctx context.Context, t Target) Result {
	return runProbe(ctx, t, c.probe)
}

func (c *syslogChecker) probe(ctx context.Context, t Target) (string, error) {
	conn, stop, err := c.d.dialBounded(ctx, c.p.TCP, t)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	defer stop()
	dl, ok := ctx.Deadline()
	msg := fmt.Sprintf("<%d>%s %s\n", c.p.Priority, time.Now().UTC().Format(time.RFC3339), c.tag)
	if _, err := conn.Write([]byte(msg)); err != nil {
		return "", fmt.Errorf("write: %w", err)
	}
	if c.p.TCP {
		return "line written", nil
	}
	wait := time.Now().Add(udpICMPWait)
	if ok && dl.Before(wait) {
		// Leave the probe a margin so that no ICMP error is an OK, not a timeout.
		wait = time.Now().Add(time.Until(dl) / 2)
	}
	conn.SetReadDeadline(wait)
	var buf [512]byte
	_, err = conn.Read(buf[:])
	switch {
	case err == nil:
		return "datagram sent, server replied", nil
	case errors.Is(err, syscall.ECONNREFUSED):
		return "", errors.New("ICMP port unreachable: nothing listening")
	case isTimeout(err) && ctx.Err() == nil:
		return "datagram sent, no ICMP error", nil
	default:
		return "", fmt.Errorf("after write: %w", err)
	}
}
