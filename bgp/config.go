package bgp

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/kglb/kglb/config"
)

// GracefulShutdownCommunity is the well-known GRACEFUL_SHUTDOWN community
// (RFC 8326, 65535:0) added to every route before a planned withdrawal.
const GracefulShutdownCommunity = Community(0xFFFF0000)

// Family is an address family a session carries.
type Family uint8

// The families kglb announces.
const (
	IPv4Unicast Family = iota + 1
	IPv6Unicast
)

// String returns the name used in config and /status.
func (f Family) String() string {
	switch f {
	case IPv4Unicast:
		return "ipv4-unicast"
	case IPv6Unicast:
		return "ipv6-unicast"
	}
	return fmt.Sprintf("family(%d)", uint8(f))
}

// MarshalText writes the family's name.
func (f Family) MarshalText() ([]byte, error) { return []byte(f.String()), nil }

// UnmarshalText reads a name accepted by ParseFamily.
func (f *Family) UnmarshalText(b []byte) error {
	v, err := ParseFamily(string(b))
	if err != nil {
		return err
	}
	*f = v
	return nil
}

// ParseFamily reads "ipv4-unicast" or "ipv6-unicast" ("ipv4" and "ipv6" are
// accepted as short forms).
func ParseFamily(s string) (Family, error) {
	switch strings.ToLower(s) {
	case "ipv4-unicast", "ipv4":
		return IPv4Unicast, nil
	case "ipv6-unicast", "ipv6":
		return IPv6Unicast, nil
	}
	return 0, fmt.Errorf("unknown address family %q (want ipv4-unicast or ipv6-unicast)", s)
}

// Config is the speaker's whole configuration: the local BGP identity and
// the set of neighbors. It is a plain value; the engine maps kglb's config
// onto it, and SetConfig converges the running speaker to it.
type Config struct {
	// ASN is the local autonomous system number. Required.
	ASN uint32
	// RouterID is the BGP identifier, an IPv4 address. Required.
	RouterID netip.Addr
	// ListenPort is the TCP port to accept sessions on. Zero or negative
	// means no listener (the default): kglb then only connects out, and a
	// Passive neighbor can never come up.
	ListenPort int
	// ListenAddresses are the addresses the listener binds to when
	// ListenPort > 0; empty means every address (0.0.0.0 and ::).
	ListenAddresses []netip.Addr
	// GracefulShutdown makes WithdrawAll first re-announce every route
	// with the GRACEFUL_SHUTDOWN community (65535:0) and wait
	// GracefulShutdownWait, so routers move traffic away before the
	// withdrawal.
	GracefulShutdown     bool
	GracefulShutdownWait time.Duration
	// Neighbors are the BGP peers, each identified by its Address.
	Neighbors []Neighbor
}

// Neighbor is one BGP peer. The speaker applies no defaults: config
// decides every value (docs/config.md lists them) and the speaker refuses
// what BGP or GoBGP cannot carry.
type Neighbor struct {
	// Name labels the peer in logs, metrics and /status; empty means the
	// address.
	Name string
	// Address is the peer's address; it identifies the neighbor.
	Address netip.Addr
	// ASN is the peer's AS; equal to Config.ASN makes an iBGP session.
	ASN uint32
	// Port is the peer's TCP port. Required.
	Port uint16
	// LocalAddress is the source address of the session; zero lets the
	// kernel choose.
	LocalAddress netip.Addr
	// Passive waits for the peer to connect (needs Config.ListenPort).
	Passive bool
	// MultihopTTL > 0 enables eBGP multihop with that TTL; 0 is a
	// directly connected eBGP session (TTL 1).
	MultihopTTL uint8
	// HoldTime is proposed in OPEN, 3s..65535s (rounded up to whole
	// seconds). It bounds how long routers keep kglb's routes after a
	// crash. BGP also allows 0 (no keepalives), but GoBGP v3 replaces a
	// zero hold time with 90 s, so the speaker refuses it rather than
	// propose something else than asked.
	HoldTime time.Duration
	// Keepalive is the keepalive interval, at least 1s and shorter than
	// HoldTime.
	Keepalive time.Duration
	// ConnectRetry is the wait between connection attempts, at least 1s.
	ConnectRetry time.Duration
	// PasswordFile holds the TCP-MD5 password (surrounding whitespace is
	// trimmed). It is read on every SetConfig, as config.ReadFile reads
	// (a regular file of bounded size, never blocking on a FIFO), and by
	// RetryConfig only when the last SetConfig could not read it; the
	// password itself is never logged or shown.
	PasswordFile string
	// Families the session carries, at least one.
	// To send IPv6 routes over an IPv4 session list both, and give those
	// routes an explicit IPv6 NextHop.
	Families []Family
	// GracefulRestart (RFC 4724) is opt-in, per neighbor: with it, a
	// router keeps kglb's routes for RestartTime after a crash or a
	// planned restart (see Speaker.Abandon) instead of dropping them when
	// the session ends. A clean stop still withdraws them.
	GracefulRestart bool
	// RestartTime is advertised with graceful restart, 1s..4095s.
	RestartTime time.Duration
}

// seconds converts a timer to whole seconds, rounding up so that a 1.5 s
// setting never becomes 1 s (BGP timers are whole seconds on the wire).
func seconds(d time.Duration) uint64 {
	if d <= 0 {
		return 0
	}
	return uint64((d + time.Second - 1) / time.Second)
}

// session is a Neighbor checked and with its password read, in
// the form GoBGP is configured with. It is comparable: a neighbor whose
// session value changes is re-created; one whose name alone changes is not.
type session struct {
	address      netip.Addr
	asn          uint32
	port         uint16
	localAddress netip.Addr
	passive      bool
	multihopTTL  uint8
	hold         uint64 // seconds
	keepalive    uint64
	connectRetry uint64
	password     string
	ipv4, ipv6   bool
	graceful     bool
	restartTime  uint64
}

// families lists the session's families in a fixed order.
func (s session) families() []Family {
	var fs []Family
	if s.ipv4 {
		fs = append(fs, IPv4Unicast)
	}
	if s.ipv6 {
		fs = append(fs, IPv6Unicast)
	}
	return fs
}

// changed names the settings that differ between two sessions of one
// neighbor, for the log line of a reset; a password is named, never shown.
func (s session) changed(n session) string {
	var out []string
	add := func(diff bool, name string) {
		if diff {
			out = append(out, name)
		}
	}
	add(s.asn != n.asn, "asn")
	add(s.port != n.port, "port")
	add(s.localAddress != n.localAddress, "local_address")
	add(s.passive != n.passive, "passive")
	add(s.multihopTTL != n.multihopTTL, "multihop_ttl")
	add(s.hold != n.hold, "hold_time")
	add(s.keepalive != n.keepalive, "keepalive")
	add(s.connectRetry != n.connectRetry, "connect_retry")
	add(s.password != n.password, "password")
	add(s.ipv4 != n.ipv4 || s.ipv6 != n.ipv6, "families")
	add(s.graceful != n.graceful, "graceful_restart")
	add(s.restartTime != n.restartTime, "restart_time")
	return strings.Join(out, ",")
}

// secretKey identifies a password as read: a neighbor and its file.
type secretKey struct {
	address netip.Addr
	path    string
}

// resolveNeighbor validates a neighbor and reads its password file, or,
// with secrets, takes the password read before from that file for that
// neighbor; a password it reads goes into secrets.
func resolveNeighbor(n Neighbor, secrets map[secretKey]string) (session, error) {
	s := session{
		address:      n.Address,
		asn:          n.ASN,
		port:         n.Port,
		localAddress: n.LocalAddress,
		passive:      n.Passive,
		multihopTTL:  n.MultihopTTL,
		graceful:     n.GracefulRestart,
	}
	if !n.Address.IsValid() {
		return s, errors.New("neighbor has no address")
	}
	if n.Address.Zone() != "" {
		return s, fmt.Errorf("neighbor address %s: zones are not supported", n.Address)
	}
	if n.ASN == 0 {
		return s, errors.New("neighbor has no asn")
	}
	if n.LocalAddress.IsValid() && n.LocalAddress.Is4() != n.Address.Is4() {
		return s, fmt.Errorf("local address %s is not of the neighbor's family", n.LocalAddress)
	}
	if n.HoldTime < 0 || n.Keepalive < 0 || n.ConnectRetry < 0 || n.RestartTime < 0 {
		return s, errors.New("timers must not be negative")
	}
	s.hold = seconds(n.HoldTime)
	if s.hold < 3 || s.hold > 65535 {
		return s, fmt.Errorf("hold time %s is outside 3s..65535s", n.HoldTime)
	}
	s.keepalive = seconds(n.Keepalive)
	if s.keepalive == 0 || s.keepalive >= s.hold {
		return s, fmt.Errorf("keepalive %s is not between 1s and the hold time", n.Keepalive)
	}
	s.connectRetry = seconds(n.ConnectRetry)
	if s.connectRetry == 0 {
		return s, errors.New("connect retry must be at least 1s")
	}
	if s.port == 0 {
		return s, errors.New("neighbor has no port")
	}
	if n.GracefulRestart {
		s.restartTime = seconds(n.RestartTime)
		if s.restartTime == 0 || s.restartTime > 4095 {
			return s, fmt.Errorf("restart time %s is outside 1s..4095s", n.RestartTime)
		}
	}
	for _, f := range n.Families {
		switch f {
		case IPv4Unicast:
			s.ipv4 = true
		case IPv6Unicast:
			s.ipv6 = true
		default:
			return s, fmt.Errorf("unsupported family %s", f)
		}
	}
	if !s.ipv4 && !s.ipv6 {
		return s, errors.New("neighbor has no families")
	}
	if n.PasswordFile != "" {
		key := secretKey{n.Address, n.PasswordFile}
		pw, ok := secrets[key]
		if !ok {
			var err error
			if pw, err = readPassword(n.PasswordFile); err != nil {
				return s, err
			}
			if secrets != nil {
				secrets[key] = pw
			}
		}
		s.password = pw
	}
	return s, nil
}

// readPassword reads a TCP-MD5 password from path. Its errors name the
// file, never its content.
func readPassword(path string) (string, error) {
	// The loader's rule for a file it does not trust: the loader refused
	// anything but a regular file, but this runs at every SetConfig, long
	// after, and a FIFO swapped in since must not hang the speaker (and
	// the engine's pass with it), nor a device or a huge file fill its
	// memory. Its error names the file and why.
	b, err := config.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read password file: %w", err)
	}
	pw := strings.TrimSpace(string(b))
	if pw == "" {
		return "", fmt.Errorf("password file %s is empty", path)
	}
	if len(pw) > 80 { // TCP_MD5SIG_MAXKEYLEN
		return "", fmt.Errorf("password in %s is longer than 80 bytes", path)
	}
	return pw, nil
}

// neighborFits reports why a resolved neighbor cannot work with the global
// settings g: SetConfig refuses such a neighbor, and Plan says so.
func neighborFits(g globalState, sess session) error {
	switch {
	case sess.passive && g.port == 0:
		return errors.New("passive neighbor needs a listen port")
	case sess.passive && sess.password != "" && listenersUseMPTCP():
		return errors.New("TCP-MD5 on a passive neighbor does not work while Go makes MPTCP listeners: " +
			"build with //go:debug multipathtcp=0 or run with GODEBUG=multipathtcp=0")
	}
	return nil
}

// errListedTwice is the error of a neighbor whose address an earlier one
// of the configuration has.
func errListedTwice(a netip.Addr) error { return fmt.Errorf("neighbor %s: listed twice", a) }

// globalState is the part of Config that needs a restart of the BGP server
// to change.
type globalState struct {
	asn      uint32
	routerID netip.Addr
	port     int
	listen   string
}

func resolveGlobal(c Config) (globalState, error) {
	g := globalState{asn: c.ASN, routerID: c.RouterID, port: c.ListenPort}
	if c.ASN == 0 {
		return g, errors.New("bgp: asn is required")
	}
	if !c.RouterID.IsValid() || !c.RouterID.Is4() {
		return g, fmt.Errorf("bgp: router id %q must be an IPv4 address", c.RouterID)
	}
	if c.ListenPort > 65535 {
		return g, fmt.Errorf("bgp: listen port %d out of range", c.ListenPort)
	}
	if c.ListenPort <= 0 {
		g.port = 0
	} else {
		addrs := make([]string, len(c.ListenAddresses))
		for i, a := range c.ListenAddresses {
			addrs[i] = a.String()
		}
		g.listen = strings.Join(addrs, ",")
	}
	if c.GracefulShutdownWait < 0 {
		return g, errors.New("bgp: graceful shutdown wait must not be negative")
	}
	return g, nil
}
