package health

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// probeOnce runs one probe the way the scheduler does: a probe context with the
// spec's timeout under a parent context.
func probeOnce(t testing.TB, tg Target, d Dialer) Result {
	t.Helper()
	if err := tg.Spec.Validate(); err != nil {
		t.Fatalf("spec: %v", err)
	}
	c, err := NewChecker(tg.Spec, d)
	if err != nil {
		t.Fatalf("checker: %v", err)
	}
	ctx := newProbeCtx(context.Background(), time.Now(), tg.Spec.Timeout)
	defer ctx.release()
	return c.Check(ctx, tg)
}

type checkCase struct {
	name       string
	real       netip.AddrPort
	spec       Spec
	want       Outcome
	wantReason string // substring
}

func runCases(t *testing.T, cases []checkCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := probeOnce(t, Target{Real: tc.real, Spec: tc.spec}, Dialer{})
			if r.Outcome != tc.want || !strings.Contains(r.Reason, tc.wantReason) {
				t.Errorf("got %s (%q), want %s (%q)", r.Outcome, r.Reason, tc.want, tc.wantReason)
			}
			// A probe that ran out of time must come back and say so. How soon
			// it comes back is for the benchmarks: a hang shows as the go test
			// timeout, not as a timed assertion here.
			if tc.want == Timeout && !strings.HasPrefix(r.Reason, "timeout") {
				t.Errorf("timeout reason %q does not say timeout", r.Reason)
			}
			if r.Duration <= 0 {
				t.Errorf("duration %s", r.Duration)
			}
		})
	}
}

func spec(typ Type, timeout time.Duration) Spec {
	return Spec{Type: typ, Interval: 10 * time.Second, Timeout: timeout, Rise: 1, Fall: 1}
}

func TestTCPChecker(t *testing.T) {
	ok := serve(t, silent)
	runCases(t, []checkCase{
		{name: "accepts", real: ok, spec: spec(TCP, time.Second), want: OK, wantReason: "connected"},
		{name: "accepts then resets", real: serve(t, reset), spec: spec(TCP, time.Second), want: OK},
		{name: "refused", real: closedPort(t), spec: spec(TCP, time.Second), want: Fail, wantReason: "connection refused"},
		{name: "port override", real: netip.AddrPortFrom(ok.Addr(), 1), spec: func() Spec { s := spec(TCP, time.Second); s.Port = ok.Port(); return s }(), want: OK},
	})
}

// TestTCPCheckerTimeout: a full accept queue drops SYNs, so the connect hangs.
func TestTCPCheckerTimeout(t *testing.T) {
	ln := listen(t) // never accepts
	a := addrOf(ln.Addr())
	// Fill the accept queue (backlog) with connections nobody accepts.
	var held []Result
	for range 5000 {
		r := probeOnce(t, Target{Real: a, Spec: spec(TCP, 50*time.Millisecond)}, Dialer{})
		if r.Outcome == Timeout {
			if !strings.Contains(r.Reason, "timeout") {
				t.Errorf("timeout reason %q", r.Reason)
			}
			return
		}
		held = append(held, r)
	}
	t.Fatalf("no timeout after %d connects to a listener that never accepts", len(held))
}

func httpSpec(typ Type, path string, timeout time.Duration) Spec {
	s := spec(typ, timeout)
	s.HTTP.Path = path
	return s
}

func with(s Spec, f func(*Spec)) Spec { f(&s); return s }

func TestHTTPChecker(t *testing.T) {
	srv := httpServer(t, nil)
	slowResp := "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	cases := []checkCase{
		{name: "200", real: srv, spec: httpSpec(HTTP, "/", time.Second), want: OK, wantReason: "HTTP 200"},
		{name: "503 is a failure", real: srv, spec: httpSpec(HTTP, "/down", time.Second), want: Fail, wantReason: "HTTP 503"},
		{name: "503 expected", real: srv, spec: with(httpSpec(HTTP, "/down", time.Second), func(s *Spec) { s.HTTP.Status = StatusCodes(200, 200).With(500, 599) }), want: OK},
		{name: "404", real: srv, spec: httpSpec(HTTP, "/nope", time.Second), want: Fail, wantReason: "HTTP 404"},
		{name: "redirect not followed by default", real: srv, spec: httpSpec(HTTP, "/redirect", time.Second), want: Fail, wantReason: "HTTP 302"},
		{name: "redirect accepted as a status", real: srv, spec: with(httpSpec(HTTP, "/redirect", time.Second), func(s *Spec) { s.HTTP.Status = StatusCodes(300, 399) }), want: OK},
		{name: "redirect followed", real: srv, spec: with(httpSpec(HTTP, "/redirect", time.Second), func(s *Spec) { s.HTTP.FollowRedirects = true }), want: OK, wantReason: "HTTP 200"},
		{name: "redirect to another host", real: srv, spec: with(httpSpec(HTTP, "/away", time.Second), func(s *Spec) { s.HTTP.FollowRedirects = true }), want: Fail, wantReason: "another host"},
		{name: "redirect loop", real: srv, spec: with(httpSpec(HTTP, "/loop", time.Second), func(s *Spec) { s.HTTP.FollowRedirects = true }), want: Fail, wantReason: "redirects"},
		{name: "body match", real: srv, spec: with(httpSpec(HTTP, "/", time.Second), func(s *Spec) { s.HTTP.Body = "healthy" }), want: OK},
		{name: "body mismatch", real: srv, spec: with(httpSpec(HTTP, "/", time.Second), func(s *Spec) { s.HTTP.Body = "sick" }), want: Fail, wantReason: "body lacks"},
		{name: "body match beyond the bound", real: srv, spec: with(httpSpec(HTTP, "/big", time.Second), func(s *Spec) { s.HTTP.Body = "needle" }), want: Fail, wantReason: "body lacks"},
		{name: "body match within a raised bound", real: srv, spec: with(httpSpec(HTTP, "/big", time.Second), func(s *Spec) { s.HTTP.Body = "needle"; s.HTTP.MaxBody = 2 << 20 }), want: OK},
		{name: "host header", real: srv, spec: with(httpSpec(HTTP, "/", time.Second), func(s *Spec) { s.HTTP.Host = "web.example"; s.HTTP.Body = "healthy as web.example" }), want: OK},
		{name: "extra headers", real: srv, spec: with(httpSpec(HTTP, "/", time.Second), func(s *Spec) {
			s.HTTP.Headers = CanonicalHeaders(map[string]string{"x-want": "teapot"})
			s.HTTP.Status = StatusCodes(418, 418)
		}), want: OK, wantReason: "HTTP 418"},
		{name: "HEAD", real: srv, spec: with(httpSpec(HTTP, "/", time.Second), func(s *Spec) { s.HTTP.Method = "HEAD" }), want: OK},
		{name: "refused", real: closedPort(t), spec: httpSpec(HTTP, "/", time.Second), want: Fail, wantReason: "refused"},
		{name: "accepts and never answers", real: serve(t, silent), spec: httpSpec(HTTP, "/", 100*time.Millisecond), want: Timeout},
		{name: "answers byte by byte", real: serve(t, slowly(slowResp, 20*time.Millisecond)), spec: httpSpec(HTTP, "/", 200*time.Millisecond), want: Timeout},
		{name: "slow but within the timeout", real: serve(t, slowly(slowResp, time.Millisecond)), spec: httpSpec(HTTP, "/", 2*time.Second), want: OK},
		{name: "reset", real: serve(t, reset), spec: httpSpec(HTTP, "/", time.Second), want: Fail},
		{name: "garbage", real: serve(t, garbage), spec: httpSpec(HTTP, "/", time.Second), want: Fail, wantReason: "malformed HTTP"},
		{name: "endless body without body match", real: serve(t, huge(false)), spec: httpSpec(HTTP, "/", time.Second), want: OK},
		{name: "endless body with body match", real: serve(t, huge(false)), spec: with(httpSpec(HTTP, "/", 5*time.Second), func(s *Spec) { s.HTTP.Body = "needle" }), want: Fail, wantReason: "body lacks"},
		{name: "endless headers", real: serve(t, huge(true)), spec: httpSpec(HTTP, "/", 5*time.Second), want: Fail, wantReason: "too large"},
		{name: "plain http to a TLS server", real: httpServer(t, tlsConfig(newPKI(t).good)), spec: httpSpec(HTTP, "/", time.Second), want: Fail, wantReason: "HTTP 400"},
	}
	runCases(t, cases)
}

func TestHTTPSChecker(t *testing.T) {
	pki := newPKI(t)
	good := httpServer(t, tlsConfig(pki.good))
	self := httpServer(t, tlsConfig(pki.self))
	ca := func(s *Spec) { s.HTTP.CAFile = pki.caFile }
	runCases(t, []checkCase{
		{name: "trusted via ca file, IP name", real: good, spec: with(httpSpec(HTTPS, "/", time.Second), ca), want: OK, wantReason: "HTTP 200"},
		{name: "trusted via ca file, SNI name", real: good, spec: with(httpSpec(HTTPS, "/", time.Second), func(s *Spec) { ca(s); s.HTTP.SNI = "kglb.test" }), want: OK},
		{name: "host name used for verification", real: good, spec: with(httpSpec(HTTPS, "/", time.Second), func(s *Spec) { ca(s); s.HTTP.Host = "kglb.test:443" }), want: OK},
		{name: "wrong name", real: good, spec: with(httpSpec(HTTPS, "/", time.Second), func(s *Spec) { ca(s); s.HTTP.SNI = "other.test" }), want: Fail, wantReason: "certificate"},
		{name: "system roots do not trust the test CA", real: good, spec: httpSpec(HTTPS, "/", time.Second), want: Fail, wantReason: "certificate"},
		{name: "self-signed rejected", real: self, spec: with(httpSpec(HTTPS, "/", time.Second), ca), want: Fail, wantReason: "certificate"},
		{name: "self-signed with insecure", real: self, spec: with(httpSpec(HTTPS, "/", time.Second), func(s *Spec) { s.HTTP.Insecure = true }), want: OK},
		{name: "https to a plain server", real: httpServer(t, nil), spec: with(httpSpec(HTTPS, "/", time.Second), ca), want: Fail, wantReason: "tls"},
		{name: "TLS server never answers", real: serve(t, silent), spec: with(httpSpec(HTTPS, "/", 100*time.Millisecond), ca), want: Timeout},
	})
}

func TestHTTPProxyMode(t *testing.T) {
	pki := newPKI(t)
	plainTarget := httpServer(t, nil)
	tlsTarget := httpServer(t, tlsConfig(pki.good))
	proxy := proxyServer(t, nil)
	tlsProxy := proxyServer(t, tlsConfig(pki.good))
	via := func(u string) func(*Spec) {
		return func(s *Spec) { s.HTTP.ProxyURL = u; s.HTTP.CAFile = pki.caFile }
	}
	runCases(t, []checkCase{
		{name: "http URL through the proxy", real: proxy, spec: with(spec(HTTP, time.Second), via("http://"+plainTarget.String()+"/")), want: OK, wantReason: "HTTP 200"},
		{name: "http URL, target says 503", real: proxy, spec: with(spec(HTTP, time.Second), via("http://"+plainTarget.String()+"/down")), want: Fail, wantReason: "HTTP 503"},
		{name: "https URL with CONNECT", real: proxy, spec: with(spec(HTTP, time.Second), via("https://"+tlsTarget.String()+"/")), want: OK},
		{name: "https URL, body match", real: proxy, spec: with(spec(HTTP, time.Second), func(s *Spec) { via("https://" + tlsTarget.String() + "/")(s); s.HTTP.Body = "healthy" }), want: OK},
		{name: "CONNECT refused by the proxy", real: proxy, spec: with(spec(HTTP, time.Second), via("https://kglb.test:443/")), want: Fail, wantReason: "CONNECT: HTTP 403"},
		{name: "TLS proxy", real: tlsProxy, spec: with(spec(HTTPS, time.Second), via("http://"+plainTarget.String()+"/")), want: OK},
		{name: "proxy down", real: closedPort(t), spec: with(spec(HTTP, time.Second), via("http://"+plainTarget.String()+"/")), want: Fail, wantReason: "refused"},
		{name: "proxy never answers", real: serve(t, silent), spec: with(spec(HTTP, 100*time.Millisecond), via("https://"+tlsTarget.String()+"/")), want: Timeout},
	})
}

// TestSourceAndMark: probes leave from the configured source address, and a mark on
// the socket (SO_MARK, as tunnelled checks set it) does not get in the way.
func TestSourceAndMark(t *testing.T) {
	srv, seen := sourceSeen(t)
	d := Dialer{Source4: netip.MustParseAddr("127.0.0.2")}
	for _, typ := range []Type{TCP, Syslog} {
		s := spec(typ, time.Second)
		s.Syslog.TCP = true
		s.Mark = 77
		r := probeOnce(t, Target{Real: srv, Spec: s}, d)
		if r.Outcome == Error && os.Geteuid() != 0 && os.Getenv("CI") != "true" {
			t.Skipf("SO_MARK needs CAP_NET_ADMIN: %s", r.Reason)
		}
		if r.Outcome != OK {
			t.Fatalf("%s: %s %s", typ, r.Outcome, r.Reason)
		}
		if src := <-seen; src != "127.0.0.2" {
			t.Errorf("%s: probe came from %s, want 127.0.0.2", typ, src)
		}
	}
}

// sourceSeen serves connections until the prober's side ends them, and
// reports the source address each came from.
func sourceSeen(t testing.TB) (netip.AddrPort, <-chan string) {
	seen := make(chan string, 10)
	srv := serve(t, func(c net.Conn) {
		seen <- netip.MustParseAddrPort(c.RemoteAddr().String()).Addr().String()
		io.Copy(io.Discard, c)
	})
	return srv, seen
}

// closeSeen serves handle and then reads until the prober's side ends the
// connection, and reports how it ended: ECONNRESET for a close with RST, io.EOF for
// a FIN.
func closeSeen(t testing.TB, handle func(net.Conn)) (netip.AddrPort, <-chan error) {
	seen := make(chan error, 1)
	srv := serve(t, func(c net.Conn) {
		handle(c)
		buf := make([]byte, 512)
		for {
			if _, err := c.Read(buf); err != nil {
				select {
				case seen <- err:
				default: // only the first connection counts
				}
				return
			}
		}
	})
	return srv, seen
}

// TestProbesCloseWithRST: every TCP probe ends its connection with RST (SO_LINGER 0,
// set in sockopts), so the prober keeps no socket in TIME_WAIT however many probes
// it runs. The server sees how a connection ended: its next read fails with
// ECONNRESET after a RST, where an ordinary close (FIN) gives EOF.
func TestProbesCloseWithRST(t *testing.T) {
	srv, seen := closeSeen(t, func(net.Conn) {})
	c, err := net.Dial("tcp", srv.String())
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := <-seen; err != io.EOF {
		t.Fatalf("an ordinary close is seen as %v, want EOF: the test cannot tell RST from FIN", err)
	}

	cases := []struct {
		name   string
		spec   Spec
		handle func(net.Conn) // the server's part of the exchange
	}{
		{name: "tcp", spec: spec(TCP, time.Second), handle: func(net.Conn) {}},
		{name: "http", spec: httpSpec(HTTP, "/", time.Second), handle: func(c net.Conn) {
			readRequest(c)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}},
		{name: "dns over tcp", spec: with(dnsSpec("ok.test", "A", true, nil), func(s *Spec) { s.Timeout = time.Second }), handle: func(c net.Conn) {
			if q, ok := readQuery(c); ok {
				out := answer(q, func(*dns.Msg) {})
				c.Write(frame(out, len(out)))
			}
		}},
		{name: "syslog over tcp", spec: syslogSpec(true), handle: func(net.Conn) {}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv, seen := closeSeen(t, tc.handle)
			r := probeOnce(t, Target{Real: srv, Spec: tc.spec}, Dialer{})
			if r.Outcome != OK {
				t.Fatalf("probe: %s (%q)", r.Outcome, r.Reason)
			}
			if err := <-seen; !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("the server saw the probe's connection end with %v, want ECONNRESET (a close with RST)", err)
			}
		})
	}
}
