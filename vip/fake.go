package vip

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Fake is an in-memory Kernel for one link of a network namespace that may
// hold several (On returns another link of the same namespace), with the
// kernel's rules:
//
//   - adding an entry that exists is EEXIST; the local table is the
//     namespace's, whatever the link: an IPv4 local route is keyed by its
//     prefix alone, so it clashes whatever its protocol or link, while an
//     IPv6 route is also keyed by its metric, so a route added by a user
//     (metric 1024) sits beside the one the kernel made for an address
//     (metric 0); addresses are the link's own;
//   - deleting a route that is not there, or whose protocol differs, is
//     ESRCH; deleting a missing address is EADDRNOTAVAIL;
//   - an address brings its own local route (protocol kernel) and takes it
//     away when deleted; an IPv6 address added without nodad (AddTentative)
//     has none until its duplicate address detection succeeds (EndDAD);
//   - every call on a missing link is ENODEV, and deleting the link removes
//     everything on it.
//
// String prints the link's state sorted, so a test compares text. Writes
// and Dumps count the calls that reached this Fake (not its siblings).
type Fake struct {
	ns   *fakeNS
	link string

	// Writes counts the writes, failed ones included (EnsureLink counts
	// only when it changes the link).
	Writes int
	// Dumps counts the List and ListProto calls.
	Dumps int
	// Fail, when set, is asked before each write (op OpAdd or OpDel) on
	// this Fake's link or, through WriteOn, another; a non-nil error is its
	// answer instead of doing it (it is still counted).
	Fail func(op string, m Mode, e Entry) error
}

// fakeNS is the namespace the Fakes of one NewFake share: its links and its
// local table.
type fakeNS struct {
	mu    sync.Mutex
	links map[string]*fakeLink
	// routes is the local table: each route and the link it is on.
	routes map[LinkEntry]bool
	// prefixRoutes counts the routes per prefix, whatever their protocol
	// or link.
	prefixRoutes map[netip.Prefix]int
}

type fakeLink struct {
	exists, up bool
	addrs      map[netip.Prefix]AddrState
}

var _ Kernel = (*Fake)(nil)

// NewFake returns a Fake for the link named link ("" is DefaultLink), in a
// namespace of its own. kglb's own link starts missing, as on a fresh
// machine; another link starts present and up, as an operator's link would
// be.
func NewFake(link string) *Fake {
	ns := &fakeNS{links: map[string]*fakeLink{}, routes: map[LinkEntry]bool{}, prefixRoutes: map[netip.Prefix]int{}}
	return ns.fake(link)
}

// On returns a Fake for the link named link in f's namespace: the same local
// table, and the link as NewFake would start it if f's namespace has not
// seen it yet.
func (f *Fake) On(link string) *Fake {
	f.ns.mu.Lock()
	defer f.ns.mu.Unlock()
	return f.ns.fake(link)
}

// fake returns a Fake for link, adding the link as NewFake starts it.
func (ns *fakeNS) fake(link string) *Fake {
	if link == "" {
		link = DefaultLink
	}
	if ns.links[link] == nil {
		l := &fakeLink{addrs: map[netip.Prefix]AddrState{}}
		if link != DefaultLink {
			l.exists, l.up = true, true
		}
		ns.links[link] = l
	}
	return &Fake{ns: ns, link: link}
}

// Link returns the link's name.
func (f *Fake) Link() string { return f.link }

// EnsureLink creates and brings up DefaultLink when missing; a configured
// link that is missing is an error.
func (f *Fake) EnsureLink() (bool, error) {
	f.ns.mu.Lock()
	defer f.ns.mu.Unlock()
	l := f.ns.links[f.link]
	if l.exists {
		return false, nil
	}
	if f.link != DefaultLink {
		return false, fmt.Errorf("%w (kglb creates only %s; a configured link must exist)", unix.ENODEV, DefaultLink)
	}
	f.Writes++
	l.exists, l.up = true, true
	return true, nil
}

// DeleteLink removes the link and everything on it, as `ip link del` does.
func (f *Fake) DeleteLink() {
	f.ns.mu.Lock()
	defer f.ns.mu.Unlock()
	l := f.ns.links[f.link]
	l.exists, l.up = false, false
	clear(l.addrs)
	for e := range f.ns.routes {
		if e.Link == f.link {
			f.ns.delRoute(e)
		}
	}
}

// List returns the entries of mode m on the link, sorted.
func (f *Fake) List(m Mode) ([]Entry, error) {
	f.ns.mu.Lock()
	defer f.ns.mu.Unlock()
	f.Dumps++
	l := f.ns.links[f.link]
	if !l.exists {
		return nil, unix.ENODEV
	}
	var out []Entry
	switch m {
	case ModeRoute:
		for e := range f.ns.routes {
			if e.Link == f.link {
				out = append(out, e.Entry)
			}
		}
	case ModeAddress:
		for p, s := range l.addrs {
			out = append(out, Entry{Prefix: p, State: s})
		}
	default:
		return nil, fmt.Errorf("unknown mode %q", m)
	}
	slices.SortFunc(out, compareEntry)
	return out, nil
}

// ListProto returns the local routes that carry proto on every link of the
// namespace, sorted by link and route.
func (f *Fake) ListProto(proto uint8) ([]LinkEntry, error) {
	f.ns.mu.Lock()
	defer f.ns.mu.Unlock()
	f.Dumps++
	var out []LinkEntry
	for e := range f.ns.routes {
		if e.Proto == proto {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b LinkEntry) int {
		if c := strings.Compare(a.Link, b.Link); c != 0 {
			return c
		}
		return compareEntry(a.Entry, b.Entry)
	})
	return out, nil
}

// Write issues ws in order on the link, as the kernel takes a batch of
// requests: each on its own, one error per write.
func (f *Fake) Write(m Mode, ws []Change) []error {
	return f.WriteOn(f.link, m, ws)
}

// WriteOn is Write on the link named link of the namespace; every write on
// a link the namespace does not have is ENODEV.
func (f *Fake) WriteOn(link string, m Mode, ws []Change) []error {
	f.ns.mu.Lock()
	defer f.ns.mu.Unlock()
	errs := make([]error, len(ws))
	l := f.ns.links[link]
	for i, w := range ws {
		f.Writes++
		if l == nil || !l.exists {
			errs[i] = unix.ENODEV
			continue
		}
		if err := f.check(w.Op, m, w.Entry); err != nil {
			errs[i] = err
			continue
		}
		if w.Op == OpAdd {
			errs[i] = f.ns.add(link, m, w.Entry, AddrUsable)
		} else {
			errs[i] = f.ns.del(link, m, w.Entry)
		}
	}
	return errs
}

// AddTentative adds the IPv6 host address p to the link as `ip addr add`
// without nodad does on a link that runs duplicate address detection: the
// address is there (adding it again is EEXIST) but tentative, with no local
// route, until EndDAD.
func (f *Fake) AddTentative(p netip.Prefix) error {
	f.ns.mu.Lock()
	defer f.ns.mu.Unlock()
	if l := f.ns.links[f.link]; !l.exists {
		return unix.ENODEV
	}
	if !p.Addr().Is6() {
		return fmt.Errorf("%s: only IPv6 addresses run duplicate address detection", p)
	}
	return f.ns.add(f.link, ModeAddress, Entry{Prefix: p}, AddrTentative)
}

// EndDAD ends the duplicate address detection of the tentative address p:
// it becomes usable and gets its local route, or, if dup (another host
// answered for it), it stays without a route, DAD-failed.
func (f *Fake) EndDAD(p netip.Prefix, dup bool) error {
	f.ns.mu.Lock()
	defer f.ns.mu.Unlock()
	l := f.ns.links[f.link]
	if l.addrs[p] != AddrTentative {
		return fmt.Errorf("%s is not a tentative address on %s", p, f.link)
	}
	if dup {
		l.addrs[p] = AddrDADFailed
		return nil
	}
	l.addrs[p] = AddrUsable
	f.ns.addRoute(LinkEntry{Link: f.link, Entry: Entry{Prefix: hostPrefix(p.Addr()), Proto: unix.RTPROT_KERNEL}})
	return nil
}

// add adds a host route or address (in state s) on link.
func (ns *fakeNS) add(link string, m Mode, e Entry, s AddrState) error {
	switch m {
	case ModeRoute:
		if ns.routeClash(e) {
			return unix.EEXIST
		}
		ns.addRoute(LinkEntry{Link: link, Entry: e})
	case ModeAddress:
		l := ns.links[link]
		// IPv4 keys an address by address and prefix length, IPv6 by the
		// address alone.
		if _, ok := l.addrs[e.Prefix]; ok || (e.Prefix.Addr().Is6() && l.v6addr(e.Prefix.Addr())) {
			return unix.EEXIST
		}
		l.addrs[e.Prefix] = s
		// The kernel adds the address's local route with NLM_F_APPEND, so
		// it joins any route already there; a tentative address has none
		// until its detection succeeds.
		if s == AddrUsable {
			ns.addRoute(LinkEntry{Link: link, Entry: Entry{Prefix: hostPrefix(e.Prefix.Addr()), Proto: unix.RTPROT_KERNEL}})
		}
	}
	return nil
}

// del deletes a host route (matching its protocol) or address on link.
func (ns *fakeNS) del(link string, m Mode, e Entry) error {
	switch m {
	case ModeRoute:
		le := LinkEntry{Link: link, Entry: Entry{Prefix: e.Prefix, Proto: e.Proto}}
		if !ns.routes[le] {
			return unix.ESRCH
		}
		ns.delRoute(le)
	case ModeAddress:
		l := ns.links[link]
		if _, ok := l.addrs[e.Prefix]; !ok {
			return unix.EADDRNOTAVAIL
		}
		delete(l.addrs, e.Prefix)
		ns.delRoute(LinkEntry{Link: link, Entry: Entry{Prefix: hostPrefix(e.Prefix.Addr()), Proto: unix.RTPROT_KERNEL}})
	}
	return nil
}

func (f *Fake) check(op string, m Mode, e Entry) error {
	if m != ModeRoute && m != ModeAddress {
		return fmt.Errorf("unknown mode %q", m)
	}
	if !e.Prefix.IsValid() || e.Prefix.Addr().Zone() != "" || e.Prefix.Addr().Is4In6() {
		return unix.EINVAL
	}
	if f.Fail != nil {
		return f.Fail(op, m, e)
	}
	return nil
}

// routeClash reports whether a route for e's prefix exists, on any link, in
// the key the kernel uses: the prefix for IPv4, the prefix and metric for
// IPv6 (the kernel's routes for addresses have metric 0, all others 1024).
func (ns *fakeNS) routeClash(e Entry) bool {
	kernel := 0
	for le := range ns.routes {
		if le.Prefix == e.Prefix && le.Proto == unix.RTPROT_KERNEL {
			kernel++
		}
	}
	if e.Proto == unix.RTPROT_KERNEL {
		return kernel > 0 || (e.Prefix.Addr().Is4() && ns.prefixRoutes[e.Prefix] > 0)
	}
	others := ns.prefixRoutes[e.Prefix] - kernel
	return others > 0 || (e.Prefix.Addr().Is4() && kernel > 0)
}

// v6addr reports whether the IPv6 address a is on the link with any prefix
// length.
func (l *fakeLink) v6addr(a netip.Addr) bool {
	for bits := 0; bits <= 128; bits++ {
		if _, ok := l.addrs[netip.PrefixFrom(a, bits)]; ok {
			return true
		}
	}
	return false
}

func (ns *fakeNS) addRoute(e LinkEntry) {
	if !ns.routes[e] {
		ns.routes[e] = true
		ns.prefixRoutes[e.Prefix]++
	}
}

func (ns *fakeNS) delRoute(e LinkEntry) {
	if ns.routes[e] {
		delete(ns.routes, e)
		if ns.prefixRoutes[e.Prefix]--; ns.prefixRoutes[e.Prefix] == 0 {
			delete(ns.prefixRoutes, e.Prefix)
		}
	}
}

// String prints the link and its entries sorted, one per line:
//
//	link kglb0 up
//	addr 198.51.100.11/32
//	addr 2001:db8::1/128 tentative
//	local 198.51.100.10/32 proto kglb
//	local 198.51.100.11/32 proto kernel
func (f *Fake) String() string {
	f.ns.mu.Lock()
	defer f.ns.mu.Unlock()
	l := f.ns.links[f.link]
	var b strings.Builder
	switch {
	case !l.exists:
		fmt.Fprintf(&b, "link %s missing\n", f.link)
	case l.up:
		fmt.Fprintf(&b, "link %s up\n", f.link)
	default:
		fmt.Fprintf(&b, "link %s down\n", f.link)
	}
	addrs := make([]netip.Prefix, 0, len(l.addrs))
	for p := range l.addrs {
		addrs = append(addrs, p)
	}
	slices.SortFunc(addrs, comparePrefix)
	for _, p := range addrs {
		fmt.Fprintf(&b, "addr %s\n", Entry{Prefix: p, State: l.addrs[p]})
	}
	var routes []Entry
	for e := range f.ns.routes {
		if e.Link == f.link {
			routes = append(routes, e.Entry)
		}
	}
	slices.SortFunc(routes, compareEntry)
	for _, e := range routes {
		fmt.Fprintf(&b, "local %s proto %s\n", e.Prefix, protoName(e.Proto))
	}
	return b.String()
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

func compareEntry(a, b Entry) int {
	if c := comparePrefix(a.Prefix, b.Prefix); c != 0 {
		return c
	}
	return int(a.Proto) - int(b.Proto)
}
