package health

import (
	"context"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"
)

func TestProbeCtx(t *testing.T) {
	t.Run("deadline passes", func(t *testing.T) {
		c := newProbeCtx(context.Background(), time.Now(), 10*time.Millisecond)
		defer c.release()
		<-c.Done()
		if c.Err() != context.DeadlineExceeded {
			t.Errorf("err %v", c.Err())
		}
	})
	t.Run("parent canceled", func(t *testing.T) {
		parent, cancel := context.WithCancel(context.Background())
		c := newProbeCtx(parent, time.Now(), time.Hour)
		defer c.release()
		done := c.Done()
		cancel()
		<-done
		if c.Err() != context.Canceled {
			t.Errorf("err %v", c.Err())
		}
	})
	t.Run("Err without Done", func(t *testing.T) {
		c := newProbeCtx(context.Background(), time.Now(), -time.Second)
		if c.Err() != context.DeadlineExceeded {
			t.Errorf("err %v", c.Err())
		}
		select {
		case <-c.Done():
		default:
			t.Error("Done open after Err reported the deadline")
		}
	})
	t.Run("child context", func(t *testing.T) {
		c := newProbeCtx(context.Background(), time.Now(), 10*time.Millisecond)
		defer c.release()
		child, cancel := context.WithCancel(c)
		defer cancel()
		<-child.Done()
		if child.Err() != context.DeadlineExceeded {
			t.Errorf("child err %v", child.Err())
		}
	})
}

func TestTCPCheckerIPv6(t *testing.T) {
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no IPv6 loopback: %v", err)
		}
		t.Skipf("no IPv6 loopback: %v", err)
	}
	defer ln.Close()
	go acceptClose(ln)
	tg := Target{Real: addrOf(ln.Addr()), Spec: spec(TCP, time.Second)}
	d := Dialer{Source6: netip.MustParseAddr("::1")}
	if r := probeOnce(t, tg, d); r.Outcome != OK {
		t.Errorf("v6 with a bound source: %s %s", r.Outcome, r.Reason)
	}
	tg.Spec.Type = HTTP
	if r := probeOnce(t, tg, d); r.Outcome != Fail {
		t.Errorf("v6 http to a closing listener: %s %s", r.Outcome, r.Reason)
	}
}
