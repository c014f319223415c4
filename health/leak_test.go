package health

import (
	"context"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func openFDs(t testing.TB) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// fdLinks maps each open descriptor to what it is ("socket:[123]", a path).
func fdLinks() map[string]string {
	ents, _ := os.ReadDir("/proc/self/fd")
	m := map[string]string{}
	for _, e := range ents {
		m[e.Name()], _ = os.Readlink("/proc/self/fd/" + e.Name())
	}
	return m
}

// TestLongRunNoLeaks runs every checker, against servers that behave and servers
// that misbehave, through the scheduler for thousands of probes. It samples
// goroutines and open file descriptors while the probes run and again at the end.
//
// While running, what is held is bounded by the probes in flight, not by the probes
// made: the scheduler's workers, and per probe in flight its socket and the
// in-process servers' side of it (a proxied probe holds two connections at the
// proxy and one at the target) with a goroutine or so each. A leak of one
// goroutine or descriptor in fifty probes passes that bound before the run is over,
// even one that would be released at shutdown. At the end, with the scheduler
// stopped and the servers' connections wound down, both counts must be back where
// they started: no slack at all.
func TestLongRunNoLeaks(t *testing.T) {
	const (
		probes      = 5000
		concurrency = 16
		minPerTgt   = 20 // every target is probed at least this often
		// Per probe in flight: the probe's socket, the server's side, a proxy's
		// second connection and the target's side of it.
		fdsPerProbe = 4
		// Per probe in flight: a connection goroutine at each server it touches,
		// net/http's background reader, a proxy's copying goroutine, a
		// context.AfterFunc firing on a deadline.
		goroutinesPerProbe = 6
		// Servers that dawdle (stall, slowly, huge) keep their side a moment
		// after the probe has gone; the scheduler adds its workers and two more.
		fixedSlack = 64
	)
	pki := newPKI(t)
	slowResp := "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	okReply := func(q *dns.Msg) []byte { return answer(q, func(*dns.Msg) {}) }
	wrongID := func(q *dns.Msg) []byte { return answer(q, func(r *dns.Msg) { r.Id++ }) }
	servfail := func(q *dns.Msg) []byte { return answer(q, func(r *dns.Msg) { r.Rcode = dns.RcodeServerFailure }) }
	garbageDNS := func(*dns.Msg) []byte { return []byte("\x00\x00garbage that is no DNS message") }
	dnsOver := func(tcp bool, name string) func(*Spec) {
		return func(s *Spec) { s.DNS = DNSParams{Name: name, QType: dns.TypeA, TCP: tcp} }
	}
	ca := func(s *Spec) { s.HTTP.CAFile = pki.caFile }
	stalled := stall(t, 50*time.Millisecond)
	plain := httpServer(t, nil)
	tlsGood := httpServer(t, tlsConfig(pki.good))
	type kind struct {
		real netip.AddrPort
		typ  Type
		f    func(*Spec)
	}
	kinds := []kind{
		// TCP
		{serve(t, silent), TCP, nil},
		{serve(t, reset), TCP, nil},
		{closedPort(t), TCP, nil},
		// HTTP
		{plain, HTTP, nil},
		{plain, HTTP, func(s *Spec) { s.HTTP.Path = "/down" }},
		{plain, HTTP, func(s *Spec) { s.HTTP.Path = "/redirect"; s.HTTP.FollowRedirects = true }},
		{serve(t, silent), HTTP, nil},
		{serve(t, stalled), HTTP, nil},
		{serve(t, slowly(slowResp, 10*time.Millisecond)), HTTP, nil},
		{serve(t, reset), HTTP, nil},
		{serve(t, garbage), HTTP, nil},
		{serve(t, huge(false)), HTTP, func(s *Spec) { s.HTTP.Body = "needle" }},
		{serve(t, huge(true)), HTTP, nil},
		{closedPort(t), HTTP, nil},
		// HTTPS: trusted, bad certificate, wrong name, never answers, plain server
		{tlsGood, HTTPS, ca},
		{httpServer(t, tlsConfig(pki.self)), HTTPS, ca},
		{tlsGood, HTTPS, func(s *Spec) { ca(s); s.HTTP.SNI = "other.test" }},
		{serve(t, silent), HTTPS, func(s *Spec) { s.HTTP.Insecure = true }},
		{plain, HTTPS, ca},
		// HTTP through a proxy: absolute URI, CONNECT and TLS, a proxy that never answers
		{proxyServer(t, nil), HTTP, func(s *Spec) { s.HTTP.ProxyURL = "http://" + plain.String() + "/" }},
		{proxyServer(t, nil), HTTP, func(s *Spec) { ca(s); s.HTTP.ProxyURL = "https://" + tlsGood.String() + "/" }},
		{serve(t, silent), HTTP, func(s *Spec) { s.HTTP.ProxyURL = "https://" + plain.String() + "/" }},
		// DNS over UDP
		{rawUDP(t, okReply), DNS, dnsOver(false, "ok.test")},
		{rawUDP(t, wrongID), DNS, dnsOver(false, "ok.test")},
		{rawUDP(t, servfail), DNS, dnsOver(false, "ok.test")},
		{rawUDP(t, garbageDNS), DNS, dnsOver(false, "ok.test")},
		{dnsServer(t, false), DNS, dnsOver(false, "silent.test")},
		// DNS over TCP
		{dnsServer(t, true), DNS, dnsOver(true, "ok.test")},
		{rawTCP(t, wrongID), DNS, dnsOver(true, "ok.test")},
		{tcpDNS(t, func(c net.Conn, q *dns.Msg) {
			out := okReply(q)
			dribble(c, frame(out, len(out)), 5*time.Millisecond)
		}), DNS, dnsOver(true, "ok.test")},
		{tcpDNS(t, func(c net.Conn, _ *dns.Msg) { reset(c) }), DNS, dnsOver(true, "ok.test")},
		{tcpDNS(t, func(c net.Conn, q *dns.Msg) {
			out := okReply(q)
			c.Write(frame(out, len(out)+100))
			io.Copy(io.Discard, c)
		}), DNS, dnsOver(true, "ok.test")},
		{serve(t, stalled), DNS, dnsOver(true, "ok.test")},
		// Syslog
		{serve(t, silent), Syslog, func(s *Spec) { s.Syslog.TCP = true }},
		{serve(t, stalled), Syslog, func(s *Spec) { s.Syslog.TCP = true }},
		{serve(t, reset), Syslog, func(s *Spec) { s.Syslog.TCP = true }},
		{closedPort(t), Syslog, func(s *Spec) { s.Syslog.TCP = true }},
		{rawPacket(t, func([]byte) []byte { return nil }), Syslog, nil},
		{closedPort(t), Syslog, nil},
	}

	// Each kind twice: with a timeout that lets most exchanges finish, and with
	// one that cuts many of them short.
	var targets []Target
	for _, tm := range [][2]time.Duration{{25 * time.Millisecond, 20 * time.Millisecond}, {20 * time.Millisecond, 5 * time.Millisecond}} {
		for _, k := range kinds {
			sp := Spec{Type: k.typ, Interval: tm[0], Timeout: tm[1], Rise: 2, Fall: 2}
			if k.f != nil {
				k.f(&sp)
			}
			targets = append(targets, Target{Real: k.real, Spec: sp})
		}
	}

	// Counted under the scheduler's lock; read after Run has returned.
	perTarget := map[*entry]int{}
	var done int
	s, err := New(Options{MinRecheck: 5 * time.Millisecond, Concurrency: concurrency})
	if err != nil {
		t.Fatal(err)
	}
	s.opts.afterComplete = func(e *entry, _ Result) { perTarget[e]++; done++ }
	if err := s.Update(targets); err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	g0, fd0 := runtime.NumGoroutine(), openFDs(t)
	links0 := fdLinks()
	gMax, fdMax := concurrency*goroutinesPerProbe+fixedSlack, concurrency*fdsPerProbe+fixedSlack

	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { s.Run(ctx); close(stopped) }()
	go func() {
		for range s.Changes() {
		}
	}()
	var samples, gPeak, fdPeak int
	for {
		s.mu.Lock()
		n := done
		s.mu.Unlock()
		if n >= probes {
			break
		}
		g, fd := runtime.NumGoroutine(), openFDs(t)
		samples++
		gPeak, fdPeak = max(gPeak, g), max(fdPeak, fd)
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-stopped
	t.Logf("%d probes of %d targets; while running (%d samples): goroutines %d -> peak %d, fds %d -> peak %d",
		done, len(targets), samples, g0, gPeak, fd0, fdPeak)
	if gPeak > g0+gMax || fdPeak > fd0+fdMax {
		t.Errorf("while running: goroutines peaked at %d (start %d, bound +%d), fds at %d (start %d, bound +%d)",
			gPeak, g0, gMax, fdPeak, fd0, fdMax)
	}
	fewest := probes
	for e, n := range perTarget {
		fewest = min(fewest, n)
		if n < minPerTgt {
			t.Errorf("%s: %d probes, want at least %d", e.target(), n, minPerTgt)
		}
	}
	t.Logf("fewest probes of one target: %d", fewest)
	if len(perTarget) != len(targets) {
		t.Errorf("%d of %d targets probed", len(perTarget), len(targets))
	}

	// Servers notice closed connections in their own time: let them settle, then
	// compare. The collections are for net's pool of splice pipes (the test
	// proxy copies TCP to TCP): pooled pipes are closed only when a GC drops them.
	var g, fd int
	settle := time.Now()
	for range 500 {
		runtime.GC()
		g, fd = runtime.NumGoroutine(), openFDs(t)
		if g <= g0 && fd <= fd0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("at the end, after %s: goroutines %d -> %d, fds %d -> %d", time.Since(settle).Round(time.Millisecond), g0, g, fd0, fd)
	if g > g0 || fd > fd0 {
		var extra []string
		for fd, l := range fdLinks() {
			if links0[fd] != l {
				extra = append(extra, fd+" -> "+l)
			}
		}
		sort.Strings(extra)
		buf := make([]byte, 1<<20)
		t.Errorf("leak: goroutines %d -> %d, fds %d -> %d; new descriptors %v\n%s", g0, g, fd0, fd, extra, buf[:runtime.Stack(buf, true)])
	}
	if testing.Verbose() {
		for _, st := range s.Snapshot() {
			t.Logf("%-60s %-7s %s", st.Target, st.State, strings.TrimSpace(st.Last.Reason))
		}
	}
}
