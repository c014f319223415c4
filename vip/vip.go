// Package vip owns the virtual IP addresses that kglb makes local on its
// load balancer: it keeps the set of VIPs held by kglb's link (a dummy
// `kglb0` that kglb creates, or an existing link an operator names) equal to
// the desired set, with the fewest kernel writes, and never touches an entry
// it does not own.
//
// A VIP is held in one of two representations (Mode):
//
//   - route (the default): a `local` host route in the local table,
//     `local 198.51.100.10/32 dev kglb0 table local proto kglb` (and /128 for
//     IPv6). The kernel treats the destination as its own, so IPVS sees the
//     packets at LOCAL_IN, sockets can bind an IPv4 VIP and ARP answers it.
//     Adding one costs the same at 20,000 VIPs as at 1,000, because it is one
//     insert into the local table's trie. kglb tags these routes with its own
//     rtnetlink protocol number, ProtoKGLB (0xa7, shown as `proto 167` or,
//     with an entry in /etc/iproute2/rt_protos.d, `proto kglb`), so the
//     kernel itself records what kglb owns: ownership survives a restart with
//     no state file, and `ip route show table local proto 167` lists it.
//   - address: a /32 or /128 address on the link (IPv6 with IFA_F_NODAD so
//     it is usable at once), for operators who want `ip addr` to show the
//     VIPs. Each add walks the link's whole address list (devinet.c
//     __inet_insert_ifa), so the cost per VIP grows with the count: 10,000
//     took 2.6 s and 20,000 took 14 s on one link. Addresses have no owner
//     tag kglb can use for both families: IPv4 labels are limited to 15
//     characters and must start with the link name, IPv6 has none, and the
//     address protocol (IFA_PROTO, Linux 5.18) is not in the netlink library
//     kglb uses. So kglb records the addresses it owns in a file under its
//     state directory ("vip-addresses"), written atomically before it adds
//     and after it deletes; the record names its link, and owns nothing on
//     another. An IPv6 address that is tentative or failed duplicate
//     address detection (an operator's, added without nodad) holds
//     nothing: its VIP is not held, and kglb adds no second one.
//
// The link and mode are fixed for a Reconciler (the daemon reads them at
// start). A start with another link or mode first removes what kglb left
// under the old ones, once its link exists (a missing link leaves the old
// entries in place, though no VIP is held until it appears) and, in
// address mode, once the ownership record can be written, and nothing else: its routes (ProtoKGLB) on every
// link it no longer holds VIPs on by route, and the addresses its record
// names on another link, or anywhere in route mode. Addresses not yet
// removed stay in the record, under their link, until they are.
//
// In route mode an IPv6 VIP is local for forwarding and IPVS, but a socket can
// bind it only with IP_FREEBIND or through a wildcard listener, and neighbour
// discovery does not answer it (the kernel checks the address list for both);
// kglb announces VIPs by BGP with its own address as next hop, so neither is
// needed for load balancing.
//
// The Reconciler reads the kernel once per Apply, diffs, and issues only the
// writes that differ; an Apply of the set the last one reached in full reads
// nothing until the next Resync, which reads again and repairs drift. The kernel is reached through the small Kernel
// interface, implemented over rtnetlink by Netlink and in memory by Fake.
package vip

import (
	"errors"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// ProtoKGLB is the rtnetlink route protocol (rtm_protocol) that marks a local
// route as kglb's. 0xa7 (167) is unassigned in the kernel's rtnetlink.h and
// in iproute2's rt_protos, and sits apart from the routing daemons' numbers
// (bird 12, zebra 11, bgp 186-192).
const ProtoKGLB uint8 = 0xa7

// DefaultLink is the name of kglb's own dummy link. kglb creates it when it
// is missing; any other configured link must already exist and is never
// created or deleted by kglb.
const DefaultLink = "kglb0"

// Mode is how the kernel holds a VIP.
type Mode string

const (
	// ModeRoute holds a VIP as a local route in the local table, tagged with
	// ProtoKGLB. Its cost per VIP is flat in the number of VIPs.
	ModeRoute Mode = "route"
	// ModeAddress holds a VIP as a host address on the link (nodad for IPv6),
	// visible in `ip addr`; its cost per VIP grows with the count.
	ModeAddress Mode = "address"
)

// ParseMode returns the Mode named s; the empty string is ModeRoute.
func ParseMode(s string) (Mode, error) {
	switch Mode(s) {
	case "", ModeRoute:
		return ModeRoute, nil
	case ModeAddress:
		return ModeAddress, nil
	}
	return "", fmt.Errorf("unknown vip mode %q: use %q or %q", s, ModeRoute, ModeAddress)
}

// Entry is one VIP-shaped thing on the link: a local route of the local
// table (route mode) or an address (address mode).
type Entry struct {
	// Prefix is the destination (route) or the address with its prefix
	// length (address). kglb writes host prefixes only (/32, /128); a list
	// may hold others, which kglb never touches.
	Prefix netip.Prefix
	// Proto is the route's rtnetlink protocol: ProtoKGLB for kglb's routes,
	// RTPROT_KERNEL for the routes the kernel adds for an address, others
	// for an operator's or another daemon's. Zero for addresses.
	Proto uint8
	// State is whether an address is usable (AddrUsable for every route).
	// A List sets it; a write ignores it.
	State AddrState
}

func (e Entry) String() string {
	s := e.Prefix.String()
	if e.Proto != 0 {
		s += " proto " + protoName(e.Proto)
	}
	switch e.State {
	case AddrTentative:
		s += " tentative"
	case AddrDADFailed:
		s += " dadfailed"
	}
	return s
}

// AddrState is whether the kernel delivers packets to an address yet. Only
// an IPv6 address added without nodad is ever other than usable: the kernel
// holds it (adding it again is EEXIST) but gives it a local route only once
// duplicate address detection has found no other host with it.
type AddrState uint8

const (
	// AddrUsable: the address is the host's.
	AddrUsable AddrState = iota
	// AddrTentative: duplicate address detection is under way
	// (IFA_F_TENTATIVE); it ends in a second or two.
	AddrTentative
	// AddrDADFailed: duplicate address detection found another host with
	// the address (IFA_F_DADFAILED); the address stays unusable until it
	// is removed.
	AddrDADFailed
)

// LinkEntry is an entry and the name of the link it is on.
type LinkEntry struct {
	Link string
	Entry
}

// Kernel is what the Reconciler needs from the kernel, for one link. Its
// methods mirror the rtnetlink calls one to one and return the kernel's
// errors (unix.EEXIST, unix.ESRCH, unix.EADDRNOTAVAIL, unix.ENODEV), so the
// Fake can stand in for it exactly.
type Kernel interface {
	// Link returns the link's name.
	Link() string
	// EnsureLink makes sure the link exists. kglb's own dummy link
	// (DefaultLink) is created when missing and brought up; a configured
	// link must already exist, and is neither created nor changed. It
	// reports whether it wrote anything.
	EnsureLink() (changed bool, err error)
	// List returns every entry of the mode on the link, in one dump: local
	// routes of the local table whose device is the link, or the link's
	// addresses.
	List(m Mode) ([]Entry, error)
	// Write issues ws in order, each on its own, and returns one error per
	// write (nil: done). An add is EEXIST if the kernel already has the
	// entry; a delete removes a route only when its protocol matches and is
	// ESRCH (route) or EADDRNOTAVAIL (address) if there is none. A write
	// whose answer never came (no ack within nlbatch.AckTimeout) fails with
	// an error wrapping nlbatch.ErrUnknown: the kernel may have made it;
	// the writes of the messages after its own then fail unsent
	// (nlbatch.ErrNotSent).
	Write(m Mode, ws []Change) []error

	// What follows reaches past the link, for the clean-up of what kglb
	// left elsewhere when vip_interface or vip_mode changed (see sweep).

	// ListProto returns the local routes of the local table that carry
	// proto, on every link of the namespace, in one dump.
	ListProto(proto uint8) ([]LinkEntry, error)
	// WriteOn is Write on the link named link; every write on a link that
	// does not exist is ENODEV.
	WriteOn(link string, m Mode, ws []Change) []error
}

// The operations of a Change (and of a Write in a plan).
const (
	OpAdd = "add"
	OpDel = "del"
)

// Change is one kernel write: Op (OpAdd; anything else deletes) of a host
// entry.
type Change struct {
	Op    string
	Entry Entry
}

// isExist reports whether err says the entry is already there.
func isExist(err error) bool { return errors.Is(err, unix.EEXIST) }

// isNotExist reports whether err says the entry is already gone. The kernel
// answers a route delete with ESRCH and an address delete with EADDRNOTAVAIL.
func isNotExist(err error) bool {
	return errors.Is(err, unix.ESRCH) || errors.Is(err, unix.EADDRNOTAVAIL) || errors.Is(err, unix.ENOENT)
}

// hostPrefix is the /32 or /128 of a.
func hostPrefix(a netip.Addr) netip.Prefix {
	return netip.PrefixFrom(a, a.BitLen())
}

func protoName(p uint8) string {
	switch p {
	case unix.RTPROT_KERNEL:
		return "kernel"
	case unix.RTPROT_BOOT:
		return "boot"
	case unix.RTPROT_STATIC:
		return "static"
	case ProtoKGLB:
		return "kglb"
	}
	return fmt.Sprint(p)
}
