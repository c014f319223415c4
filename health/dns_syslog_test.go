package health

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func zone(w dns.ResponseWriter, q *dns.Msg) {
	r := new(dns.Msg)
	r.SetReply(q)
	name := q.Question[0].Name
	rr := func(s string) {
		x, err := dns.NewRR(s)
		if err != nil {
			panic(err)
		}
		r.Answer = append(r.Answer, x)
	}
	switch strings.ToLower(name) {
	case "ok.test.":
		switch q.Question[0].Qtype {
		case dns.TypeA:
			rr("ok.test. 60 IN A 192.0.2.1")
			rr("ok.test. 60 IN A 192.0.2.2")
		case dns.TypeAAAA:
			rr("ok.test. 60 IN AAAA 2001:db8::1")
		case dns.TypeMX:
			rr("ok.test. 60 IN MX 10 mail.test.")
		case dns.TypeTXT:
			rr(`ok.test. 60 IN TXT "v=ok"`)
		case dns.TypeSRV:
			rr("ok.test. 60 IN SRV 1 2 80 web.test.")
		case dns.TypeCAA:
			rr(`ok.test. 60 IN CAA 0 issue "ca.test"`)
		case dns.TypeSOA:
			rr("ok.test. 60 IN SOA ns.test. admin.test. 1 2 3 4 5")
		}
	case "www.test.":
		rr("www.test. 60 IN CNAME ok.test.")
	case "silent.test.":
		return
	default:
		r.Rcode = dns.RcodeNameError
	}
	w.WriteMsg(r)
}

// dnsServer serves zone over udp or tcp on 127.0.0.1:0.
func dnsServer(t testing.TB, tcp bool) netip.AddrPort {
	started := make(chan struct{})
	srv := &dns.Server{Handler: dns.HandlerFunc(zone), NotifyStartedFunc: func() { close(started) }}
	var addr net.Addr
	if tcp {
		srv.Listener = listen(t)
		addr = srv.Listener.Addr()
	} else {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv.PacketConn = pc
		addr = pc.LocalAddr()
	}
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
	return addrOf(addr)
}

// rawUDP answers each DNS query datagram with reply(query) (nil: no answer).
func rawUDP(t testing.TB, reply func(q *dns.Msg) []byte) netip.AddrPort {
	return rawPacket(t, func(b []byte) []byte {
		q := new(dns.Msg)
		if q.Unpack(b) != nil {
			return nil
		}
		return reply(q)
	})
}

// readQuery reads one length-prefixed query from a DNS-over-TCP stream.
func readQuery(c net.Conn) (*dns.Msg, bool) {
	var l [2]byte
	if _, err := io.ReadFull(c, l[:]); err != nil {
		return nil, false
	}
	raw := make([]byte, binary.BigEndian.Uint16(l[:]))
	if _, err := io.ReadFull(c, raw); err != nil {
		return nil, false
	}
	q := new(dns.Msg)
	if q.Unpack(raw) != nil {
		return nil, false
	}
	return q, true
}

// frame prefixes msg with a DNS-over-TCP length field that says n bytes follow,
// which a lying server sets to something other than len(msg).
func frame(msg []byte, n int) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(n)), msg...)
}

// tcpDNS reads one query from each DNS-over-TCP connection and leaves the rest to
// handle: answer, lie, dawdle or reset.
func tcpDNS(t testing.TB, handle func(c net.Conn, q *dns.Msg)) netip.AddrPort {
	return serve(t, func(c net.Conn) {
		if q, ok := readQuery(c); ok {
			handle(c, q)
		}
	})
}

// rawTCP answers the query on a DNS-over-TCP stream with reply(query), then waits
// for the prober to close.
func rawTCP(t testing.TB, reply func(q *dns.Msg) []byte) netip.AddrPort {
	return tcpDNS(t, func(c net.Conn, q *dns.Msg) {
		out := reply(q)
		c.Write(frame(out, len(out)))
		io.Copy(io.Discard, c)
	})
}

func answer(q *dns.Msg, mutate func(*dns.Msg)) []byte {
	r := new(dns.Msg)
	r.SetReply(q)
	a, _ := dns.NewRR(q.Question[0].Name + " 60 IN A 192.0.2.1")
	r.Answer = append(r.Answer, a)
	mutate(r)
	out, err := r.Pack()
	if err != nil {
		panic(err)
	}
	return out
}

func dnsSpec(name, qtype string, tcp bool, f func(*DNSParams)) Spec {
	s := spec(DNS, 300*time.Millisecond)
	qt, err := ParseQType(qtype)
	if err != nil {
		panic(err)
	}
	s.DNS = DNSParams{Name: name, QType: qt, TCP: tcp}
	if f != nil {
		f(&s.DNS)
	}
	return s
}

func answers(vs ...string) func(*DNSParams) {
	return func(p *DNSParams) { p.Answers = CanonicalList(vs) }
}

func TestDNSChecker(t *testing.T) {
	udp, tcp := dnsServer(t, false), dnsServer(t, true)
	var cases []checkCase
	for _, net := range []struct {
		name string
		srv  netip.AddrPort
		tcp  bool
	}{{"udp", udp, false}, {"tcp", tcp, true}} {
		tc := net.tcp
		cases = append(cases,
			checkCase{name: net.name + " A noerror", real: net.srv, spec: dnsSpec("ok.test", "A", tc, nil), want: OK, wantReason: "NOERROR"},
			checkCase{name: net.name + " A answer", real: net.srv, spec: dnsSpec("ok.test", "A", tc, answers("192.0.2.2")), want: OK},
			checkCase{name: net.name + " A both answers", real: net.srv, spec: dnsSpec("ok.test", "A", tc, answers("192.0.2.1", "192.0.2.2")), want: OK},
			checkCase{name: net.name + " A wrong answer", real: net.srv, spec: dnsSpec("ok.test", "A", tc, answers("192.0.2.9")), want: Fail, wantReason: "answer lacks"},
			checkCase{name: net.name + " AAAA sent as AAAA", real: net.srv, spec: dnsSpec("ok.test", "AAAA", tc, answers("2001:db8::1")), want: OK},
			checkCase{name: net.name + " MX", real: net.srv, spec: dnsSpec("ok.test", "MX", tc, answers("10 mail.test.")), want: OK},
			checkCase{name: net.name + " TXT", real: net.srv, spec: dnsSpec("ok.test", "TXT", tc, answers("v=ok")), want: OK},
			checkCase{name: net.name + " SRV", real: net.srv, spec: dnsSpec("ok.test", "SRV", tc, answers("1 2 80 web.test.")), want: OK},
			checkCase{name: net.name + " CAA", real: net.srv, spec: dnsSpec("ok.test", "CAA", tc, answers(`0 issue "ca.test"`)), want: OK},
			checkCase{name: net.name + " SOA", real: net.srv, spec: dnsSpec("ok.test", "SOA", tc, nil), want: OK},
			checkCase{name: net.name + " CNAME", real: net.srv, spec: dnsSpec("www.test", "CNAME", tc, answers("OK.test")), want: OK},
			checkCase{name: net.name + " NXDOMAIN unexpected", real: net.srv, spec: dnsSpec("nx.test", "A", tc, nil), want: Fail, wantReason: "rcode NXDOMAIN, want NOERROR"},
			checkCase{name: net.name + " NXDOMAIN expected", real: net.srv, spec: dnsSpec("nx.test", "A", tc, func(p *DNSParams) { p.Rcode = dns.RcodeNameError }), want: OK},
			checkCase{name: net.name + " no reply", real: net.srv, spec: dnsSpec("silent.test", "A", tc, nil), want: Timeout},
		)
	}
	wrongID := func(q *dns.Msg) []byte { return answer(q, func(r *dns.Msg) { r.Id++ }) }
	cases = append(cases,
		checkCase{name: "udp wrong id", real: rawUDP(t, wrongID), spec: dnsSpec("ok.test", "A", false, nil), want: Timeout, wantReason: "wrong id"},
		checkCase{name: "tcp wrong id", real: rawTCP(t, wrongID), spec: dnsSpec("ok.test", "A", true, nil), want: Fail, wantReason: "reply id"},
		checkCase{name: "udp wrong rcode", real: rawUDP(t, func(q *dns.Msg) []byte {
			return answer(q, func(r *dns.Msg) { r.Rcode = dns.RcodeServerFailure })
		}), spec: dnsSpec("ok.test", "A", false, nil), want: Fail, wantReason: "SERVFAIL"},
		checkCase{name: "udp wrong question", real: rawUDP(t, func(q *dns.Msg) []byte {
			return answer(q, func(r *dns.Msg) { r.Question[0].Name = "evil.test." })
		}), spec: dnsSpec("ok.test", "A", false, nil), want: Fail, wantReason: "question"},
		checkCase{name: "udp not a response", real: rawUDP(t, func(q *dns.Msg) []byte {
			return answer(q, func(r *dns.Msg) { r.Response = false })
		}), spec: dnsSpec("ok.test", "A", false, nil), want: Fail, wantReason: "not a response"},
		checkCase{name: "udp cut-off reply", real: rawUDP(t, func(q *dns.Msg) []byte {
			out := answer(q, func(*dns.Msg) {})
			return out[:len(out)-3]
		}), spec: dnsSpec("ok.test", "A", false, nil), want: Fail, wantReason: "read reply"},
		checkCase{name: "udp TC bit with an expected answer", real: rawUDP(t, func(q *dns.Msg) []byte {
			return answer(q, func(r *dns.Msg) { r.Truncated = true; r.Answer = nil })
		}), spec: dnsSpec("ok.test", "A", false, answers("192.0.2.1")), want: Fail, wantReason: "truncated"},
		checkCase{name: "udp garbage", real: rawUDP(t, func(q *dns.Msg) []byte {
			g := []byte("\xff\xfegarbage that is no DNS message")
			binary.BigEndian.PutUint16(g, q.Id)
			return g
		}), spec: dnsSpec("ok.test", "A", false, nil), want: Fail},
		checkCase{name: "udp empty datagram", real: rawUDP(t, func(*dns.Msg) []byte { return []byte{} /* not nil: nil sends nothing */ }),
			spec: dnsSpec("ok.test", "A", false, nil), want: Fail, wantReason: "short read"},
		checkCase{name: "udp header only", real: rawUDP(t, func(q *dns.Msg) []byte {
			h := make([]byte, 12)
			binary.BigEndian.PutUint16(h, q.Id)
			h[2] = 0x80 // QR: a response, to no question
			return h
		}), spec: dnsSpec("ok.test", "A", false, nil), want: Fail, wantReason: "question"},
		// The query advertises an EDNS buffer of 1232 bytes; a reply beyond it
		// arrives cut to the buffer and does not parse.
		checkCase{name: "udp reply beyond the advertised size", real: rawUDP(t, bigAnswer),
			spec: dnsSpec("ok.test", "A", false, nil), want: Fail, wantReason: "read reply"},
		checkCase{name: "tcp refused", real: closedPort(t), spec: dnsSpec("ok.test", "A", true, nil), want: Fail, wantReason: "refused"},
		checkCase{name: "tcp accepts, never answers", real: serve(t, silent), spec: dnsSpec("ok.test", "A", true, nil), want: Timeout},
	)
	runCases(t, cases)
}

// bigAnswer is a reply of almost 64 KiB, near the most a DNS-over-TCP length field
// can announce: 2,800 uncompressed A records, the last of them 192.0.2.99.
func bigAnswer(q *dns.Msg) []byte {
	r := new(dns.Msg)
	r.SetReply(q)
	for i := range 2800 {
		last := byte(i % 99)
		if i == 2799 {
			last = 99
		}
		r.Answer = append(r.Answer, &dns.A{
			Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
			A:   net.IPv4(192, 0, 2, last).To4(),
		})
	}
	out, err := r.Pack()
	if err != nil || len(out) < 60000 || len(out) > 65535 {
		panic(fmt.Sprintf("big answer of %d bytes: %v", len(out), err))
	}
	return out
}

// TestDNSCheckerMisbehavingTCP: DNS over TCP against servers that dawdle, reset,
// close, or lie in the length field. Every probe ends in a verdict: a server that
// stops short of what it announced is a timeout while it holds the connection and
// a failure once it closes it.
func TestDNSCheckerMisbehavingTCP(t *testing.T) {
	ok := func(q *dns.Msg) []byte { return answer(q, func(*dns.Msg) {}) }
	sp := func(timeout time.Duration, f func(*DNSParams)) Spec {
		return with(dnsSpec("ok.test", "A", true, f), func(s *Spec) { s.Timeout = timeout })
	}
	short := sp(300*time.Millisecond, nil)
	runCases(t, []checkCase{
		{name: "answers byte by byte, past the timeout", real: tcpDNS(t, func(c net.Conn, q *dns.Msg) {
			out := ok(q)
			dribble(c, frame(out, len(out)), 20*time.Millisecond)
		}), spec: short, want: Timeout},
		{name: "answers byte by byte, within the timeout", real: tcpDNS(t, func(c net.Conn, q *dns.Msg) {
			out := ok(q)
			dribble(c, frame(out, len(out)), time.Millisecond)
			io.Copy(io.Discard, c)
		}), spec: sp(5*time.Second, answers("192.0.2.1")), want: OK, wantReason: "NOERROR"},
		{name: "accepts, never reads", real: serve(t, stall(t, time.Hour)), spec: short, want: Timeout},
		{name: "resets on accept", real: serve(t, reset), spec: short, want: Fail, wantReason: "reset"},
		{name: "resets after the query", real: tcpDNS(t, func(c net.Conn, _ *dns.Msg) { reset(c) }), spec: short, want: Fail, wantReason: "reset"},
		{name: "closes after the query", real: tcpDNS(t, func(net.Conn, *dns.Msg) {}), spec: short, want: Fail, wantReason: "EOF"},
		{name: "length beyond the reply, then silence", real: tcpDNS(t, func(c net.Conn, q *dns.Msg) {
			out := ok(q)
			c.Write(frame(out, len(out)+100))
			io.Copy(io.Discard, c)
		}), spec: short, want: Timeout},
		{name: "length beyond the reply, then close", real: tcpDNS(t, func(c net.Conn, q *dns.Msg) {
			out := ok(q)
			c.Write(frame(out, len(out)+100))
		}), spec: short, want: Fail, wantReason: "unexpected EOF"},
		{name: "length short of the reply", real: tcpDNS(t, func(c net.Conn, q *dns.Msg) {
			out := ok(q)
			c.Write(frame(out, len(out)-4))
			io.Copy(io.Discard, c)
		}), spec: short, want: Fail, wantReason: "read reply"},
		{name: "zero length", real: tcpDNS(t, func(c net.Conn, _ *dns.Msg) {
			c.Write(frame(nil, 0))
			io.Copy(io.Discard, c)
		}), spec: short, want: Fail, wantReason: "short read"},
		{name: "64 KiB reply read whole", real: tcpDNS(t, func(c net.Conn, q *dns.Msg) {
			out := bigAnswer(q)
			c.Write(frame(out, len(out)))
			io.Copy(io.Discard, c)
		}), spec: sp(5*time.Second, answers("192.0.2.99")), want: OK, wantReason: "2800 answers"},
		{name: "64 KiB of garbage", real: tcpDNS(t, func(c net.Conn, q *dns.Msg) {
			g := bytes.Repeat([]byte{0xff}, 65535)
			binary.BigEndian.PutUint16(g, q.Id)
			c.Write(frame(g, len(g)))
			io.Copy(io.Discard, c)
		}), spec: short, want: Fail, wantReason: "read reply"},
		{name: "wrong rcode", real: rawTCP(t, func(q *dns.Msg) []byte {
			return answer(q, func(r *dns.Msg) { r.Rcode = dns.RcodeServerFailure })
		}), spec: short, want: Fail, wantReason: "rcode SERVFAIL"},
	})
}

func syslogSpec(tcp bool) Spec {
	s := spec(Syslog, time.Second)
	s.Syslog.TCP = tcp
	return s
}

func TestSyslogChecker(t *testing.T) {
	lines := make(chan string, 10)
	tcpSrv := serve(t, func(c net.Conn) {
		l, _ := bufio.NewReader(c).ReadString('\n')
		lines <- l
	})
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	udpSrv := addrOf(pc.LocalAddr())
	closedUDP := func() netip.AddrPort {
		c, _ := net.ListenPacket("udp", "127.0.0.1:0")
		a := addrOf(c.LocalAddr())
		c.Close()
		return a
	}()
	runCases(t, []checkCase{
		{name: "tcp delivered", real: tcpSrv, spec: syslogSpec(true), want: OK, wantReason: "line written"},
		{name: "tcp refused", real: closedPort(t), spec: syslogSpec(true), want: Fail, wantReason: "refused"},
		{name: "udp sent", real: udpSrv, spec: syslogSpec(false), want: OK, wantReason: "no ICMP error"},
		{name: "udp port unreachable", real: closedUDP, spec: syslogSpec(false), want: Fail, wantReason: "port unreachable"},
	})
	if l := <-lines; !strings.HasPrefix(l, "<14>") || !strings.HasSuffix(l, "probe message\n") {
		t.Errorf("tcp line %q", l)
	}
	// The operator's message, kept to one line.
	spec := syslogSpec(true)
	spec.Syslog.Message = "lb42 says hi\nsecond line"
	runCases(t, []checkCase{{name: "tcp with message", real: tcpSrv, spec: spec, want: OK, wantReason: "line written"}})
	if l := <-lines; !strings.HasSuffix(l, ": lb42 says hi second line\n") {
		t.Errorf("tcp line with message %q", l)
	}
	buf := make([]byte, 512)
	pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _, err := pc.ReadFrom(buf)
	if err != nil || !strings.Contains(string(buf[:n]), "kglb-health[") {
		t.Errorf("udp datagram %q, %v", buf[:n], err)
	}
}

// TestSyslogCheckerMisbehaving pins down what a syslog probe can and cannot see
// (the list in syslogChecker's doc). A syslog server never answers, so a TCP probe
// is done once its line is in the kernel's send buffer.
func TestSyslogCheckerMisbehaving(t *testing.T) {
	huge := syslogSpec(true)
	huge.Timeout = 300 * time.Millisecond
	huge.Syslog.Message = strings.Repeat("x", 16<<20) // beyond any loopback socket buffers
	echo := rawPacket(t, func(b []byte) []byte { return b })
	runCases(t, []checkCase{
		// The kernel acknowledges the line into the server's receive buffer, so a
		// server that never reads is not caught: the probe claims delivery to the
		// server's host, not that the daemon read the line.
		{name: "tcp accepts, never reads", real: serve(t, stall(t, time.Hour)), spec: syslogSpec(true), want: OK, wantReason: "line written"},
		// Unless the line does not fit in the buffers: then the write blocks, and
		// the deadline ends it.
		{name: "tcp never reads a line larger than the buffers", real: serve(t, stall(t, time.Hour)), spec: huge, want: Timeout, wantReason: "write"},
		// Dropping the connection after taking the line is not caught either.
		{name: "tcp reads the line, then resets", real: serve(t, func(c net.Conn) {
			bufio.NewReader(c).ReadString('\n')
			reset(c)
		}), spec: syslogSpec(true), want: OK, wantReason: "line written"},
		// Over UDP any reply counts as a sign of life; only an ICMP error fails.
		{name: "udp server replies", real: echo, spec: syslogSpec(false), want: OK, wantReason: "server replied"},
	})

	// A server that resets right after accept races the probe's write: the
	// handshake is over before accept, so the line may be in the send buffer (OK,
	// as above) or the reset may come first (the write fails). Both verdicts are
	// true to what the probe saw; what must hold is that it is one of the two.
	srv := serve(t, reset)
	for i := range 20 {
		r := probeOnce(t, Target{Real: srv, Spec: syslogSpec(true)}, Dialer{})
		okLine := r.Outcome == OK && r.Reason == "line written"
		wasReset := r.Outcome == Fail && (strings.Contains(r.Reason, "reset") || strings.Contains(r.Reason, "broken pipe"))
		if !okLine && !wasReset {
			t.Errorf("probe %d of a server that resets on accept: %s (%q), want ok (line written) or fail (reset)", i, r.Outcome, r.Reason)
		}
	}
}

// rawPacket answers each datagram on a UDP socket with reply(datagram) (nil: no
// answer).
func rawPacket(t testing.TB, reply func([]byte) []byte) netip.AddrPort {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if out := reply(buf[:n]); out != nil {
				pc.WriteTo(out, from)
			}
		}
	}()
	return addrOf(pc.LocalAddr())
}
