package health

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// probeSlotted runs one probe from d's sources as the scheduler does, holding
// one of slots (and so using its socket pool).
func probeSlotted(t testing.TB, slots *cpuSlots, d Dialer, tg Target) Result {
	t.Helper()
	c, err := NewChecker(tg.Spec, d)
	if err != nil {
		t.Fatalf("checker: %v", err)
	}
	slots.acquire()
	defer slots.release()
	ctx := newProbeCtx(context.Background(), time.Now(), tg.Spec.Timeout)
	ctx.slots = slots
	defer ctx.release()
	return c.Check(ctx, tg)
}

// idleSockets lists the pool's idle sockets of family bound to src (invalid:
// unbound).
func idleSockets(p *sockPool, family int, src netip.Addr) []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	var fds []int
	if b := p.bucket(family, src); b != nil {
		for _, s := range b.socks {
			fds = append(fds, s.fd)
		}
	}
	return fds
}

// deadReal returns a loopback listener whose accept queue is full (backlog 0,
// filled by connections nobody accepts), so that it drops SYNs: a connect to
// it stays in progress until the probe's timeout.
func deadReal(t testing.TB) netip.AddrPort {
	t.Helper()
	var fds []int
	t.Cleanup(func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	})
	ln, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	fds = append(fds, ln)
	if err := unix.Bind(ln, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(ln, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(ln)
	if err != nil {
		t.Fatal(err)
	}
	for range 100 {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		fds = append(fds, fd)
		unix.Connect(fd, sa)
		// On loopback the handshake runs inside the first connect: the second
		// says EALREADY only when the listener dropped the SYN.
		if err := unix.Connect(fd, sa); err == unix.EALREADY {
			return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(sa.(*unix.SockaddrInet4).Port))
		}
	}
	t.Fatal("the listener's accept queue never filled")
	return netip.AddrPort{}
}

// TestSocketReuse: under the scheduler's slots a TCP probe's socket is kept
// and used again by the next probe, for a success and for a refusal, and each
// connection still ends with RST.
func TestSocketReuse(t *testing.T) {
	slots := newCPUSlots(1)
	t.Cleanup(slots.socks.close)
	srv, seen := closeSeen(t, func(net.Conn) {})
	tcp := spec(TCP, time.Second)

	r := probeSlotted(t, slots, Dialer{}, Target{Real: srv, Spec: tcp})
	if r.Outcome != OK {
		t.Fatalf("first probe: %s (%q)", r.Outcome, r.Reason)
	}
	if err := <-seen; !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("the server saw the probe's connection end with %v, want ECONNRESET (RST)", err)
	}
	kept := idleSockets(&slots.socks, unix.AF_INET, netip.Addr{})
	if len(kept) != 1 {
		t.Fatalf("after a successful probe the pool holds %v, want one socket", kept)
	}

	steps := []struct {
		name string
		real netip.AddrPort
		want Outcome
	}{
		{"accepts", srv, OK},
		{"refused", closedPort(t), Fail},
		{"accepts after a refusal", srv, OK},
	}
	for _, st := range steps {
		r := probeSlotted(t, slots, Dialer{}, Target{Real: st.real, Spec: tcp})
		if r.Outcome != st.want {
			t.Fatalf("%s: %s (%q), want %s", st.name, r.Outcome, r.Reason, st.want)
		}
		if got := idleSockets(&slots.socks, unix.AF_INET, netip.Addr{}); len(got) != 1 || got[0] != kept[0] {
			t.Fatalf("%s: the pool holds %v, want the same socket %d", st.name, got, kept[0])
		}
	}
}

// TestSocketReuseSourcedMarked: sockets bound to a source address (a
// daemon's health_source, tunnelled checks) are kept too. A kept socket stays
// bound: the next probe on it still leaves from that source. Its mark is set
// again when the next probe's differs (per real for tunnelled checks), and an
// unbound probe never gets it.
func TestSocketReuseSourcedMarked(t *testing.T) {
	slots := newCPUSlots(1)
	t.Cleanup(slots.socks.close)
	srv, seen := sourceSeen(t)
	src := netip.MustParseAddr("127.0.0.2")
	d := Dialer{Source4: src}
	var kept int
	for i, mark := range []uint32{77, 78, 78, 0} {
		tcp := spec(TCP, time.Second)
		tcp.Mark = mark
		r := probeSlotted(t, slots, d, Target{Real: srv, Spec: tcp})
		if r.Outcome == Error && os.Geteuid() != 0 && os.Getenv("CI") != "true" {
			t.Skipf("SO_MARK needs CAP_NET_ADMIN: %s", r.Reason)
		}
		if r.Outcome != OK {
			t.Fatalf("probe %d (mark %d): %s (%q)", i, mark, r.Outcome, r.Reason)
		}
		if from := <-seen; from != src.String() {
			t.Errorf("probe %d (mark %d) came from %s, want %s", i, mark, from, src)
		}
		got := idleSockets(&slots.socks, unix.AF_INET, src)
		if len(got) != 1 || (i > 0 && got[0] != kept) {
			t.Fatalf("probe %d (mark %d): the pool holds %v for %s, want the one socket %d", i, mark, got, src, kept)
		}
		kept = got[0]
		// The mark the next probe would leave with, had it the same.
		if m, err := unix.GetsockoptInt(kept, unix.SOL_SOCKET, unix.SO_MARK); err != nil || uint32(m) != mark {
			t.Errorf("probe %d: the kept socket's mark is %d (%v), want %d", i, m, err, mark)
		}
	}
	if r := probeSlotted(t, slots, Dialer{}, Target{Real: srv, Spec: spec(TCP, time.Second)}); r.Outcome != OK {
		t.Fatalf("unbound probe: %s (%q)", r.Outcome, r.Reason)
	}
	if from := <-seen; from != "127.0.0.1" {
		t.Errorf("an unbound probe came from %s: it took the socket bound to %s", from, src)
	}
	if got := idleSockets(&slots.socks, unix.AF_INET, netip.Addr{}); len(got) != 1 || got[0] == kept {
		t.Errorf("unbound sockets %v, want one other than %d", got, kept)
	}
}

// TestReusedSocketStaleError: disconnecting leaves ECONNRESET in the socket's
// sk_err (the RST it sent), and soError counts ECONNRESET as success (the
// peer accepted and closed first). Were that error still there when the
// socket's next connect waits in the netpoller, a real that drops SYNs would
// pass its check. The kernel clears it as it connects again (tcp_connect_init):
// the probe of the dead real must time out.
func TestReusedSocketStaleError(t *testing.T) {
	slots := newCPUSlots(1)
	t.Cleanup(slots.socks.close)
	tcp := spec(TCP, 100*time.Millisecond)
	if r := probeSlotted(t, slots, Dialer{}, Target{Real: serve(t, silent), Spec: tcp}); r.Outcome != OK {
		t.Fatalf("probe of a live real: %s (%q)", r.Outcome, r.Reason)
	}
	kept := idleSockets(&slots.socks, unix.AF_INET, netip.Addr{})
	if len(kept) != 1 {
		t.Fatalf("pool holds %v, want one socket", kept)
	}
	pfd := []unix.PollFd{{Fd: int32(kept[0]), Events: unix.POLLOUT}}
	if _, err := unix.Poll(pfd, 0); err != nil {
		t.Fatal(err)
	}
	if pfd[0].Revents&unix.POLLERR == 0 {
		t.Fatalf("the kept socket polls %#x, want POLLERR (the stale ECONNRESET): the test no longer sets up what it checks", pfd[0].Revents)
	}

	r := probeSlotted(t, slots, Dialer{}, Target{Real: deadReal(t), Spec: tcp})
	if r.Outcome != Timeout || !strings.Contains(r.Reason, "timeout") {
		t.Fatalf("probe of a real that drops SYNs on a reused socket: %s (%q), want a timeout", r.Outcome, r.Reason)
	}
	if got := idleSockets(&slots.socks, unix.AF_INET, netip.Addr{}); len(got) != 0 {
		t.Errorf("a socket that waited in the netpoller went back to the pool: %v", got)
	}
}

// TestSockPoolBounds: the pool keeps at most max sockets per family, closes
// the rest, and closes all when the scheduler stops.
func TestSockPoolBounds(t *testing.T) {
	before := openFDs(t)
	p := &sockPool{max: 2}
	for range 3 {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		p.put(unix.AF_INET, netip.Addr{}, 0, fd)
	}
	if n := len(idleSockets(p, unix.AF_INET, netip.Addr{})); n != 2 {
		t.Errorf("pool of 2 keeps %d sockets", n)
	}
	if got := p.get(unix.AF_INET6, netip.Addr{}, 0); got != -1 {
		t.Errorf("an IPv4 socket came out for IPv6: %d", got)
	}
	if got := p.get(unix.AF_INET, netip.MustParseAddr("127.0.0.2"), 0); got != -1 {
		t.Errorf("an unbound socket came out for a source address: %d", got)
	}
	p.close()
	if after := openFDs(t); after != before {
		t.Errorf("descriptors: %d before, %d after close", before, after)
	}

	s, err := New(Options{CPUSlots: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Update([]Target{{Real: serve(t, silent), Spec: with(spec(TCP, 5*time.Millisecond), func(s *Spec) { s.Interval = 10 * time.Millisecond })}}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	if batch := <-s.Changes(); batch[0].State != Up {
		t.Fatalf("first change %+v, want up", batch[0])
	}
	cancel()
	<-done
	if n := len(idleSockets(&s.slots.socks, unix.AF_INET, netip.Addr{})); n != 0 || !s.slots.socks.closed {
		t.Errorf("after Run returned the pool holds %d sockets (closed %v)", n, s.slots.socks.closed)
	}
}
