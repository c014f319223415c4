package health

import (
	"context"
	"os"
	"runtime"
	"sync/atomic"
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

// TestLongRunNoLeaks runs every checker against misbehaving servers for many rounds
// and checks that goroutines and file descriptors come back to where they were.
func TestLongRunNoLeaks(t *testing.T) {
	pki := newPKI(t)
	slowResp := "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	wrongID := func(q *dns.Msg, _ []byte) []byte { return answer(q, func(r *dns.Msg) { r.Id++ }) }
	iv, to := 50*time.Millisecond, 30*time.Millisecond
	sp := func(typ Type, f func(*Spec)) Spec {
		s := Spec{Type: typ, Interval: iv, Timeout: to, Rise: 2, Fall: 2}
		if f != nil {
			f(&s)
		}
		return s
	}
	plain := httpServer(t, nil)
	targets := []Target{
		{Real: serve(t, silent), Spec: sp(TCP, nil)},
		{Real: closedPort(t), Spec: sp(TCP, nil)},
		{Real: serve(t, silent), Spec: sp(HTTP, nil)},
		{Real: serve(t, slowly(slowResp, 10*time.Millisecond)), Spec: sp(HTTP, nil)},
		{Real: serve(t, reset), Spec: sp(HTTP, nil)},
		{Real: serve(t, garbage), Spec: sp(HTTP, nil)},
		{Real: serve(t, huge(false)), Spec: sp(HTTP, func(s *Spec) { s.HTTP.Body = "needle" })},
		{Real: serve(t, huge(true)), Spec: sp(HTTP, nil)},
		{Real: plain, Spec: sp(HTTP, func(s *Spec) { s.HTTP.Path = "/redirect"; s.HTTP.FollowRedirects = true })},
		{Real: httpServer(t, tlsConfig(pki.self)), Spec: sp(HTTPS, func(s *Spec) { s.HTTP.CAFile = pki.caFile })},
		{Real: httpServer(t, tlsConfig(pki.good)), Spec: sp(HTTPS, func(s *Spec) { s.HTTP.CAFile = pki.caFile })},
		{Real: serve(t, silent), Spec: sp(HTTPS, func(s *Spec) { s.HTTP.Insecure = true })},
		{Real: proxyServer(t, nil), Spec: sp(HTTP, func(s *Spec) { s.HTTP.ProxyURL = "http://" + plain.String() + "/" })},
		{Real: serve(t, silent), Spec: sp(HTTP, func(s *Spec) { s.HTTP.ProxyURL = "https://" + plain.String() + "/" })},
		{Real: rawUDP(t, wrongID), Spec: sp(DNS, func(s *Spec) { s.DNS = DNSParams{Name: "ok.test", QType: dns.TypeA} })},
		{Real: rawTCP(t, wrongID), Spec: sp(DNS, func(s *Spec) { s.DNS = DNSParams{Name: "ok.test", QType: dns.TypeA, TCP: true} })},
		{Real: dnsServer(t, false), Spec: sp(DNS, func(s *Spec) { s.DNS = DNSParams{Name: "silent.test", QType: dns.TypeA} })},
		{Real: serve(t, silent), Spec: sp(Syslog, func(s *Spec) { s.Syslog.TCP = true })},
		{Real: closedPort(t), Spec: sp(Syslog, nil)},
	}

	var done atomic.Int64
	s, err := New(Options{MinRecheck: 5 * time.Millisecond, Concurrency: 8})
	if err != nil {
		t.Fatal(err)
	}
	s.opts.afterComplete = func(*entry, Result) { done.Add(1) }
	if err := s.Update(targets); err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	g0, fd0 := runtime.NumGoroutine(), openFDs(t)

	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { s.Run(ctx); close(stopped) }()
	go func() {
		for range s.Changes() {
		}
	}()
	rounds := int64(40)
	for done.Load() < rounds*int64(len(targets)) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-stopped

	// Servers notice closed connections in their own time: settle, then compare.
	var g, fd int
	for i := 0; i < 500; i++ {
		g, fd = runtime.NumGoroutine(), openFDs(t)
		if g <= g0 && fd <= fd0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("%d probes; goroutines %d -> %d, fds %d -> %d", done.Load(), g0, g, fd0, fd)
	if g > g0 || fd > fd0 {
		buf := make([]byte, 1<<20)
		ents, _ := os.ReadDir("/proc/self/fd")
		var links []string
		for _, e := range ents {
			l, _ := os.Readlink("/proc/self/fd/" + e.Name())
			links = append(links, l)
		}
		t.Errorf("leak: goroutines %d -> %d, fds %d -> %d %v\n%s", g0, g, fd0, fd, links, buf[:runtime.Stack(buf, true)])
	}
	for _, st := range s.Snapshot() {
		if st.Last.Outcome == OK && st.State == Unknown {
			continue
		}
		t.Logf("%-40s %-7s %s", st.Target, st.State, st.Last.Reason)
	}
}
