package health

import (
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"net/textproto"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Type is the kind of probe.
type Type uint8

// Probe types.
const (
	TCP Type = iota + 1
	HTTP
	HTTPS
	DNS
	Syslog
)

var typeNames = map[Type]string{TCP: "tcp", HTTP: "http", HTTPS: "https", DNS: "dns", Syslog: "syslog"}

func (t Type) String() string {
	if s, ok := typeNames[t]; ok {
		return s
	}
	return fmt.Sprintf("type(%d)", t)
}

// ParseType maps a config word ("tcp", "http", "https", "dns", "syslog") to a Type.
func ParseType(s string) (Type, error) {
	for t, n := range typeNames {
		if n == s {
			return t, nil
		}
	}
	return 0, fmt.Errorf("unknown check type %q: want tcp, http, https, dns or syslog", s)
}

// Spec is one check as configured: a plain comparable value, so that a Target can be
// a map key. Lists and maps are held as canonical strings (see CanonicalHeaders,
// CanonicalStatus, CanonicalList) so that equal configs give equal Specs.
type Spec struct {
	Type     Type
	Port     uint16        // probe port; 0 means the real's port
	Interval time.Duration // between probes while stable
	Timeout  time.Duration // per probe; must be shorter than Interval
	Rise     int           // consecutive successes to go up
	Fall     int           // consecutive failures to go down

	// Tunnel sends the probe to VIP:port with SO_MARK = Mark from a non-VIP source
	// address, so that IPVS's fwmark service for Mark carries it to this real.
	Tunnel bool
	VIP    netip.Addr
	// Mark is set on the probe socket (SO_MARK, needs CAP_NET_ADMIN). With Tunnel it
	// is the real's mark from Marks; without, 0 leaves the socket unmarked.
	Mark uint32

	HTTP   HTTPParams   // for HTTP and HTTPS
	DNS    DNSParams    // for DNS
	Syslog SyslogParams // for Syslog
}

// HTTPParams are the parameters of an http or https check.
type HTTPParams struct {
	Method string // default GET
	Path   string // default "/"
	Host   string // Host header; default the destination ip:port
	// SNI is the TLS server name sent and verified; default Host without its port
	// (an IP is verified against the certificate's IP addresses and not sent). In
	// proxy mode it names the TLS proxy; an https ProxyURL is verified by its host.
	SNI     string
	Headers string    // extra request headers, CanonicalHeaders form
	Status  StatusSet // the codes taken as good
	Body    string    // optional substring expected within the first MaxBody bytes
	MaxBody int64     // bytes of body read at most; default 64 KiB
	// FollowRedirects follows up to 5 redirects that stay on the same host, against
	// the same real. Off by default: a 3xx is then judged by Status.
	FollowRedirects bool
	CAFile          string // PEM bundle to verify the server with; default the system roots
	Insecure        bool   // skip TLS verification (explicit opt-out)
	// ProxyURL turns on proxy mode: the real is an HTTP proxy (https: a TLS one) and
	// the probe fetches this absolute URL through it, with CONNECT for https URLs.
	ProxyURL string
}

// DNSParams are the parameters of a dns check.
type DNSParams struct {
	Name  string // query name; made fully qualified
	QType uint16 // dns.TypeA, dns.TypeAAAA, ...; see ParseQType
	TCP   bool   // query over TCP; UDP otherwise
	Rcode int    // expected rcode; 0 is NOERROR
	// Answers, CanonicalList form: when set, every listed value must appear as the
	// data of an answer record of type QType ("192.0.2.1", "10 mx.example.com.").
	Answers string
}

// SyslogParams are the parameters of a syslog check.
type SyslogParams struct {
	TCP      bool // deliver over TCP; UDP otherwise (see the syslog checker's doc)
	Priority int  // PRI value of the probe message; 0 means 14 (user.info)
	// Message is the text of the log line, one line; "" means "probe message".
	Message string
}

// Target is one probe to run: a real and a check. It is the state key: equal Targets
// share one probe and one verdict.
type Target struct {
	Real netip.AddrPort // the real server's address and service port
	Spec Spec
}

// Dest is where the probe's packets are addressed: VIP:port for tunnelled checks
// (port is Spec.Port, else the real's port), the real's address otherwise.
func (t Target) Dest() netip.AddrPort {
	port := t.Spec.Port
	if port == 0 {
		port = t.Real.Port()
	}
	if t.Spec.Tunnel {
		return netip.AddrPortFrom(t.Spec.VIP, port)
	}
	return netip.AddrPortFrom(t.Real.Addr(), port)
}

func (t Target) String() string {
	s := t.Spec.Type.String() + " " + t.Real.String()
	if t.Spec.Tunnel {
		s += fmt.Sprintf(" via %s mark %d", t.Dest(), t.Spec.Mark)
	} else if t.Spec.Port != 0 && t.Spec.Port != t.Real.Port() {
		s += fmt.Sprintf(" port %d", t.Spec.Port)
	}
	return s
}

// probeIdentity is the Target without its timing: what is sent and to whom. A reload
// that changes only the timing of a check keeps the verdict of the probe identity.
func (t Target) probeIdentity() Target {
	t.Spec.Interval, t.Spec.Timeout, t.Spec.Rise, t.Spec.Fall = 0, 0, 0, 0
	return t
}

// ID is a short hash of the Spec, stable across restarts and builds, used as a
// bounded metric label and in /status to tell apart two checks on one real.
func (s Spec) ID() string {
	h := fnv.New64a()
	// Field by field: %#v of a netip.Addr would print a pointer.
	// Syslog is spelled out as %#v printed it before Message existed, so
	// that the ids (metric labels) of existing checks did not change.
	fmt.Fprintf(h, "%d|%d|%d|%d|%d|%d|%t|%s|%d|%#v|%#v|health.SyslogParams{TCP:%t, Priority:%d}", s.Type, s.Port, s.Interval, s.Timeout,
		s.Rise, s.Fall, s.Tunnel, s.VIP, s.Mark, s.HTTP, s.DNS, s.Syslog.TCP, s.Syslog.Priority)
	if s.Syslog.Message != "" {
		fmt.Fprintf(h, "|msg=%q", s.Syslog.Message)
	}
	return fmt.Sprintf("%08x", uint32(h.Sum64()>>32)^uint32(h.Sum64()))
}

// Validate reports the first problem of the Spec, in config words.
func (s Spec) Validate() error {
	if _, ok := typeNames[s.Type]; !ok {
		return fmt.Errorf("unknown check type %d", s.Type)
	}
	switch {
	case s.Interval <= 0:
		return errors.New("interval must be positive")
	case s.Timeout <= 0:
		return errors.New("timeout must be positive")
	case s.Timeout >= s.Interval:
		return fmt.Errorf("timeout %s must be shorter than interval %s", s.Timeout, s.Interval)
	case s.Rise < 1 || s.Fall < 1:
		return errors.New("rise and fall must be at least 1")
	case s.Tunnel && !s.VIP.IsValid():
		return errors.New("tunnel check needs the VIP")
	case s.Tunnel && s.Mark == 0:
		return errors.New("tunnel check needs the real's fwmark")
	}
	switch s.Type {
	case HTTP, HTTPS:
		if s.HTTP.MaxBody < 0 {
			return errors.New("max body must not be negative")
		}
		if s.HTTP.Path != "" && !strings.HasPrefix(s.HTTP.Path, "/") {
			return fmt.Errorf("path %q must start with /", s.HTTP.Path)
		}
		if _, err := parseHeaders(s.HTTP.Headers); err != nil {
			return err
		}
	case DNS:
		if s.DNS.Name == "" {
			return errors.New("dns check needs a query name")
		}
		if _, ok := dns.TypeToString[s.DNS.QType]; !ok {
			return fmt.Errorf("unknown dns query type %d", s.DNS.QType)
		}
		if _, ok := dns.RcodeToString[s.DNS.Rcode]; !ok {
			return fmt.Errorf("unknown dns rcode %d", s.DNS.Rcode)
		}
	case Syslog:
		if s.Syslog.Priority < 0 || s.Syslog.Priority > 191 {
			return fmt.Errorf("syslog priority %d out of 0-191", s.Syslog.Priority)
		}
	}
	return nil
}

// ParseQType maps a record type name ("A", "AAAA", "MX", "SRV", "CAA", ...) to its code.
func ParseQType(s string) (uint16, error) {
	t, ok := dns.StringToType[strings.ToUpper(s)]
	if !ok {
		return 0, fmt.Errorf("unknown dns query type %q", s)
	}
	return t, nil
}

// CanonicalHeaders renders request headers as sorted "Name: value" lines, header
// names in canonical MIME form, so that equal maps give equal Specs.
func CanonicalHeaders(h map[string]string) string {
	lines := make([]string, 0, len(h))
	for k, v := range h {
		lines = append(lines, textproto.CanonicalMIMEHeaderKey(k)+": "+v)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func parseHeaders(s string) ([][2]string, error) {
	if s == "" {
		return nil, nil
	}
	var out [][2]string
	for _, line := range strings.Split(s, "\n") {
		k, v, ok := strings.Cut(line, ": ")
		if !ok || k == "" || strings.ContainsAny(k, " \t\r") || strings.ContainsAny(v, "\r\n") {
			return nil, fmt.Errorf("bad header line %q", line)
		}
		out = append(out, [2]string{k, v})
	}
	return out, nil
}

// CanonicalList renders a list of values sorted and deduplicated, one per line.
func CanonicalList(vs []string) string {
	c := append([]string(nil), vs...)
	sort.Strings(c)
	out := c[:0]
	for i, v := range c {
		if i == 0 || v != c[i-1] {
			out = append(out, v)
		}
	}
	return strings.Join(out, "\n")
}

// StatusSet is the set of HTTP status codes (100 to 599) an http check
// takes as good. It is an array, not a slice, so that a Spec stays
// comparable (a map key); the zero set takes 200 to 299.
type StatusSet [8]uint64

// StatusCodes is the set of the codes lo to hi, both included, clipped to
// 100 to 599.
func StatusCodes(lo, hi int) StatusSet {
	var s StatusSet
	return s.With(lo, hi)
}

// With is s with the codes lo to hi added, both included, clipped to 100 to
// 599.
func (s StatusSet) With(lo, hi int) StatusSet {
	for c := max(lo, 100); c <= min(hi, 599); c++ {
		s[(c-100)/64] |= 1 << ((c - 100) % 64)
	}
	return s
}

// Has reports whether code is in the set.
func (s StatusSet) Has(code int) bool {
	if s == (StatusSet{}) {
		return code >= 200 && code <= 299
	}
	return code >= 100 && code <= 599 && s[(code-100)/64]&(1<<((code-100)%64)) != 0
}

// String lists the set's codes, sorted, ranges merged: "200,300-399"; empty
// for the zero set.
func (s StatusSet) String() string {
	if s == (StatusSet{}) {
		return ""
	}
	var parts []string
	for c := 100; c <= 599; c++ {
		if !s.Has(c) {
			continue
		}
		lo := c
		for c+1 <= 599 && s.Has(c+1) {
			c++
		}
		if lo == c {
			parts = append(parts, strconv.Itoa(c))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", lo, c))
		}
	}
	return strings.Join(parts, ",")
}

// GoString is String quoted: Spec.ID hashes the %#v of HTTPParams, which
// held String's text before the set was typed, and the ids are metric
// labels that must not change across an upgrade.
func (s StatusSet) GoString() string { return strconv.Quote(s.String()) }
