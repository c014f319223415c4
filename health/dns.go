package health

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/miekg/dns"
)

// dnsChecker sends one query and checks that the reply answers it: same id, same
// question, the expected rcode and, when configured, the expected answer data.
type dnsChecker struct {
	d       Dialer
	p       DNSParams
	answers []string
}

func newDNSChecker(s Spec, d Dialer) *dnsChecker {
	c := &dnsChecker{d: d, p: s.DNS}
	c.p.Name = dns.Fqdn(s.DNS.Name)
	if s.DNS.Answers != "" {
		for _, a := range strings.Split(s.DNS.Answers, "\n") {
			c.answers = append(c.answers, normRdata(s.DNS.QType, a))
		}
	}
	return c
}

func (c *dnsChecker) Check(ctx context.Context, t Target) Result {
	return runProbe(ctx, t, c.probe)
}

func (c *dnsChecker) probe(ctx context.Context, t Target) (string, error) {
	conn, stop, err := c.d.dialBounded(ctx, c.p.TCP, t)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	defer stop()

	q := new(dns.Msg)
	q.SetQuestion(c.p.Name, c.p.QType)
	q.SetEdns0(1232, false)
	co := &dns.Conn{Conn: conn, UDPSize: 1232}
	if err := co.WriteMsg(q); err != nil {
		return "", fmt.Errorf("send query: %w", err)
	}
	var wrongID int
	for {
		r, err := co.ReadMsg()
		if err != nil {
			if wrongID > 0 && isTimeout(err) {
				return "", fmt.Errorf("%d replies with a wrong id, none right: %w", wrongID, err)
			}
			return "", fmt.Errorf("read reply: %w", err)
		}
		if r.Id != q.Id {
			// Over UDP a stray reply (say, to an earlier probe that timed out) is
			// skipped, as resolvers do; over TCP the stream is ours alone.
			if !c.p.TCP {
				wrongID++
				continue
			}
			return "", fmt.Errorf("reply id %d, want %d", r.Id, q.Id)
		}
		return c.judge(q, r)
	}
}

func (c *dnsChecker) judge(q, r *dns.Msg) (string, error) {
	if !r.Response {
		return "", errors.New("reply is not a response")
	}
	if len(r.Question) != 1 || !strings.EqualFold(r.Question[0].Name, q.Question[0].Name) ||
		r.Question[0].Qtype != q.Question[0].Qtype || r.Question[0].Qclass != q.Question[0].Qclass {
		return "", errors.New("reply question does not match the query")
	}
	if r.Rcode != c.p.Rcode {
		return "", fmt.Errorf("rcode %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[c.p.Rcode])
	}
	if len(c.answers) == 0 {
		return "rcode " + dns.RcodeToString[r.Rcode], nil
	}
	if r.Truncated {
		return "", errors.New("reply truncated; cannot judge the answer")
	}
	have := map[string]bool{}
	for _, rr := range r.Answer {
		if rr.Header().Rrtype == c.p.QType {
			have[normRdata(c.p.QType, rdata(rr))] = true
		}
	}
	for _, want := range c.answers {
		if !have[want] {
			return "", fmt.Errorf("answer lacks %q", want)
		}
	}
	return fmt.Sprintf("rcode %s, %d answers", dns.RcodeToString[r.Rcode], len(r.Answer)), nil
}

// rdata is a record's text without its header ("10 mx.example.com.").
func rdata(rr dns.RR) string {
	return strings.TrimPrefix(rr.String(), rr.Header().String())
}

// normRdata makes config text and record text comparable: addresses parsed, names
// fully qualified and lower case, TXT unquoted.
func normRdata(qtype uint16, s string) string {
	s = strings.TrimSpace(s)
	switch qtype {
	case dns.TypeA, dns.TypeAAAA:
		if a, err := netip.ParseAddr(s); err == nil {
			return a.Unmap().String()
		}
	case dns.TypeCNAME, dns.TypeNS, dns.TypePTR:
		return strings.ToLower(dns.Fqdn(s))
	case dns.TypeTXT:
		return strings.Trim(s, `"`)
	}
	if ip := net.ParseIP(s); ip != nil {
		return ip.String()
	}
	return strings.ToLower(s)
}
