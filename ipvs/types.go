// Package ipvs owns kglb's IPVS services and reals in the kernel.
//
// It takes a Desired value (plain services with their reals) and makes the
// kernel match it with the fewest netlink writes, touching only the services
// kglb created itself (recorded in a state file so ownership survives a
// restart). The kernel is reached through the small Kernel interface: Netlink
// talks to the real kernel through github.com/moby/ipvs, Fake is an in-memory
// kernel with the same rules for tests. Reconciler holds the diff logic,
// drain timers and a cache of the last-known kernel state.
package ipvs

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

// Family is an address family of a service: IPv4 or IPv6.
type Family uint16

// Address families, with the kernel's values.
const (
	IPv4 Family = unix.AF_INET
	IPv6 Family = unix.AF_INET6
)

func (f Family) String() string {
	switch f {
	case IPv4:
		return "ipv4"
	case IPv6:
		return "ipv6"
	}
	return fmt.Sprintf("family(%d)", uint16(f))
}

// FamilyOf returns the family of an address.
func FamilyOf(a netip.Addr) Family {
	if a.Is4() {
		return IPv4
	}
	return IPv6
}

// Protocol is the L4 protocol of an address service.
type Protocol uint16

// Protocols IPVS balances, with the kernel's values.
const (
	TCP  Protocol = unix.IPPROTO_TCP
	UDP  Protocol = unix.IPPROTO_UDP
	SCTP Protocol = unix.IPPROTO_SCTP
)

func (p Protocol) String() string {
	switch p {
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	case SCTP:
		return "sctp"
	}
	return fmt.Sprintf("proto(%d)", uint16(p))
}

// Key identifies a service in the kernel. It is either an address service
// {Family, Protocol, Addr, Port} or a firewall-mark service {Family, FWMark}
// (an fwmark service exists once per family). Key is comparable; diffs are
// keyed on it.
type Key struct {
	Family   Family
	Protocol Protocol
	Addr     netip.Addr
	Port     uint16
	FWMark   uint32
}

// AddrKey returns the key of an address service.
func AddrKey(p Protocol, addr netip.Addr, port uint16) Key {
	addr = addr.Unmap()
	return Key{Family: FamilyOf(addr), Protocol: p, Addr: addr, Port: port}
}

// MarkKey returns the key of a firewall-mark service.
func MarkKey(f Family, mark uint32) Key { return Key{Family: f, FWMark: mark} }

// String gives the key as errors and logs name it: "tcp 198.51.100.10:443",
// "fwmark 10 ipv6".
func (k Key) String() string {
	if k.FWMark != 0 {
		return fmt.Sprintf("fwmark %d %s", k.FWMark, k.Family)
	}
	return fmt.Sprintf("%s %s", k.Protocol, netip.AddrPortFrom(k.Addr, k.Port))
}

func (k Key) validate() error {
	if k.FWMark != 0 {
		if k.Addr.IsValid() || k.Port != 0 || k.Protocol != 0 {
			return errors.New("an fwmark service has no address, port or protocol")
		}
		if k.Family != IPv4 && k.Family != IPv6 {
			return fmt.Errorf("unknown address family %d", k.Family)
		}
		return nil
	}
	if !k.Addr.IsValid() {
		return errors.New("service has neither an address nor an fwmark")
	}
	if k.Addr.Is4In6() || k.Addr.Zone() != "" {
		return fmt.Errorf("address %s must be plain IPv4 or IPv6", k.Addr)
	}
	if k.Family != FamilyOf(k.Addr) {
		return fmt.Errorf("family %s does not match address %s", k.Family, k.Addr)
	}
	switch k.Protocol {
	case TCP, UDP, SCTP:
	default:
		return fmt.Errorf("unsupported protocol %d (want tcp, udp or sctp)", k.Protocol)
	}
	return nil
}

func (k Key) less(o Key) int {
	// Address services first (like ipvsadm: TCP, UDP, SCTP, then FWM).
	if (k.FWMark != 0) != (o.FWMark != 0) {
		if k.FWMark == 0 {
			return -1
		}
		return 1
	}
	if k.FWMark != 0 {
		if k.FWMark != o.FWMark {
			return cmpInt(int64(k.FWMark), int64(o.FWMark))
		}
		return cmpInt(int64(k.Family), int64(o.Family))
	}
	if k.Protocol != o.Protocol {
		return cmpInt(int64(k.Protocol), int64(o.Protocol))
	}
	if c := k.Addr.Compare(o.Addr); c != 0 {
		return c
	}
	return cmpInt(int64(k.Port), int64(o.Port))
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// SortKeys sorts keys in the order ipvsadm-like listings use.
func SortKeys(keys []Key) { slices.SortFunc(keys, Key.less) }

// Flags are a service's IPVS flags (kernel ip_vs.h IP_VS_SVC_F_*).
type Flags uint32

// Service flags. Sched1..3 mean different things per scheduler: for sh and
// mh, Sched1 is "fallback" (pick another real when the chosen one is
// unavailable) and Sched2 is "port" (hash the ports too).
const (
	FlagPersistent Flags = 0x1
	// FlagHashed is set by the kernel on every service it has hashed. It is
	// never sent and is masked off before comparing, or every resync would
	// see a difference and rewrite every service.
	FlagHashed    Flags = 0x2
	FlagOnePacket Flags = 0x4
	FlagSched1    Flags = 0x8
	FlagSched2    Flags = 0x10
	FlagSched3    Flags = 0x20

	FlagSHFallback = FlagSched1
	FlagSHPort     = FlagSched2
	FlagMHFallback = FlagSched1
	FlagMHPort     = FlagSched2

	// flagsSettable are the flags kglb manages; anything else read back
	// (HASHED) belongs to the kernel.
	flagsSettable = FlagPersistent | FlagOnePacket | FlagSched1 | FlagSched2 | FlagSched3
)

// Forward is a real's forwarding method, with the kernel's values
// (IP_VS_CONN_F_*). The zero value is NAT, as in the kernel.
type Forward uint32

// Forwarding methods.
const (
	ForwardNAT    Forward = 0 // masquerading
	ForwardTunnel Forward = 2 // IPIP
	ForwardDR     Forward = 3 // direct routing
)

func (f Forward) String() string {
	switch f {
	case ForwardNAT:
		return "nat"
	case ForwardTunnel:
		return "tunnel"
	case ForwardDR:
		return "dr"
	case 1:
		return "local"
	}
	return fmt.Sprintf("forward(%d)", uint32(f))
}

// Schedulers are the IPVS schedulers of Debian's Linux 6.1 kernel ("twos"
// came later, in 6.2). The kernel decides what it supports (a missing
// module is ENOENT); this list is what the fake accepts.
var Schedulers = []string{"rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh"}

// schedMH is the Maglev hashing scheduler, whose table depends on the
// order of the reals (mhTail).
const schedMH = "mh"

// Stats are a service's or a real's kernel counters. Connections and
// packets are 32-bit in the netlink attributes moby/ipvs parses, so they
// wrap; bytes are 64-bit.
type Stats struct {
	Connections uint64
	PacketsIn   uint64
	PacketsOut  uint64
	BytesIn     uint64
	BytesOut    uint64
}

// Service is one IPVS virtual service: what kglb wants (in Desired) or what
// the kernel has (from Kernel.Services, then with Reals empty).
type Service struct {
	Key       Key
	Name      string // optional, for errors and logs only (not in the kernel)
	Scheduler string
	Flags     Flags
	// Timeout is the persistence timeout, in whole seconds.
	Timeout time.Duration
	// Netmask is the persistence granularity as a prefix length; 0 means a
	// single address (32 for IPv4, 128 for IPv6), which is what ipvsadm sets.
	Netmask uint8
	// Drain is how long a real removed from Reals keeps weight 0 before it is
	// deleted (it goes as soon as it has no active connections). Reconciler
	// only; 0 deletes removed reals at once.
	Drain time.Duration
	Reals []Real

	// Stats are read back from the kernel; ignored in Desired.
	Stats Stats
}

// RealKey identifies a real within a service.
type RealKey struct {
	Addr netip.Addr
	Port uint16
}

func (k RealKey) String() string { return netip.AddrPortFrom(k.Addr, k.Port).String() }

func (k RealKey) compare(o RealKey) int {
	if c := k.Addr.Compare(o.Addr); c != 0 {
		return c
	}
	return cmpInt(int64(k.Port), int64(o.Port))
}

// Real is one real server (IPVS destination) of a service.
type Real struct {
	Addr netip.Addr
	Port uint16 // 0 keeps the packet's destination port (fwmark services)
	// Weight 0 quiesces: no new connections, existing ones continue. The
	// kernel keeps an int, but moby/ipvs reads weights back as 16 bits, so
	// a larger one would never compare equal: the type keeps it in range.
	Weight  uint16
	Forward Forward
	// Connection limits: above Upper the real gets no new connections until
	// it is below Lower. 0 means no limit.
	UpperThreshold uint32
	LowerThreshold uint32

	// Read back from the kernel; ignored in Desired.
	ActiveConns   int
	InactiveConns int
	Stats         Stats
}

// Key returns the real's key.
func (r Real) Key() RealKey { return RealKey{r.Addr, r.Port} }

// spec is the part of a real kglb sets; equal specs mean no write.
type realSpec struct {
	Weight  uint16
	Forward Forward
	Upper   uint32
	Lower   uint32
}

func (r Real) spec() realSpec {
	return realSpec{r.Weight, r.Forward, r.UpperThreshold, r.LowerThreshold}
}

// svcSpec is the part of a service kglb sets with UpdateService.
type svcSpec struct {
	Scheduler string
	Flags     Flags
	Timeout   time.Duration
	Netmask   uint8
}

// spec returns the comparable settings of s, with the kernel-owned HASHED
// flag masked off, so a read-back equals what was sent.
func (s Service) spec() svcSpec {
	return svcSpec{s.Scheduler, s.Flags & flagsSettable, s.Timeout.Truncate(time.Second), s.Netmask}
}

// netmask is the netmask to send: 0 means a single address.
func (s Service) netmask() uint8 {
	if s.Netmask != 0 {
		return s.Netmask
	}
	if s.Key.Family == IPv6 {
		return 128
	}
	return 32
}

// label names a service in errors: its name when it has one, and its key.
func (s Service) label() string {
	if s.Name != "" {
		return fmt.Sprintf("%q (%s)", s.Name, s.Key)
	}
	return s.Key.String()
}

// validate checks what the kernel would reject or silently change, so the
// reconciler can report it as that item's error.
func (s Service) validate() error {
	if err := s.Key.validate(); err != nil {
		return err
	}
	if s.Scheduler == "" {
		return errors.New("no scheduler")
	}
	if s.Flags&^flagsSettable != 0 {
		return fmt.Errorf("flags %#x are not settable", uint32(s.Flags&^flagsSettable))
	}
	if s.Timeout < 0 || s.Timeout%time.Second != 0 || s.Timeout > (1<<31)*time.Second {
		return fmt.Errorf("persistence timeout %s is not whole seconds", s.Timeout)
	}
	max := uint8(32)
	if s.Key.Family == IPv6 {
		max = 128
	}
	if s.Netmask > max {
		return fmt.Errorf("netmask /%d is too long for %s", s.Netmask, s.Key.Family)
	}
	if s.Drain < 0 {
		return fmt.Errorf("negative drain %s", s.Drain)
	}
	for _, r := range s.Reals {
		if err := r.validate(s.Key.Family); err != nil {
			return fmt.Errorf("real %s: %w", r.Key(), err)
		}
	}
	// Duplicates: a nested loop for the usual handful of reals (no
	// allocation on the path of a single weight change), a set beyond.
	if len(s.Reals) <= 32 {
		for i := range s.Reals {
			for j := range i {
				if s.Reals[i].Key() == s.Reals[j].Key() {
					return fmt.Errorf("real %s is listed twice", s.Reals[i].Key())
				}
			}
		}
		return nil
	}
	seen := make(map[RealKey]bool, len(s.Reals))
	for _, r := range s.Reals {
		if seen[r.Key()] {
			return fmt.Errorf("real %s is listed twice", r.Key())
		}
		seen[r.Key()] = true
	}
	return nil
}

func (r Real) validate(f Family) error {
	if !r.Addr.IsValid() || r.Addr.Is4In6() || r.Addr.Zone() != "" {
		return fmt.Errorf("bad address %s", r.Addr)
	}
	// moby/ipvs sends no destination family, so the kernel takes the
	// service's: a real of the other family cannot be expressed.
	if FamilyOf(r.Addr) != f {
		return fmt.Errorf("address family differs from the service's (%s)", f)
	}
	switch r.Forward {
	case ForwardNAT, ForwardTunnel, ForwardDR:
	default:
		return fmt.Errorf("unsupported forwarding method %d", r.Forward)
	}
	if r.LowerThreshold > r.UpperThreshold {
		return fmt.Errorf("lower threshold %d above upper threshold %d", r.LowerThreshold, r.UpperThreshold)
	}
	return nil
}

// Desired is the whole IPVS state kglb wants: every service it owns.
type Desired struct {
	Services []Service
	// Changed, when not nil, lists (ascending) the indexes of the
	// services that may differ from the Desired of the previous Apply or
	// Resync: every other service is the one handed then, at the same
	// index, with the same value. A reconciler whose last pass reached
	// that value then looks at these services only, so a health change
	// among 10,000 services costs the services it touches
	// (lb's BenchmarkVerdictScale). Nil: any service may differ.
	Changed []int
}
