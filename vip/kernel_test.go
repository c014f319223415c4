//go:build linux

package vip_test

// Tests against the running kernel, in namespaces the tests create. The host
// kernel has no dummy links, so here kglb's link is a configured one (lo or
// a veth); vm_test.go (build tag vmtest) covers kglb0 in the VM.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kglb/kglb/internal/nstest"
	"github.com/kglb/kglb/vip"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// testPools are the ranges the tests use as VIPs; kernelState shows only
// entries inside them, so a link's own addresses (lo's 127.0.0.1, an IPv6
// link-local address) stay out of the comparison.
var testPools = []netip.Prefix{
	netip.MustParsePrefix("198.51.100.0/24"),
	netip.MustParsePrefix("203.0.113.0/24"),
	netip.MustParsePrefix("2001:db8::/32"),
}

func inPools(a netip.Addr) bool {
	return slices.ContainsFunc(testPools, func(p netip.Prefix) bool { return p.Contains(a) })
}

// kernelState prints what the kernel holds on link in the Fake's format,
// read with a plain netlink handle (not the code under test).
//
// The kernel installs an IPv6 address's local route from its address
// configuration work queue, a moment after the address itself (even with
// nodad), so kernelState waits, boundedly, for those routes to settle
// before it answers.
func kernelState(t testing.TB, h *netlink.Handle, name string) string {
	t.Helper()
	var s string
	for range 2500 {
		s = kernelStateOnce(t, h, name)
		if v6RoutesSettled(s) {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	return s
}

// v6RoutesSettled reports whether every IPv6 address in a kernelState has
// its local route.
func v6RoutesSettled(state string) bool {
	for _, line := range strings.Split(state, "\n") {
		p, ok := strings.CutPrefix(line, "addr ")
		if ok && strings.Contains(p, ":") && !strings.Contains(state, "local "+p+" proto kernel\n") {
			return false
		}
	}
	return true
}

func kernelStateOnce(t testing.TB, h *netlink.Handle, name string) string {
	t.Helper()
	l, err := h.LinkByName(name)
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) {
		return fmt.Sprintf("link %s missing\n", name)
	}
	if err != nil {
		t.Fatalf("look up %s: %v", name, err)
	}
	var b strings.Builder
	state := "down"
	if l.Attrs().Flags&net.FlagUp != 0 {
		state = "up"
	}
	fmt.Fprintf(&b, "link %s %s\n", name, state)
	var as []netlink.Addr
	err = nstest.Redump(func() (err error) { as, err = h.AddrList(l, netlink.FAMILY_ALL); return err })
	if err != nil {
		t.Fatalf("list addresses: %v", err)
	}
	var prefixes []netip.Prefix
	for _, a := range as {
		ip, _ := netip.AddrFromSlice(a.IP)
		ip = ip.Unmap()
		if !inPools(ip) {
			continue
		}
		ones, _ := a.Mask.Size()
		prefixes = append(prefixes, netip.PrefixFrom(ip, ones))
	}
	slices.SortFunc(prefixes, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	for _, p := range prefixes {
		fmt.Fprintf(&b, "addr %s\n", p)
	}
	var rs []netlink.Route
	err = nstest.Redump(func() (err error) {
		rs, err = h.RouteListFiltered(netlink.FAMILY_ALL,
			&netlink.Route{Table: unix.RT_TABLE_LOCAL, LinkIndex: l.Attrs().Index, Type: unix.RTN_LOCAL},
			netlink.RT_FILTER_TABLE|netlink.RT_FILTER_OIF|netlink.RT_FILTER_TYPE)
		return err
	})
	if err != nil {
		t.Fatalf("list routes: %v", err)
	}
	type route struct {
		p     netip.Prefix
		proto int
	}
	var routes []route
	for _, r := range rs {
		ip, _ := netip.AddrFromSlice(r.Dst.IP)
		ip = ip.Unmap()
		if !inPools(ip) {
			continue
		}
		ones, _ := r.Dst.Mask.Size()
		routes = append(routes, route{netip.PrefixFrom(ip, ones), int(r.Protocol)})
	}
	slices.SortFunc(routes, func(a, b route) int {
		if c := a.p.Addr().Compare(b.p.Addr()); c != 0 {
			return c
		}
		return a.proto - b.proto
	})
	protos := map[int]string{unix.RTPROT_KERNEL: "kernel", unix.RTPROT_STATIC: "static", int(vip.ProtoKGLB): "kglb"}
	for _, r := range routes {
		p, ok := protos[r.proto]
		if !ok {
			p = fmt.Sprint(r.proto)
		}
		fmt.Fprintf(&b, "local %s proto %s\n", r.p, p)
	}
	return b.String()
}

// addForeign puts an operator's entries on the link, as setup does on the
// fake: a static local route for 198.51.100.99 and the addresses
// 203.0.113.1 and 2001:db8::99.
func addForeign(t testing.TB, k vip.Kernel) {
	t.Helper()
	if _, err := k.EnsureLink(); err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		m vip.Mode
		e vip.Entry
	}{
		{vip.ModeRoute, entry("198.51.100.99/32", unix.RTPROT_STATIC)},
		{vip.ModeAddress, entry("203.0.113.1/32", 0)},
		{vip.ModeAddress, entry("2001:db8::99/128", 0)},
	} {
		if err := write1(k, step.m, vip.OpAdd, step.e); err != nil {
			t.Fatalf("add foreign %s %s: %v", step.m, step.e, err)
		}
	}
}

// testKernelLink runs the states of TestStates, in order and shuffled,
// against the real kernel on the namespace's link and checks the kernel
// ends exactly where the fake does; then drift repair, a restart with no
// write, ownership of the operator's entries, and a clean Apply(nil).
func testKernelLink(t *testing.T, ns *nstest.NS, link string, mode vip.Mode) {
	k, err := vip.NewNetlink(vip.NetlinkOptions{Link: link, NetNS: ns.Path})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.Close() })
	addForeign(t, k)
	h := ns.Netlink(t)
	foreignOnly := kernelState(t, h, link)

	dir := t.TempDir()
	r, err := vip.New(vip.Options{Kernel: k, Mode: mode, StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	apply := func(t *testing.T, i int) {
		t.Helper()
		st := states[i]
		if _, err := r.Apply(ctx, st.desired); err != nil {
			t.Fatalf("Apply: %v", err)
		}
		want := st.wantRoute
		if mode == vip.ModeAddress {
			want = st.wantAddress
		}
		want = strings.Replace(want, "link kglb0 up", "link "+link+" up", 1)
		if got := kernelState(t, h, link); got != want {
			t.Fatalf("kernel after %q:\n%s\nwant (as the fake):\n%s", st.name, got, want)
		}
		res, err := r.Apply(ctx, st.desired)
		if err != nil || res.Writes != 0 {
			t.Fatalf("second Apply of %q: %d writes, err %v; want 0, nil", st.name, res.Writes, err)
		}
	}
	for i, st := range states {
		t.Run(st.name, func(t *testing.T) { apply(t, i) })
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for range 3 * len(states) {
		i := rng.IntN(len(states))
		t.Run("shuffled/"+states[i].name, func(t *testing.T) { apply(t, i) })
	}

	desired := addrs("198.51.100.10", "198.51.100.11", "2001:db8::10", "203.0.113.1")
	if _, err := r.Apply(ctx, desired); err != nil {
		t.Fatal(err)
	}
	want := kernelState(t, h, link)

	t.Run("drift repair", func(t *testing.T) {
		deleteByHand(t, h, link, mode, netip.MustParseAddr("198.51.100.11"))
		deleteByHand(t, h, link, mode, netip.MustParseAddr("2001:db8::10"))
		res, err := r.Resync(ctx, desired)
		if err != nil {
			t.Fatal(err)
		}
		if res.Writes != 2 || !slices.Equal(res.Added, addrs("198.51.100.11", "2001:db8::10")) {
			t.Errorf("repair: %+v, want the two deleted VIPs added back", res)
		}
		if got := kernelState(t, h, link); got != want {
			t.Errorf("kernel after repair:\n%s\nwant:\n%s", got, want)
		}
	})

	parent := t
	t.Run("restart adopts with no write", func(t *testing.T) {
		k2, err := vip.NewNetlink(vip.NetlinkOptions{Link: link, NetNS: ns.Path})
		if err != nil {
			t.Fatal(err)
		}
		parent.Cleanup(func() { k2.Close() }) // r2 goes on as the new process
		r2, err := vip.New(vip.Options{Kernel: k2, Mode: mode, StateDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		res, err := r2.Apply(ctx, desired)
		if err != nil || res.Writes != 0 {
			t.Fatalf("restarted Apply: %d writes, %v; want 0", res.Writes, err)
		}
		if want := addrs("198.51.100.10", "198.51.100.11", "2001:db8::10"); !slices.Equal(res.Held, want) {
			t.Errorf("adopted %v, want %v", res.Held, want)
		}
		if want := addrs("203.0.113.1"); !slices.Equal(res.Foreign, want) {
			t.Errorf("foreign %v, want %v", res.Foreign, want)
		}
		r = r2 // go on as the new process
	})

	t.Run("clean leaves the operator's entries", func(t *testing.T) {
		res, err := r.Apply(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := kernelState(t, h, link); got != foreignOnly {
			t.Errorf("kernel after Apply(nil) (%+v):\n%s\nwant the operator's entries only:\n%s", res, got, foreignOnly)
		}
	})
}

// deleteByHand removes kglb's entry for a, as an operator's `ip route del`
// or `ip addr del` would, with a plain handle.
func deleteByHand(t testing.TB, h *netlink.Handle, link string, mode vip.Mode, a netip.Addr) {
	t.Helper()
	l, err := h.LinkByName(link)
	if err != nil {
		t.Fatal(err)
	}
	dst := &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(a.BitLen(), a.BitLen())}
	switch mode {
	case vip.ModeRoute:
		err = h.RouteDel(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: dst, Table: unix.RT_TABLE_LOCAL,
			Type: unix.RTN_LOCAL, Scope: netlink.SCOPE_HOST, Protocol: netlink.RouteProtocol(vip.ProtoKGLB)})
	case vip.ModeAddress:
		err = h.AddrDel(l, &netlink.Addr{IPNet: dst})
	}
	if err != nil {
		t.Fatalf("delete %s by hand: %v", a, err)
	}
}

// TestKernelConfiguredLink runs the kernel scenario on links kglb is told
// to use and must not create: lo and a veth, each in a fresh namespace.
func TestKernelConfiguredLink(t *testing.T) {
	for _, mode := range []vip.Mode{vip.ModeRoute, vip.ModeAddress} {
		t.Run(string(mode)+"/lo", func(t *testing.T) {
			testKernelLink(t, nstest.New(t), "lo", mode)
		})
		t.Run(string(mode)+"/veth", func(t *testing.T) {
			ns := nstest.New(t)
			nstest.Veth(t, nstest.End{NS: ns, Name: "vip0"}, nstest.End{NS: ns, Name: "vip1"})
			testKernelLink(t, ns, "vip0", mode)
		})
	}
}

// TestKernelMissingLink: a configured link that does not exist is an error
// naming it, and kglb creates nothing.
func TestKernelMissingLink(t *testing.T) {
	ns := nstest.New(t)
	k, err := vip.NewNetlink(vip.NetlinkOptions{Link: "eth9", NetNS: ns.Path})
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	r, err := vip.New(vip.Options{Kernel: k})
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.Apply(context.Background(), addrs("198.51.100.1"))
	if !errors.Is(err, unix.ENODEV) || !strings.Contains(err.Error(), "eth9") {
		t.Errorf("Apply on a missing configured link: %v, want ENODEV naming eth9", err)
	}
	if got := kernelState(t, ns.Netlink(t), "eth9"); got != "link eth9 missing\n" {
		t.Errorf("kernel:\n%s", got)
	}
}

// kernelAndFake returns the netlink kernel on link vip0 of a new namespace
// (a veth end) and a fake of the same link, both with the link ensured: the
// pair the error and batch tests hold to the same answers.
func kernelAndFake(t *testing.T) (*nstest.NS, *vip.Netlink, *vip.Fake) {
	t.Helper()
	ns := nstest.New(t)
	nstest.Veth(t, nstest.End{NS: ns, Name: "vip0"}, nstest.End{NS: ns, Name: "vip1"})
	k, err := vip.NewNetlink(vip.NetlinkOptions{NetNS: ns.Path, Link: "vip0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.Close() })
	f := vip.NewFake("vip0")
	for _, kk := range []vip.Kernel{k, f} {
		if _, err := kk.EnsureLink(); err != nil {
			t.Fatal(err)
		}
	}
	return ns, k, f
}

// TestKernelErrors: the netlink kernel answers with the errors the fake
// imitates, so the reconciler's handling of them is tested for real.
func TestKernelErrors(t *testing.T) {
	ns, k, f := kernelAndFake(t)
	tests := []struct {
		name string
		op   string
		mode vip.Mode
		e    vip.Entry
		want error
	}{
		{"add route", "add", vip.ModeRoute, entry("198.51.100.1/32", vip.ProtoKGLB), nil},
		{"add route again", "add", vip.ModeRoute, entry("198.51.100.1/32", vip.ProtoKGLB), unix.EEXIST},
		{"add v4 route of another protocol", "add", vip.ModeRoute, entry("198.51.100.1/32", unix.RTPROT_STATIC), unix.EEXIST},
		{"delete route of another protocol", "del", vip.ModeRoute, entry("198.51.100.1/32", unix.RTPROT_STATIC), unix.ESRCH},
		{"delete route", "del", vip.ModeRoute, entry("198.51.100.1/32", vip.ProtoKGLB), nil},
		{"delete route again", "del", vip.ModeRoute, entry("198.51.100.1/32", vip.ProtoKGLB), unix.ESRCH},
		{"add v6 route", "add", vip.ModeRoute, entry("2001:db8::1/128", vip.ProtoKGLB), nil},
		{"add v6 route again", "add", vip.ModeRoute, entry("2001:db8::1/128", vip.ProtoKGLB), unix.EEXIST},
		{"add address", "add", vip.ModeAddress, entry("198.51.100.2/32", 0), nil},
		{"add address again", "add", vip.ModeAddress, entry("198.51.100.2/32", 0), unix.EEXIST},
		{"add v4 route over an address", "add", vip.ModeRoute, entry("198.51.100.2/32", vip.ProtoKGLB), unix.EEXIST},
		{"add v6 address", "add", vip.ModeAddress, entry("2001:db8::1/128", 0), nil},
		{"add v6 address again", "add", vip.ModeAddress, entry("2001:db8::1/128", 0), unix.EEXIST},
		{"delete v6 address", "del", vip.ModeAddress, entry("2001:db8::1/128", 0), nil},
		{"delete v6 address again", "del", vip.ModeAddress, entry("2001:db8::1/128", 0), unix.EADDRNOTAVAIL},
		{"delete address", "del", vip.ModeAddress, entry("198.51.100.2/32", 0), nil},
		{"delete address again", "del", vip.ModeAddress, entry("198.51.100.2/32", 0), unix.EADDRNOTAVAIL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, kk := range []vip.Kernel{k, f} {
				err := write1(kk, tt.mode, tt.op, tt.e)
				if (tt.want == nil && err != nil) || (tt.want != nil && !errors.Is(err, tt.want)) {
					t.Errorf("%T: %s %s %s: %v, want %v", kk, tt.op, tt.mode, tt.e, err, tt.want)
				}
			}
			if got, want := kernelState(t, ns.Netlink(t), "vip0"), f.String(); got != want {
				t.Errorf("kernel and fake differ; kernel:\n%s\nfake:\n%s", got, want)
			}
		})
	}
}

// TestKernelBatch: one Write of many mixed writes, across the batches of a
// message (64 requests), answers write by write exactly as the fake does
// (EEXIST, ESRCH, EADDRNOTAVAIL in the middle of a batch do not stop the
// rest), and leaves the kernel where it leaves the fake.
func TestKernelBatch(t *testing.T) {
	ns, k, f := kernelAndFake(t)
	// batch is 150 writes: adds of 198.51.100.0-99 and 2001:db8::0-49,
	// with every tenth one repeated (EEXIST) and deletes of entries that
	// are not there (ESRCH or EADDRNOTAVAIL) between them.
	batch := func(mode vip.Mode, proto uint8) []vip.Change {
		var ws []vip.Change
		for i := range 100 {
			a := netip.AddrFrom4([4]byte{198, 51, 100, byte(i)})
			if i >= 50 {
				a = netip.MustParseAddr(fmt.Sprintf("2001:db8::%x", i-50))
			}
			e := vip.Entry{Prefix: netip.PrefixFrom(a, a.BitLen()), Proto: proto}
			ws = append(ws, vip.Change{Op: vip.OpAdd, Entry: e})
			if i%10 == 0 {
				ws = append(ws, vip.Change{Op: vip.OpAdd, Entry: e})
			}
			if i%3 == 0 {
				gone := vip.Entry{Prefix: netip.MustParsePrefix(fmt.Sprintf("203.0.113.%d/32", i)), Proto: proto}
				ws = append(ws, vip.Change{Op: vip.OpDel, Entry: gone})
			}
		}
		return ws
	}
	// undo deletes every entry a batch added, and two twice.
	undo := func(ws []vip.Change) []vip.Change {
		var out []vip.Change
		for i, w := range ws {
			if w.Op == vip.OpAdd && (i == 0 || ws[i-1] != w) {
				out = append(out, vip.Change{Op: vip.OpDel, Entry: w.Entry})
			}
		}
		return append(out, out[0], out[len(out)-1])
	}
	h := ns.Netlink(t)
	for _, tc := range []struct {
		mode  vip.Mode
		proto uint8
	}{{vip.ModeRoute, vip.ProtoKGLB}, {vip.ModeAddress, 0}} {
		add := batch(tc.mode, tc.proto)
		for _, step := range []struct {
			name string
			ws   []vip.Change
		}{{"add", add}, {"delete", undo(add)}} {
			t.Run(string(tc.mode)+"/"+step.name, func(t *testing.T) {
				got, want := k.Write(tc.mode, step.ws), f.Write(tc.mode, step.ws)
				if len(got) != len(step.ws) || len(want) != len(step.ws) {
					t.Fatalf("%d writes: kernel answered %d, fake %d", len(step.ws), len(got), len(want))
				}
				failed := 0
				for i, w := range step.ws {
					if !errors.Is(got[i], want[i]) {
						t.Errorf("write %d (%s %s): kernel %v, fake %v", i, w.Op, w.Entry, got[i], want[i])
					}
					if want[i] != nil {
						failed++
					}
				}
				if failed == 0 {
					t.Errorf("no write failed: the batch does not test errors amid a batch")
				}
				if got, want := kernelState(t, h, "vip0"), f.String(); got != want {
					t.Errorf("kernel and fake differ; kernel:\n%s\nfake:\n%s", got, want)
				}
			})
		}
	}
}

// testAccepts proves a VIP held by kglb in route mode takes connections
// from another namespace: lb holds the VIPs on link (already set up by the
// caller), client reaches lb over a veth with routes to the VIP ranges.
// IPv4 listens on the VIP itself; IPv6 through a wildcard listener, since
// the kernel lets a socket bind an IPv6 address only from the address list
// (or with IP_FREEBIND).
func testAccepts(t *testing.T, lb *nstest.NS, r *vip.Reconciler) {
	client := nstest.New(t)
	nstest.Veth(t,
		nstest.End{NS: client, Name: "c0", Addrs: []string{"10.9.0.1/24", "fd09::1/64"}},
		nstest.End{NS: lb, Name: "l0", Addrs: []string{"10.9.0.2/24", "fd09::2/64"}})
	client.AddRoute(t, "198.51.100.0/24", "10.9.0.2")
	client.AddRoute(t, "2001:db8::/32", "fd09::2")
	// On-link, so the client asks for 198.51.100.12 by ARP: the lb answers
	// for a local route as for an address.
	client.AddRouteDev(t, "198.51.100.12/32", "c0")
	// Neighbour discovery, unlike ARP, looks at the address list: an
	// on-link IPv6 VIP gets no answer (the package doc says so).
	client.AddRouteDev(t, "2001:db8::12/128", "c0")

	if _, err := r.Apply(context.Background(), addrs("198.51.100.10", "198.51.100.12", "2001:db8::10", "2001:db8::12")); err != nil {
		t.Fatal(err)
	}
	lb.ServeTCP(t, "198.51.100.10:80", "v4 vip")
	lb.ServeTCP(t, "[::]:81", "wildcard")

	for _, tt := range []struct{ addr, want string }{
		{"198.51.100.10:80", "v4 vip"},
		{"198.51.100.10:81", "wildcard"},
		{"198.51.100.12:81", "wildcard"},
		{"[2001:db8::10]:81", "wildcard"},
	} {
		got, err := client.DialRead("tcp", tt.addr)
		if err != nil || got != tt.want {
			t.Errorf("client -> %s: %q, %v; want %q", tt.addr, got, err, tt.want)
		}
	}
	// Not a VIP: the lb does not take it (and, not forwarding, drops it).
	// An on-link IPv6 VIP: no neighbour answer. The short timeout only
	// bounds the wait for what must not come.
	d := &net.Dialer{Timeout: 300 * time.Millisecond}
	for _, addr := range []string{"198.51.100.11:81", "[2001:db8::12]:81"} {
		if c, err := client.DialContext(context.Background(), d, "tcp", addr); err == nil {
			c.Close()
			t.Errorf("client -> %s connected; want no answer (not a VIP; an on-link IPv6 VIP)", addr)
		}
	}

	// The documented IPv6 limit: bind needs IP_FREEBIND.
	err := lb.Do(func() error {
		ln, err := net.Listen("tcp", "[2001:db8::10]:82")
		if err == nil {
			ln.Close()
		}
		return err
	})
	if !errors.Is(err, unix.EADDRNOTAVAIL) {
		t.Errorf("bind [2001:db8::10]:82 without IP_FREEBIND: %v, want EADDRNOTAVAIL (update the package doc if the kernel changed)", err)
	}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_FREEBIND, 1)
		}); err != nil {
			return err
		}
		return serr
	}}
	var ln net.Listener
	lb.Run(t, func() (err error) {
		ln, err = lc.Listen(context.Background(), "tcp", "[2001:db8::10]:82")
		return err
	})
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Write([]byte("freebind"))
			c.Close()
		}
	}()
	if got, err := client.DialRead("tcp", "[2001:db8::10]:82"); err != nil || got != "freebind" {
		t.Errorf("client -> [2001:db8::10]:82 (IP_FREEBIND listener): %q, %v", got, err)
	}
}

// TestKernelRouteModeAccepts: on the host, with lo as the configured link.
func TestKernelRouteModeAccepts(t *testing.T) {
	lb := nstest.New(t)
	k, err := vip.NewNetlink(vip.NetlinkOptions{Link: "lo", NetNS: lb.Path})
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	r, err := vip.New(vip.Options{Kernel: k})
	if err != nil {
		t.Fatal(err)
	}
	testAccepts(t, lb, r)
}

// TestKernelModeOrLinkChange: on the kernel, a start with another vip_mode
// or vip_interface removes what kglb left under the old settings and nothing
// of the operator's, and leaves both links as a first start with the new
// settings does (TestModeOrLinkChange checks the same on the fake).
func TestKernelModeOrLinkChange(t *testing.T) {
	desired := addrs("198.51.100.10", "198.51.100.11", "2001:db8::10", "203.0.113.1")
	ctx := context.Background()
	type setting struct {
		mode vip.Mode
		link string
	}
	// newWorld is a namespace with the veth ends vip0 and vip1, the
	// operator's entries on vip0 (addForeign) and the address
	// 198.51.100.12 on vip1.
	newWorld := func(t *testing.T) (*nstest.NS, *netlink.Handle) {
		ns := nstest.New(t)
		nstest.Veth(t, nstest.End{NS: ns, Name: "vip0"}, nstest.End{NS: ns, Name: "vip1", Addrs: []string{"198.51.100.12/32"}})
		k, err := vip.NewNetlink(vip.NetlinkOptions{Link: "vip0", NetNS: ns.Path})
		must(t, err)
		t.Cleanup(func() { k.Close() })
		addForeign(t, k)
		return ns, ns.Netlink(t)
	}
	start := func(t *testing.T, ns *nstest.NS, s setting, dir string) vip.Result {
		t.Helper()
		k, err := vip.NewNetlink(vip.NetlinkOptions{Link: s.link, NetNS: ns.Path})
		must(t, err)
		t.Cleanup(func() { k.Close() })
		r, err := vip.New(vip.Options{Kernel: k, Mode: s.mode, StateDir: dir})
		must(t, err)
		res, err := r.Apply(ctx, desired)
		must(t, err)
		return res
	}
	state := func(t *testing.T, h *netlink.Handle) string {
		return kernelState(t, h, "vip0") + kernelState(t, h, "vip1")
	}
	for _, c := range []struct{ from, to setting }{
		{setting{vip.ModeRoute, "vip0"}, setting{vip.ModeRoute, "vip1"}},
		{setting{vip.ModeRoute, "vip0"}, setting{vip.ModeAddress, "vip0"}},
		{setting{vip.ModeAddress, "vip0"}, setting{vip.ModeRoute, "vip0"}},
		{setting{vip.ModeAddress, "vip0"}, setting{vip.ModeAddress, "vip1"}},
		{setting{vip.ModeAddress, "vip1"}, setting{vip.ModeRoute, "vip0"}},
	} {
		t.Run(fmt.Sprintf("%s on %s to %s on %s", c.from.mode, c.from.link, c.to.mode, c.to.link), func(t *testing.T) {
			fresh, fh := newWorld(t)
			want := start(t, fresh, c.to, t.TempDir())
			wantState := state(t, fh)

			ns, h := newWorld(t)
			dir := t.TempDir()
			start(t, ns, c.from, dir)
			res := start(t, ns, c.to, dir)
			if got := state(t, h); got != wantState {
				t.Errorf("after the change:\n%s\nwant as a first start:\n%s", got, wantState)
			}
			if !slices.Equal(res.Held, want.Held) || !slices.Equal(res.Foreign, want.Foreign) {
				t.Errorf("after the change %+v, want %+v", res, want)
			}
		})
	}
}

// TestKernelUnusableAddress: an IPv6 address added without nodad on a link
// that runs duplicate address detection is listed tentative, then
// DAD-failed when another link has it; address mode holds neither, and
// adds nothing over it.
func TestKernelUnusableAddress(t *testing.T) {
	ns := nstest.New(t)
	nstest.Veth(t, nstest.End{NS: ns, Name: "vip0"}, nstest.End{NS: ns, Name: "vip1"})
	h := ns.Netlink(t)
	l, err := h.LinkByName("vip0")
	must(t, err)
	// Detection of the first address outlasts the test; the second's
	// ends at vip1's answer.
	ns.Sysctl(t, "net.ipv6.conf.vip0.dad_transmits", "1000")
	mustAdd := func(s string) {
		t.Helper()
		p := netip.MustParsePrefix(s)
		must(t, h.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 128)}}))
	}
	mustAdd("2001:db8::1/128")

	k, err := vip.NewNetlink(vip.NetlinkOptions{Link: "vip0", NetNS: ns.Path})
	must(t, err)
	defer k.Close()
	r, err := vip.New(vip.Options{Kernel: k, Mode: vip.ModeAddress, StateDir: t.TempDir()})
	must(t, err)
	a := netip.MustParseAddr("2001:db8::1")
	res, err := r.Apply(context.Background(), []netip.Addr{a})
	if err == nil || !strings.Contains(err.Error(), "tentative") || res.Holds(a) || res.Writes != 0 {
		t.Errorf("over a tentative address: %+v, %v; want not held, no write, an error saying tentative", res, err)
	}

	// The same address, usable, on vip1 answers vip0's detection.
	ns.Sysctl(t, "net.ipv6.conf.vip0.dad_transmits", "1")
	l1, err := h.LinkByName("vip1")
	must(t, err)
	dup := &net.IPNet{IP: net.ParseIP("2001:db8::2"), Mask: net.CIDRMask(128, 128)}
	must(t, h.AddrAdd(l1, &netlink.Addr{IPNet: dup, Flags: unix.IFA_F_NODAD}))
	mustAdd("2001:db8::2/128")
	b := netip.MustParseAddr("2001:db8::2")
	var state vip.AddrState
	for range 1000 { // detection takes a second or two; bounded, not timed
		es, err := k.List(vip.ModeAddress)
		must(t, err)
		for _, e := range es {
			if e.Prefix.Addr() == b {
				state = e.State
			}
		}
		if state == vip.AddrDADFailed {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if state != vip.AddrDADFailed {
		t.Fatalf("2001:db8::2 on vip0: state %d, want DAD-failed", state)
	}
	res, err = r.Apply(context.Background(), []netip.Addr{b})
	if err == nil || !strings.Contains(err.Error(), "failed duplicate address detection") || res.Holds(b) || res.Writes != 0 {
		t.Errorf("over a DAD-failed address: %+v, %v; want not held, no write, an error saying so", res, err)
	}
}
