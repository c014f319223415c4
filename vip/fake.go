package vip

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Fake is an in-memory Kernel for one link with the kernel's rules:
//
//   - adding an entry that exists is EEXIST; an IPv4 local route is keyed by
//     its prefix alone, so it clashes whatever its protocol, while an IPv6
//     route is also keyed by its metric, so a route added by a user (metric
//     1024) sits beside the one the kernel made for an address (metric 0);
//   - deleting a route that is not there, or whose protocol differs, is
//     ESRCH; deleting a missing address is EADDRNOTAVAIL;
//   - an address brings its own local route (protocol kernel) and takes it
//     away when deleted;
//   - every call on a missing link is ENODEV, and deleting the link removes
//     everything on it.
//
// String prints the state sorted, so a test compares text. Writes and Dumps
// count the calls that reached it.
type Fake struct {
	mu     sync.Mutex
	link   string
	exists bool
	up     bool
	addrs  map[netip.Prefix]bool
	routes map[Entry]bool
	// prefixRoutes counts the routes per prefix, whatever their protocol.
	prefixRoutes map[netip.Prefix]int

	// Writes counts the writes, failed ones included (EnsureLink counts
	// only when it changes the link).
	Writes int
	// Dumps counts the List calls.
	Dumps int
	// Fail, when set, is asked before each write (op OpAdd or OpDel); a
	// non-nil error is its answer instead of doing it (it is still
	// counted).
	Fail func(op string, m Mode, e Entry) error
}

var _ Kernel = (*Fake)(nil)

// NewFake returns a Fake for the link named link ("" is DefaultLink). kglb's
// own link starts missing, as on a fresh machine; another link starts
// present and up, as an operator's link would be.
func NewFake(link string) *Fake {
	if link == "" {
		link = DefaultLink
	}
	f := &Fake{link: link, addrs: map[netip.Prefix]bool{}, routes: map[Entry]bool{}, prefixRoutes: map[netip.Prefix]int{}}
	if link != DefaultLink {
		f.exists, f.up = true, true
	}
	return f
}

// Link returns the link's name.
func (f *Fake) Link() string { return f.link }

// EnsureLink creates and brings up DefaultLink when missing; a configured
// link that is missing is an error.
func (f *Fake) EnsureLink() (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.exists {
		return false, nil
	}
	if f.link != DefaultLink {
		return false, fmt.Errorf("%w (kglb creates only %s; a configured link must exist)", unix.ENODEV, DefaultLink)
	}
	f.Writes++
	f.exists, f.up = true, true
	return true, nil
}

// DeleteLink removes the link and everything on it, as `ip link del` does.
func (f *Fake) DeleteLink() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.exists, f.up = false, false
	clear(f.addrs)
	clear(f.routes)
	clear(f.prefixRoutes)
}

// List returns the entries of mode m, sorted.
func (f *Fake) List(m Mode) ([]Entry, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Dumps++
	if !f.exists {
		return nil, unix.ENODEV
	}
	var out []Entry
	switch m {
	case ModeRoute:
		for e := range f.routes {
			out = append(out, e)
		}
	case ModeAddress:
		for p := range f.addrs {
			out = append(out, Entry{Prefix: p})
		}
	default:
		return nil, fmt.Errorf("unknown mode %q", m)
	}
	slices.SortFunc(out, compareEntry)
	return out, nil
}

// Write issues ws in order, as the kernel takes a batch of requests: each
// on its own, one error per write.
func (f *Fake) Write(m Mode, ws []Change) []error {
	f.mu.Lock()
	defer f.mu.Unlock()
	errs := make([]error, len(ws))
	for i, w := range ws {
		f.Writes++
		if err := f.check(w.Op, m, w.Entry); err != nil {
			errs[i] = err
			continue
		}
		if w.Op == OpAdd {
			errs[i] = f.add(m, w.Entry)
		} else {
			errs[i] = f.del(m, w.Entry)
		}
	}
	return errs
}

// add adds a host route or address.
func (f *Fake) add(m Mode, e Entry) error {
	switch m {
	case ModeRoute:
		if f.routeClash(e) {
			return unix.EEXIST
		}
		f.addRoute(e)
	case ModeAddress:
		// IPv4 keys an address by address and prefix length, IPv6 by the
		// address alone.
		if f.addrs[e.Prefix] || (e.Prefix.Addr().Is6() && f.v6addr(e.Prefix.Addr())) {
			return unix.EEXIST
		}
		f.addrs[e.Prefix] = true
		// The kernel adds the address's local route with NLM_F_APPEND, so
		// it joins any route already there.
		f.addRoute(Entry{Prefix: hostPrefix(e.Prefix.Addr()), Proto: unix.RTPROT_KERNEL})
	}
	return nil
}

// del deletes a host route (matching its protocol) or address.
func (f *Fake) del(m Mode, e Entry) error {
	switch m {
	case ModeRoute:
		if !f.routes[e] {
			return unix.ESRCH
		}
		f.delRoute(e)
	case ModeAddress:
		if !f.addrs[e.Prefix] {
			return unix.EADDRNOTAVAIL
		}
		delete(f.addrs, e.Prefix)
		f.delRoute(Entry{Prefix: hostPrefix(e.Prefix.Addr()), Proto: unix.RTPROT_KERNEL})
	}
	return nil
}

func (f *Fake) check(op string, m Mode, e Entry) error {
	if !f.exists {
		return unix.ENODEV
	}
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

// routeClash reports whether a route for e's prefix exists in the key the
// kernel uses: the prefix for IPv4, the prefix and metric for IPv6 (the
// kernel's routes for addresses have metric 0, all others 1024).
func (f *Fake) routeClash(e Entry) bool {
	kernel := f.routes[Entry{Prefix: e.Prefix, Proto: unix.RTPROT_KERNEL}]
	if e.Proto == unix.RTPROT_KERNEL {
		return kernel || (e.Prefix.Addr().Is4() && f.prefixRoutes[e.Prefix] > 0)
	}
	others := f.prefixRoutes[e.Prefix]
	if kernel {
		others--
	}
	return others > 0 || (e.Prefix.Addr().Is4() && kernel)
}

// v6addr reports whether the IPv6 address a is on the link with any prefix
// length.
func (f *Fake) v6addr(a netip.Addr) bool {
	for bits := 0; bits <= 128; bits++ {
		if f.addrs[netip.PrefixFrom(a, bits)] {
			return true
		}
	}
	return false
}

func (f *Fake) addRoute(e Entry) {
	if !f.routes[e] {
		f.routes[e] = true
		f.prefixRoutes[e.Prefix]++
	}
}

func (f *Fake) delRoute(e Entry) {
	if f.routes[e] {
		delete(f.routes, e)
		if f.prefixRoutes[e.Prefix]--; f.prefixRoutes[e.Prefix] == 0 {
			delete(f.prefixRoutes, e.Prefix)
		}
	}
}

// String prints the link and its entries sorted, one per line:
//
//	link kglb0 up
//	addr 198.51.100.11/32
//	local 198.51.100.10/32 proto kglb
//	local 198.51.100.11/32 proto kernel
func (f *Fake) String() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var b strings.Builder
	switch {
	case !f.exists:
		fmt.Fprintf(&b, "link %s missing\n", f.link)
	case f.up:
		fmt.Fprintf(&b, "link %s up\n", f.link)
	default:
		fmt.Fprintf(&b, "link %s down\n", f.link)
	}
	addrs := make([]netip.Prefix, 0, len(f.addrs))
	for p := range f.addrs {
		addrs = append(addrs, p)
	}
	slices.SortFunc(addrs, comparePrefix)
	for _, p := range addrs {
		fmt.Fprintf(&b, "addr %s\n", p)
	}
	routes := make([]Entry, 0, len(f.routes))
	for e := range f.routes {
		routes = append(routes, e)
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
