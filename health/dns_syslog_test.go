package health

import (
	"bufio"
	"encoding/binary"
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

// rawUDP answers each datagram with reply(query) (nil: no answer).
func rawUDP(t testing.TB, reply func(q *dns.Msg, raw []byte) []byte) netip.AddrPort {
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
			q := new(dns.Msg)
			if q.Unpack(buf[:n]) != nil {
				continue
			}
			if out := reply(q, buf[:n]); out != nil {
				pc.WriteTo(out, from)
			}
		}
	}()
	return addrOf(pc.LocalAddr())
}

// rawTCP answers each query on a DNS-over-TCP stream with reply(query).
func rawTCP(t testing.TB, reply func(q *dns.Msg, raw []byte) []byte) netip.AddrPort {
	return serve(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		var l [2]byte
		if _, err := io.ReadFull(br, l[:]); err != nil {
			return
		}
		raw := make([]byte, binary.BigEndian.Uint16(l[:]))
		if _, err := io.ReadFull(br, raw); err != nil {
			return
		}
		q := new(dns.Msg)
		if q.Unpack(raw) != nil {
			return
		}
		out := reply(q, raw)
		binary.BigEndian.PutUint16(l[:], uint16(len(out)))
		c.Write(append(l[:], out...))
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
	wrongID := func(q *dns.Msg, _ []byte) []byte { return answer(q, func(r *dns.Msg) { r.Id++ }) }
	cases = append(cases,
		checkCase{name: "udp wrong id", real: rawUDP(t, wrongID), spec: dnsSpec("ok.test", "A", false, nil), want: Timeout, wantReason: "wrong id"},
		checkCase{name: "tcp wrong id", real: rawTCP(t, wrongID), spec: dnsSpec("ok.test", "A", true, nil), want: Fail, wantReason: "reply id"},
		checkCase{name: "udp wrong rcode", real: rawUDP(t, func(q *dns.Msg, _ []byte) []byte {
			return answer(q, func(r *dns.Msg) { r.Rcode = dns.RcodeServerFailure })
		}), spec: dnsSpec("ok.test", "A", false, nil), want: Fail, wantReason: "SERVFAIL"},
		checkCase{name: "udp wrong question", real: rawUDP(t, func(q *dns.Msg, _ []byte) []byte {
			return answer(q, func(r *dns.Msg) { r.Question[0].Name = "evil.test." })
		}), spec: dnsSpec("ok.test", "A", false, nil), want: Fail, wantReason: "question"},
		checkCase{name: "udp not a response", real: rawUDP(t, func(q *dns.Msg, _ []byte) []byte {
			return answer(q, func(r *dns.Msg) { r.Response = false })
		}), spec: dnsSpec("ok.test", "A", false, nil), want: Fail, wantReason: "not a response"},
		checkCase{name: "udp cut-off reply", real: rawUDP(t, func(q *dns.Msg, _ []byte) []byte {
			out := answer(q, func(*dns.Msg) {})
			return out[:len(out)-3]
		}), spec: dnsSpec("ok.test", "A", false, nil), want: Fail, wantReason: "read reply"},
		checkCase{name: "udp TC bit with an expected answer", real: rawUDP(t, func(q *dns.Msg, _ []byte) []byte {
			return answer(q, func(r *dns.Msg) { r.Truncated = true; r.Answer = nil })
		}), spec: dnsSpec("ok.test", "A", false, answers("192.0.2.1")), want: Fail, wantReason: "truncated"},
		checkCase{name: "udp garbage", real: rawUDP(t, func(q *dns.Msg, raw []byte) []byte {
			g := []byte("\xff\xfegarbage that is no DNS message")
			binary.BigEndian.PutUint16(g, q.Id)
			return g
		}), spec: dnsSpec("ok.test", "A", false, nil), want: Fail},
		checkCase{name: "tcp refused", real: closedPort(t), spec: dnsSpec("ok.test", "A", true, nil), want: Fail, wantReason: "refused"},
		checkCase{name: "tcp accepts, never answers", real: serve(t, silent), spec: dnsSpec("ok.test", "A", true, nil), want: Timeout},
	)
	runCases(t, cases)
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
