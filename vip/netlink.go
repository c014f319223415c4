package vip

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NetlinkOptions configures a Netlink kernel.
type NetlinkOptions struct {
	// Link is the link that holds the VIPs. "" or DefaultLink is kglb's own
	// dummy link, created when missing; any other name must exist.
	Link string
	// NetNS is the path of the network namespace to work in (for example
	// /var/run/netns/lb or /proc/1234/ns/net); "" is the caller's.
	NetNS string
	// Handle, when set, is used instead of opening one (NetNS is then
	// ignored); the caller keeps ownership and Close leaves it open.
	Handle *netlink.Handle
}

// Netlink is the Kernel over rtnetlink, for one link in one network
// namespace. One dump per List, one request and ACK per Add or Del.
type Netlink struct {
	h       *netlink.Handle
	ownH    bool
	link    string
	mu      sync.Mutex
	linkIdx int
	closed  bool
}

var _ Kernel = (*Netlink)(nil)

// NewNetlink opens a route netlink handle in the configured namespace. The
// link is looked up (and created) by EnsureLink, not here, so a daemon can
// start before its link appears.
func NewNetlink(opts NetlinkOptions) (*Netlink, error) {
	n := &Netlink{h: opts.Handle, link: opts.Link}
	if n.link == "" {
		n.link = DefaultLink
	}
	if n.h != nil {
		return n, nil
	}
	ns := netns.None()
	if opts.NetNS != "" {
		var err error
		ns, err = netns.GetFromPath(opts.NetNS)
		if err != nil {
			return nil, fmt.Errorf("open network namespace %s: %w", opts.NetNS, err)
		}
		// The handle's socket keeps the namespace; the file is not needed
		// once it is open.
		defer ns.Close()
	}
	var (
		h   *netlink.Handle
		err error
	)
	if ns.IsOpen() {
		h, err = netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	} else {
		h, err = netlink.NewHandle(unix.NETLINK_ROUTE)
	}
	if err != nil {
		return nil, fmt.Errorf("open route netlink socket: %w", err)
	}
	// With strict checking the kernel filters a route dump by the table,
	// type and device in the request, so List reads the link's local
	// routes rather than every route of the host (a router's full table).
	// Kernels before 4.20 lack it; the library filters the same way.
	_ = h.SetStrictCheck(true)
	n.h, n.ownH = h, true
	return n, nil
}

// errClosed is returned after Close. It matters: a closed netlink.Handle
// silently falls back to the caller's namespace.
var errClosed = errors.New("vip netlink kernel is closed")

// Close releases the netlink socket if NewNetlink opened it. Every call
// after Close fails.
func (n *Netlink) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ownH && !n.closed {
		n.h.Close()
	}
	n.closed = true
	return nil
}

// Link returns the link's name.
func (n *Netlink) Link() string { return n.link }

// EnsureLink looks the link up, creating DefaultLink as a dummy link and
// bringing it up when needed. It is called on every Apply, so a link deleted
// by hand comes back (empty) and is refilled by the same Apply.
func (n *Netlink) EnsureLink() (bool, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return false, errClosed
	}
	l, err := n.h.LinkByName(n.link)
	changed := false
	var notFound netlink.LinkNotFoundError
	switch {
	case err == nil:
	case errors.As(err, &notFound) && n.link == DefaultLink:
		d := &netlink.Dummy{LinkAttrs: netlink.NewLinkAttrs()}
		d.Name = n.link
		if err := n.h.LinkAdd(d); err != nil && !errors.Is(err, unix.EEXIST) {
			return false, fmt.Errorf("create dummy link: %w", err)
		}
		changed = true
		if l, err = n.h.LinkByName(n.link); err != nil {
			return true, fmt.Errorf("look up link after creating it: %w", err)
		}
	case errors.As(err, &notFound):
		return false, fmt.Errorf("%w (kglb creates only %s; a configured link must exist)", unix.ENODEV, DefaultLink)
	default:
		return false, fmt.Errorf("look up link: %w", err)
	}
	// A configured link's admin state is the operator's; kglb's own link
	// must be up for its routes to be used.
	if n.link == DefaultLink && l.Attrs().Flags&net.FlagUp == 0 {
		if err := n.h.LinkSetUp(l); err != nil {
			return changed, fmt.Errorf("set link up: %w", err)
		}
		changed = true
	}
	n.linkIdx = l.Attrs().Index
	return changed, nil
}

// LookupLink looks the link up without creating or changing it (for a
// plan): found is false when it does not exist.
func (n *Netlink) LookupLink() (found bool, err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return false, errClosed
	}
	l, err := n.h.LinkByName(n.link)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("look up link: %w", err)
	}
	n.linkIdx = l.Attrs().Index
	return true, nil
}

func (n *Netlink) index() (int, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return 0, errClosed
	}
	if n.linkIdx == 0 {
		return 0, errors.New("link not looked up: call EnsureLink first")
	}
	return n.linkIdx, nil
}

// dumpRetries bounds the retries of a dump the kernel interrupted because
// the table changed under it (NLM_F_DUMP_INTR).
const dumpRetries = 5

// List dumps the local routes of the local table on the link (route mode)
// or the link's addresses (address mode), for both families at once.
func (n *Netlink) List(m Mode) ([]Entry, error) {
	idx, err := n.index()
	if err != nil {
		return nil, err
	}
	for try := 0; ; try++ {
		var out []Entry
		switch m {
		case ModeRoute:
			out, err = n.listRoutes(idx)
		case ModeAddress:
			out, err = n.listAddrs(idx)
		default:
			return nil, fmt.Errorf("unknown mode %q", m)
		}
		if errors.Is(err, netlink.ErrDumpInterrupted) && try < dumpRetries {
			continue
		}
		return out, err
	}
}

func (n *Netlink) listRoutes(idx int) ([]Entry, error) {
	var out []Entry
	filter := &netlink.Route{Table: unix.RT_TABLE_LOCAL, LinkIndex: idx, Type: unix.RTN_LOCAL}
	err := n.h.RouteListFilteredIter(netlink.FAMILY_ALL, filter,
		netlink.RT_FILTER_TABLE|netlink.RT_FILTER_OIF|netlink.RT_FILTER_TYPE,
		func(r netlink.Route) bool {
			if p, ok := prefixOf(r.Dst); ok {
				out = append(out, Entry{Prefix: p, Proto: uint8(r.Protocol)})
			}
			return true
		})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (n *Netlink) listAddrs(idx int) ([]Entry, error) {
	// A link value with only the index set: AddrList filters on it.
	link := &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: idx}}
	addrs, err := n.h.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return nil, err
	}
	out := make([]Entry, 0, len(addrs))
	for _, a := range addrs {
		if p, ok := prefixOf(a.IPNet); ok {
			out = append(out, Entry{Prefix: p})
		}
	}
	return out, nil
}

// Add adds a local route tagged ProtoKGLB or a host address (IPv6 nodad).
// Both are one request with NLM_F_EXCL, so an existing entry is EEXIST.
func (n *Netlink) Add(m Mode, e Entry) error {
	idx, err := n.index()
	if err != nil {
		return err
	}
	switch m {
	case ModeRoute:
		return n.h.RouteAdd(localRoute(idx, e))
	case ModeAddress:
		return n.h.AddrAdd(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: idx}}, hostAddr(idx, e))
	}
	return fmt.Errorf("unknown mode %q", m)
}

// Del deletes a local route (the kernel matches its protocol, so only a
// route carrying e.Proto goes) or an address.
func (n *Netlink) Del(m Mode, e Entry) error {
	idx, err := n.index()
	if err != nil {
		return err
	}
	switch m {
	case ModeRoute:
		return n.h.RouteDel(localRoute(idx, e))
	case ModeAddress:
		return n.h.AddrDel(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: idx}}, hostAddr(idx, e))
	}
	return fmt.Errorf("unknown mode %q", m)
}

// localRoute is `local <prefix> dev <link> table local proto <e.Proto>
// scope host`. The scope must be sent on delete too: the library sends the
// route's Scope field, and IPv4 matches it (zero would mean universe, and
// local routes are host).
func localRoute(idx int, e Entry) *netlink.Route {
	return &netlink.Route{
		LinkIndex: idx,
		Dst:       ipNet(e.Prefix),
		Table:     unix.RT_TABLE_LOCAL,
		Type:      unix.RTN_LOCAL,
		Scope:     netlink.SCOPE_HOST,
		Protocol:  netlink.RouteProtocol(e.Proto),
	}
}

// hostAddr is the address for e; IPv6 addresses skip duplicate address
// detection, which would keep them tentative (unusable) for a second or
// more, and for a VIP that many LBs share would always fail.
func hostAddr(idx int, e Entry) *netlink.Addr {
	a := &netlink.Addr{IPNet: ipNet(e.Prefix), LinkIndex: idx}
	if e.Prefix.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
	return a
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, bits := n.Mask.Size()
	a = a.Unmap()
	if bits == 128 && a.Is4() {
		ones -= 96
	}
	p := netip.PrefixFrom(a, ones)
	return p, p.IsValid()
}
