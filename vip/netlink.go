package vip

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/kglb/kglb/internal/nlbatch"
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
}

// Netlink is the Kernel over rtnetlink, for one link in one network
// namespace. One dump per List; Write sends up to 64 requests per sendmsg,
// each acked on its own (internal/nlbatch).
//
// Every read waits at most nlbatch.AckTimeout for each reply, as the writes
// wait for their acks: the reconciler calls it holding the lock every pass,
// resync and metrics scrape takes, and a reply that never comes must fail
// the pass (which is retried), not hang the engine.
type Netlink struct {
	h       *netlink.Handle // reads, replaced after a read timed out
	ns      netns.NsHandle  // h's namespace, kept to open h again
	timeout time.Duration   // of each reply h waits for
	w       *nlbatch.Socket // writes
	link    string
	mu      sync.Mutex // held for a whole call (locked)
	linkIdx int
	closed  bool
}

var _ Kernel = (*Netlink)(nil)

// NewNetlink opens a route netlink handle in the configured namespace. The
// link is looked up (and created) by EnsureLink, not here, so a daemon can
// start before its link appears.
func NewNetlink(opts NetlinkOptions) (*Netlink, error) {
	n := &Netlink{link: opts.Link, ns: netns.None(), timeout: nlbatch.AckTimeout}
	if n.link == "" {
		n.link = DefaultLink
	}
	if opts.NetNS != "" {
		var err error
		// Kept open (until Close) to open the read socket again there
		// after a timeout (see noReply).
		n.ns, err = netns.GetFromPath(opts.NetNS)
		if err != nil {
			return nil, fmt.Errorf("open network namespace %s: %w", opts.NetNS, err)
		}
	}
	h, err := n.open()
	if err != nil {
		n.ns.Close()
		return nil, err
	}
	w, err := nlbatch.Open(n.ns, unix.NETLINK_ROUTE)
	if err != nil {
		h.Close()
		n.ns.Close()
		return nil, fmt.Errorf("open route netlink write socket: %w", err)
	}
	n.h, n.w = h, w
	return n, nil
}

// open opens a read handle in n's namespace, each reply waited for at most
// n.timeout.
func (n *Netlink) open() (*netlink.Handle, error) {
	var (
		h   *netlink.Handle
		err error
	)
	if n.ns.IsOpen() {
		h, err = netlink.NewHandleAt(n.ns, unix.NETLINK_ROUTE)
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
	// The library turns it into a deadline on each send and each receive,
	// and reports one that passed as EAGAIN (see noReply).
	if err := h.SetSocketTimeout(n.timeout); err != nil {
		h.Close()
		return nil, fmt.Errorf("set route netlink socket timeout: %w", err)
	}
	return h, nil
}

// noReply says that the reply to a request on h did not come within
// n.timeout (the library's EAGAIN), and replaces h with a new socket.
// Keeping h would be wrong: a dump the kernel began for h, whose replies
// did not come, stays under way until h reads one, and refuses the next
// dump on h (EBUSY); and the replies that come late would sit in front of
// the next request's (the library skips them by sequence number, but reads
// each). Other errors are returned as they are; the caller names the
// operation and the link. It is called with n.mu held.
func (n *Netlink) noReply(h *netlink.Handle, err error) error {
	if !errors.Is(err, unix.EAGAIN) {
		return err
	}
	err = fmt.Errorf("no reply within %s: %w", n.timeout, err)
	if n.closed || n.h != h {
		return err
	}
	nh, oerr := n.open()
	if oerr != nil {
		return errors.Join(err, oerr) // h stays, the best there is
	}
	h.Close()
	n.h = nh
	return err
}

// errClosed is returned after Close. It matters: a closed netlink.Handle
// silently falls back to the caller's namespace.
var errClosed = errors.New("vip netlink kernel is closed")

var errNoLink = errors.New("link not looked up: call EnsureLink first")

// Close releases the netlink sockets. Every call after Close fails.
func (n *Netlink) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.closed {
		n.h.Close()
		n.w.Close()
		n.ns.Close()
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
	h, err := n.locked()
	if err != nil {
		return false, err
	}
	defer n.mu.Unlock()
	l, err := h.LinkByName(n.link)
	err = n.noReply(h, err)
	changed := false
	var notFound netlink.LinkNotFoundError
	switch {
	case err == nil:
	case errors.As(err, &notFound) && n.link == DefaultLink:
		d := &netlink.Dummy{LinkAttrs: netlink.NewLinkAttrs()}
		d.Name = n.link
		if err := h.LinkAdd(d); err != nil && !errors.Is(err, unix.EEXIST) {
			return false, fmt.Errorf("create dummy link: %w", n.noReply(h, err))
		}
		changed = true
		if l, err = h.LinkByName(n.link); err != nil {
			return true, fmt.Errorf("look up link after creating it: %w", n.noReply(h, err))
		}
	case errors.As(err, &notFound):
		return false, fmt.Errorf("%w (kglb creates only %s; a configured link must exist)", unix.ENODEV, DefaultLink)
	default:
		return false, fmt.Errorf("look up link: %w", err)
	}
	// A configured link's admin state is the operator's; kglb's own link
	// must be up for its routes to be used.
	if n.link == DefaultLink && l.Attrs().Flags&net.FlagUp == 0 {
		if err := h.LinkSetUp(l); err != nil {
			return changed, fmt.Errorf("set link up: %w", n.noReply(h, err))
		}
		changed = true
	}
	n.linkIdx = l.Attrs().Index
	return changed, nil
}

// LookupLink looks the link up without creating or changing it (for a
// plan): found is false when it does not exist.
func (n *Netlink) LookupLink() (found bool, err error) {
	h, err := n.locked()
	if err != nil {
		return false, err
	}
	defer n.mu.Unlock()
	l, err := h.LinkByName(n.link)
	err = n.noReply(h, err)
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

// locked takes n.mu for a whole call, reads and writes: noReply closes
// the read socket and opens another, so a call that took the handle and let
// the lock go would go on with a closed socket, whose descriptor number the
// next socket opened may already have (its reads then someone else's
// replies). Every call waits for the one before it; the reconciler makes
// them one at a time anyway.
func (n *Netlink) locked() (*netlink.Handle, error) {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil, errClosed
	}
	return n.h, nil
}

// dumpRetries bounds the retries of a dump the kernel interrupted because
// the table changed under it (NLM_F_DUMP_INTR).
const dumpRetries = 5

// List dumps the local routes of the local table on the link (route mode)
// or the link's addresses (address mode), for both families at once.
func (n *Netlink) List(m Mode) ([]Entry, error) {
	h, err := n.locked()
	if err != nil {
		return nil, err
	}
	defer n.mu.Unlock()
	idx := n.linkIdx
	if idx == 0 {
		return nil, errNoLink
	}
	for try := 0; ; try++ {
		var out []Entry
		switch m {
		case ModeRoute:
			out, err = listRoutes(h, idx)
		case ModeAddress:
			out, err = listAddrs(h, idx)
		default:
			return nil, fmt.Errorf("unknown mode %q", m)
		}
		if errors.Is(err, netlink.ErrDumpInterrupted) && try < dumpRetries {
			continue
		}
		return out, n.noReply(h, err)
	}
}

func listRoutes(h *netlink.Handle, idx int) ([]Entry, error) {
	var out []Entry
	filter := &netlink.Route{Table: unix.RT_TABLE_LOCAL, LinkIndex: idx, Type: unix.RTN_LOCAL}
	err := h.RouteListFilteredIter(netlink.FAMILY_ALL, filter,
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

func listAddrs(h *netlink.Handle, idx int) ([]Entry, error) {
	// A link value with only the index set: AddrList filters on it.
	link := &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: idx}}
	addrs, err := h.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return nil, err
	}
	out := make([]Entry, 0, len(addrs))
	for _, a := range addrs {
		if p, ok := prefixOf(a.IPNet); ok {
			out = append(out, Entry{Prefix: p, State: addrState(a.Flags)})
		}
	}
	return out, nil
}

// addrState reads an address's flags (IFA_FLAGS, which carries all 32 bits).
// DAD-failed addresses stay tentative too, so that flag is looked at first.
func addrState(flags int) AddrState {
	switch {
	case flags&unix.IFA_F_DADFAILED != 0:
		return AddrDADFailed
	case flags&unix.IFA_F_TENTATIVE != 0:
		return AddrTentative
	}
	return AddrUsable
}

// ListProto dumps the local routes of the local table that carry proto, on
// every link, and names each route's link (looked up after the dump: the
// handle's socket is busy during it).
func (n *Netlink) ListProto(proto uint8) ([]LinkEntry, error) {
	h, err := n.locked()
	if err != nil {
		return nil, err
	}
	defer n.mu.Unlock()
	type route struct {
		idx int
		e   Entry
	}
	var routes []route
	for try := 0; ; try++ {
		routes = routes[:0]
		filter := &netlink.Route{Table: unix.RT_TABLE_LOCAL, Type: unix.RTN_LOCAL, Protocol: netlink.RouteProtocol(proto)}
		err := h.RouteListFilteredIter(netlink.FAMILY_ALL, filter,
			netlink.RT_FILTER_TABLE|netlink.RT_FILTER_TYPE|netlink.RT_FILTER_PROTOCOL,
			func(r netlink.Route) bool {
				if p, ok := prefixOf(r.Dst); ok {
					routes = append(routes, route{r.LinkIndex, Entry{Prefix: p, Proto: uint8(r.Protocol)}})
				}
				return true
			})
		if errors.Is(err, netlink.ErrDumpInterrupted) && try < dumpRetries {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("dump the local routes of protocol %d: %w", proto, n.noReply(h, err))
		}
		break
	}
	names := map[int]string{}
	out := make([]LinkEntry, 0, len(routes))
	for _, r := range routes {
		name, ok := names[r.idx]
		if !ok {
			l, err := h.LinkByIndex(r.idx)
			if err != nil {
				return nil, fmt.Errorf("look up link %d of local route %s: %w", r.idx, r.e.Prefix, n.noReply(h, err))
			}
			name = l.Attrs().Name
			names[r.idx] = name
		}
		out = append(out, LinkEntry{Link: name, Entry: r.e})
	}
	return out, nil
}

// Write sends ws as `ip route add|del local <prefix> dev <link> table local
// proto <e.Proto> scope host` (route mode) or `ip addr add|del <prefix> dev
// <link>` (address mode, IPv6 nodad), the requests the netlink library
// would send one at a time, up to 64 per sendmsg. An add carries
// NLM_F_EXCL, so an existing entry is EEXIST; a route delete matches the
// protocol, so only a route carrying e.Proto goes.
func (n *Netlink) Write(m Mode, ws []Change) []error {
	if _, err := n.locked(); err != nil {
		return nlbatch.Fail(len(ws), err)
	}
	defer n.mu.Unlock()
	if n.linkIdx == 0 {
		return nlbatch.Fail(len(ws), errNoLink)
	}
	return n.write(n.linkIdx, m, ws)
}

// WriteOn is Write on the link named link, looked up by name now.
func (n *Netlink) WriteOn(link string, m Mode, ws []Change) []error {
	h, err := n.locked()
	if err != nil {
		return nlbatch.Fail(len(ws), err)
	}
	defer n.mu.Unlock()
	l, err := h.LinkByName(link)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
		return nlbatch.Fail(len(ws), unix.ENODEV)
	case err != nil:
		return nlbatch.Fail(len(ws), fmt.Errorf("look up link %s: %w", link, n.noReply(h, err)))
	}
	return n.write(l.Attrs().Index, m, ws)
}

// write is Write on the link of index idx. It is called with n.mu held.
func (n *Netlink) write(idx int, m Mode, ws []Change) []error {
	if m != ModeRoute && m != ModeAddress {
		return nlbatch.Fail(len(ws), fmt.Errorf("unknown mode %q", m))
	}
	return n.w.Write(len(ws), func(b []byte, i int) ([]byte, uint16, uint16) {
		w := ws[i]
		switch {
		case m == ModeRoute && w.Op == OpAdd:
			return appendRoute(b, idx, w), unix.RTM_NEWROUTE, unix.NLM_F_CREATE | unix.NLM_F_EXCL
		case m == ModeRoute:
			return appendRoute(b, idx, w), unix.RTM_DELROUTE, 0
		case w.Op == OpAdd:
			return appendAddr(b, idx, w), unix.RTM_NEWADDR, unix.NLM_F_CREATE | unix.NLM_F_EXCL
		}
		return appendAddr(b, idx, w), unix.RTM_DELADDR, 0
	})
}

// appendRoute appends the rtmsg and attributes of `local <prefix> dev
// <link> table local proto <e.Proto> scope host`. The scope is sent on
// delete too: IPv4 matches it (zero would mean universe, and local routes
// are host).
func appendRoute(b []byte, idx int, w Change) []byte {
	p := w.Entry.Prefix
	b = append(b,
		family(p), uint8(p.Bits()), 0, 0, // family, dst_len, src_len, tos
		unix.RT_TABLE_LOCAL, w.Entry.Proto, unix.RT_SCOPE_HOST, unix.RTN_LOCAL)
	b = binary.NativeEndian.AppendUint32(b, 0) // rtm_flags
	b = nlbatch.AppendAttr(b, unix.RTA_DST, p.Addr().AsSlice())
	return nlbatch.AppendAttr(b, unix.RTA_OIF, binary.NativeEndian.AppendUint32(nil, uint32(idx)))
}

// appendAddr appends the ifaddrmsg and attributes of a host address: its
// local and peer address the same, no broadcast (a host prefix has none).
// IPv6 addresses skip duplicate address detection, which would keep them
// tentative (unusable) for a second or more, and for a VIP that many LBs
// share would always fail.
func appendAddr(b []byte, idx int, w Change) []byte {
	p := w.Entry.Prefix
	var flags uint8
	if p.Addr().Is6() {
		flags = unix.IFA_F_NODAD
	}
	b = append(b, family(p), uint8(p.Bits()), flags, 0) // family, prefixlen, flags, scope
	b = binary.NativeEndian.AppendUint32(b, uint32(idx))
	a := p.Addr().AsSlice()
	b = nlbatch.AppendAttr(b, unix.IFA_LOCAL, a)
	return nlbatch.AppendAttr(b, unix.IFA_ADDRESS, a)
}

func family(p netip.Prefix) uint8 {
	if p.Addr().Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
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
