package config

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Config is one loaded and validated configuration directory. It is plain
// data: no HCL types and no pointers into the parsed files, so it can be
// compared, copied and handed to other goroutines freely. It is read-only:
// Configs from one Loader share the services of unchanged files, so the same
// *Service in two Configs is the same service, unchanged.
type Config struct {
	// Daemon holds the daemon settings, with defaults when no daemon block
	// exists.
	Daemon Daemon
	// BGP is the speaker's configuration; BGP.Enabled is false when no bgp
	// block exists (then nothing is announced).
	BGP BGP
	// Services are sorted by name. They are pointers so that a reload of
	// 10,000 services copies 10,000 words, not 10,000 services.
	Services []*Service
	// Files are the files that were loaded, in load (sorted) order.
	Files []string
	// Contents[i] is the content Files[i] was loaded from, which Digest
	// covers: a record of what was applied copies these, not the files as
	// they are by then. The loader's cache and every Config loaded while a
	// file stayed the same share one copy of it; never write to it. It is
	// what the value was made from, not part of it: not in JSON, and loads
	// are compared by Digest.
	Contents [][]byte `json:"-"`
	// Digest is a sha256 over the sorted file base names and contents, so a
	// reload of an unchanged set can be recognised and skipped.
	Digest [32]byte
}

// Daemon is the daemon block.
type Daemon struct {
	VIPInterface      string         // dummy link that holds the VIPs (created if missing)
	VIPMode           VIPMode        // how VIPs are made local: routes or addresses
	StateDir          string         // ownership records survive restarts here
	StatsAddress      netip.AddrPort // /metrics, /status
	ResyncInterval    time.Duration  // re-read the kernel and repair drift
	LogLevel          LogLevel       //
	LogFormat         LogFormat      //
	OnStop            OnStop         // keep or clean up the data plane at exit
	StopHold          time.Duration  // wait after withdrawing routes before touching the data plane
	MaxDeleteShare    float64        // percent (0..100) of services/VIPs a reload may delete unless forced
	Settle            time.Duration  // what an edit removes is deleted once the directory has been quiet this long
	HealthConcurrency int            // probes in flight at most
	HealthSourceV4    netip.Addr     // source of every IPv4 probe, needed by tunnelled ones (invalid: none)
	HealthSourceV6    netip.Addr     // source of every IPv6 probe, needed by tunnelled ones (invalid: none)
	TunnelMarkBase    uint32         // first fwmark used for tunnelled checks
	TunnelMarkCount   uint32         // number of fwmarks reserved for tunnelled checks
	Source            string         // "file.hcl:line", empty when defaulted
}

// BGP is the bgp block.
type BGP struct {
	Enabled              bool // a bgp block exists
	ASN                  uint32
	RouterID             netip.Addr // IPv4
	ListenPort           uint16     // 0: do not listen, only connect out
	GracefulShutdown     bool       // tag routes with GRACEFUL_SHUTDOWN before withdrawing at stop
	GracefulShutdownWait time.Duration
	Neighbors            []Neighbor // sorted by name
	Source               string
}

// Neighbor is one BGP peer.
type Neighbor struct {
	Name            string
	Address         netip.Addr
	ASN             uint32
	Port            uint16
	LocalAddress    netip.Addr // invalid: chosen by the kernel
	Passive         bool
	MultihopTTL     uint8 // 0: directly connected (eBGP TTL 1)
	HoldTime        time.Duration
	Keepalive       time.Duration
	ConnectRetry    time.Duration
	PasswordFile    string // TCP-MD5 password is read from this file; empty: none
	Families        []Family
	GracefulRestart bool
	RestartTime     time.Duration
	Source          string
}

// Service is one virtual service: a VIP:port:protocol (or an fwmark) with
// its reals, checks and announcement policy.
type Service struct {
	Name        string
	VIP         netip.Addr // invalid only for an fwmark service without a vip
	Port        uint16     // 0 for fwmark services
	Protocol    Protocol   // empty for fwmark services
	FWMark      uint32     // 0 for address services
	Family      Family
	Scheduler   Scheduler
	Flags       []Flag // sorted
	Forward     Forward
	Persistence Persistence
	OnePacket   bool
	Drain       time.Duration
	WhenAllDown AllDownPolicy
	Enabled     bool
	Reals       []Real  // sorted by address, then port
	Checks      []Check // in file order; a real is up when every check passes
	Announce    Announce
	// Description is the operator's note on the service, one line of at
	// most MaxDescription bytes, shown in /status; it changes nothing else.
	Description string `json:",omitempty"`
	Source      string
}

// MaxDescription bounds a service's description, in bytes.
const MaxDescription = 256

// Endpoint names the kernel identity of the service:
// "tcp/198.51.100.10:443" or "fwmark/10/ipv4".
func (s Service) Endpoint() string {
	if s.FWMark != 0 {
		return fmt.Sprintf("fwmark/%d/%s", s.FWMark, s.Family)
	}
	return fmt.Sprintf("%s/%s", s.Protocol, netip.AddrPortFrom(s.VIP, s.Port))
}

// Persistence makes a client stick to one real.
type Persistence struct {
	Enabled   bool
	Timeout   time.Duration
	PrefixLen int // clients in the same prefix of this length share a real (32/128: per address)
}

// Real is one real server of a service.
type Real struct {
	Addr           netip.Addr
	Port           uint16 // 0 only in fwmark services: keep the packet's port
	Weight         int    // 0..65535
	UpperThreshold uint32 // 0: no limit
	LowerThreshold uint32 // 0: none
	Enabled        bool
	Source         string
}

// AddrPort is the real's address and port.
func (r Real) AddrPort() netip.AddrPort { return netip.AddrPortFrom(r.Addr, r.Port) }

// Check is one health check of a service, applied to each of its reals.
// Only the sub-struct of the check's Type is set.
type Check struct {
	Type     CheckType
	Interval time.Duration
	Timeout  time.Duration // always < Interval
	Rise     int           // consecutive successes to go up
	Fall     int           // consecutive failures to go down
	Port     uint16        // 0: the real's port
	Tunnel   bool          // probe through the VIP with a per-real fwmark, as traffic flows
	HTTP     HTTPCheck     // Type http or https
	DNS      DNSCheck      // Type dns
	Syslog   SyslogCheck   // Type syslog
	Source   string
}

// Key is a canonical text of everything that defines the probe (not Source),
// so health state can be kept across reloads for an unchanged check.
func (c Check) Key() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s i=%s t=%s r=%d f=%d p=%d tun=%t", c.Type, c.Interval, c.Timeout, c.Rise, c.Fall, c.Port, c.Tunnel)
	switch c.Type {
	case CheckHTTP, CheckHTTPS:
		h := c.HTTP
		fmt.Fprintf(&b, " %s %q host=%q sni=%q body=%q fr=%t ca=%q ins=%t max=%d proxy=%q st=%v", h.Method, h.Path, h.Host, h.SNI, h.Body, h.FollowRedirects, h.CAFile, h.Insecure, h.MaxBody, h.ProxyURL, h.Status)
		keys := make([]string, 0, len(h.Headers))
		for k := range h.Headers {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, " %q=%q", k, h.Headers[k])
		}
	case CheckDNS:
		d := c.DNS
		fmt.Fprintf(&b, " %q %s %s %s %q", d.Name, d.Type, d.Transport, d.Rcode, d.Answer)
	case CheckSyslog:
		fmt.Fprintf(&b, " %s %q", c.Syslog.Transport, c.Syslog.Message)
	}
	return b.String()
}

// HTTPCheck is the part of an http or https check.
type HTTPCheck struct {
	Method          string
	Path            string
	Host            string // Host header; empty: the real's address
	SNI             string // https: server name; empty: Host, else none
	Headers         map[string]string
	Status          []StatusRange // a response is good when its code is in one range
	Body            string        // substring the body must contain; empty: any
	FollowRedirects bool
	CAFile          string // https: verify against these roots; empty: system roots
	Insecure        bool   // https: do not verify the certificate
	MaxBody         int    // bytes of body read at most
	ProxyURL        string // the real is an HTTP proxy; fetch this URL through it
}

// StatusRange is an inclusive range of HTTP status codes.
type StatusRange struct{ Min, Max int }

// Contains reports whether code is in the range.
func (r StatusRange) Contains(code int) bool { return code >= r.Min && code <= r.Max }

// DNSCheck is the part of a dns check.
type DNSCheck struct {
	Name      string // fully qualified, with the trailing dot
	Type      string // A, AAAA, ...
	Transport Transport
	Rcode     string // NOERROR, NXDOMAIN, ...
	Answer    string // when set, one answer's data must equal it
}

// SyslogCheck is the part of a syslog check.
type SyslogCheck struct {
	Transport Transport
	Message   string
}

// Announce is a service's BGP announcement policy.
type Announce struct {
	Enabled          bool
	MinHealthy       Threshold // withdraw below
	RestoreHealthy   Threshold // announce again at or above (>= MinHealthy)
	Degraded         Degraded
	NextHop          netip.Addr // invalid: self
	Communities      []Community
	LargeCommunities []LargeCommunity
	MED              uint32
	HasMED           bool
	LocalPref        uint32
	HasLocalPref     bool
	Prepend          int // extra copies of the own ASN
}

// Degraded announces the route with worse attributes while healthy reals
// are below Below (and still at or above MinHealthy).
type Degraded struct {
	Enabled bool
	Below   Threshold
	MED     uint32
	HasMED  bool
	Prepend int
}

// Threshold is a number of healthy reals: a count, or a percentage of the
// service's enabled reals.
type Threshold struct {
	Value   float64 // a count, or a percentage when Percent
	Percent bool
}

// Need is how many healthy reals out of total meet the threshold.
func (t Threshold) Need(total int) int {
	if !t.Percent {
		return int(t.Value)
	}
	return int(math.Ceil(t.Value * float64(total) / 100 * (1 - 1e-12)))
}

func (t Threshold) String() string {
	if t.Percent {
		return fmt.Sprintf("%g%%", t.Value)
	}
	return fmt.Sprintf("%g", t.Value)
}

// Community is a standard BGP community (RFC 1997): high 16 bits ASN, low 16 value.
type Community uint32

func (c Community) String() string { return fmt.Sprintf("%d:%d", uint32(c)>>16, uint32(c)&0xffff) }

// MarshalText writes the community as "asn:value".
func (c Community) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

// LargeCommunity is a BGP large community (RFC 8092).
type LargeCommunity struct{ Global, Local1, Local2 uint32 }

func (c LargeCommunity) String() string { return fmt.Sprintf("%d:%d:%d", c.Global, c.Local1, c.Local2) }

// MarshalText writes the community as "global:local1:local2".
func (c LargeCommunity) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

// Summary counts what the configuration holds, for one line of a log or a
// status: "3 services, 7 reals, 2 VIPs, 2 BGP neighbors".
func (c *Config) Summary() string {
	reals := 0
	for _, s := range c.Services {
		reals += len(s.Reals)
	}
	parts := []string{Plural(len(c.Services), "service"), Plural(reals, "real"), Plural(len(c.VIPs()), "VIP")}
	if c.BGP.Enabled {
		parts = append(parts, Plural(len(c.BGP.Neighbors), "BGP neighbor"))
	}
	return strings.Join(parts, ", ")
}

// Plural is n and what, with an s unless n is 1: "1 file", "2 files".
func Plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// VIPs returns the distinct VIPs of the services, sorted.
func (c *Config) VIPs() []netip.Addr {
	var out []netip.Addr
	for _, s := range c.Services {
		if s.VIP.IsValid() {
			out = append(out, s.VIP)
		}
	}
	slices.SortFunc(out, func(a, b netip.Addr) int { return a.Compare(b) })
	return slices.Compact(out)
}

// Enums. Each is a string type with its values as constants; the strings are
// exactly what the configuration says.
type (
	// VIPMode is how VIPs are made local to the host.
	VIPMode string
	// LogLevel is the daemon's log level.
	LogLevel string
	// LogFormat is the daemon's log format.
	LogFormat string
	// OnStop is what happens to the data plane when the daemon stops.
	OnStop string
	// Family is an address family.
	Family string
	// Protocol is a service's L4 protocol.
	Protocol string
	// Scheduler is an IPVS scheduler.
	Scheduler string
	// Flag is an IPVS scheduler flag.
	Flag string
	// Forward is an IPVS forwarding method.
	Forward string
	// AllDownPolicy is what a service does when every real is down.
	AllDownPolicy string
	// CheckType is the kind of a health check.
	CheckType string
	// Transport is the transport of a dns or syslog check.
	Transport string
)

// Enum values.
const (
	VIPModeRoute   VIPMode = "route"   // a local route per VIP (scales to many VIPs)
	VIPModeAddress VIPMode = "address" // an address per VIP on vip_interface

	LogTrace LogLevel = "trace"
	LogDebug LogLevel = "debug"
	LogInfo  LogLevel = "info"
	LogWarn  LogLevel = "warn"
	LogError LogLevel = "error"

	LogText LogFormat = "text"
	LogJSON LogFormat = "json"

	OnStopKeep    OnStop = "keep"
	OnStopCleanup OnStop = "cleanup"

	IPv4 Family = "ipv4"
	IPv6 Family = "ipv6"

	TCP  Protocol = "tcp"
	UDP  Protocol = "udp"
	SCTP Protocol = "sctp"

	SchedRR    Scheduler = "rr"
	SchedWRR   Scheduler = "wrr"
	SchedLC    Scheduler = "lc"
	SchedWLC   Scheduler = "wlc"
	SchedLBLC  Scheduler = "lblc"
	SchedLBLCR Scheduler = "lblcr"
	SchedDH    Scheduler = "dh"
	SchedSH    Scheduler = "sh"
	SchedSED   Scheduler = "sed"
	SchedNQ    Scheduler = "nq"
	SchedFO    Scheduler = "fo"
	SchedOVF   Scheduler = "ovf"
	SchedMH    Scheduler = "mh"

	FlagSHFallback Flag = "sh-fallback"
	FlagSHPort     Flag = "sh-port"
	FlagMHFallback Flag = "mh-fallback"
	FlagMHPort     Flag = "mh-port"

	ForwardTunnel Forward = "tunnel"
	ForwardDR     Forward = "dr"
	ForwardNAT    Forward = "nat"

	FailOpen AllDownPolicy = "fail_open"
	Withdraw AllDownPolicy = "withdraw"

	CheckTCP    CheckType = "tcp"
	CheckHTTP   CheckType = "http"
	CheckHTTPS  CheckType = "https"
	CheckDNS    CheckType = "dns"
	CheckSyslog CheckType = "syslog"

	TransportUDP Transport = "udp"
	TransportTCP Transport = "tcp"
)

// FamilyOf returns the family of an address.
func FamilyOf(a netip.Addr) Family {
	if a.Is4() {
		return IPv4
	}
	return IPv6
}
