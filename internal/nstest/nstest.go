//go:build linux

// Package nstest gives tests throwaway network namespaces: named ones (so
// moby/ipvs and netlink can open them by path), code and sockets running
// inside them, veth pairs between them, addresses, routes, sysctls and the
// ipip fallback device tunl0. It is for tests only.
//
// Every namespace, link and socket a helper creates is removed by
// t.Cleanup, so a test leaves the machine as it found it. Traffic only ever
// flows between namespaces the test created (see the network safety rule in
// the project notes); Root exists for the VM, where the root namespace is
// itself throwaway.
//
// Tests need root. Outside CI a test without root is skipped with a clear
// message; with CI=true it fails. The host kernel has network namespaces and
// veth; IPVS, dummy links and ipip exist only in the VM (build tag vmtest).
//
// Example, a TCP round trip between two namespaces:
//
//	client, server := nstest.New(t), nstest.New(t)
//	nstest.Veth(t,
//		nstest.End{NS: client, Name: "c0", Addrs: []string{"10.9.0.1/24"}},
//		nstest.End{NS: server, Name: "s0", Addrs: []string{"10.9.0.2/24"}})
//	server.ServeTCP(t, "10.9.0.2:80", "hello")
//	got, err := client.DialRead("tcp", "10.9.0.2:80")
//
// and an IPVS handle on a namespace of its own:
//
//	lb := nstest.New(t)
//	h, err := ipvs.New(lb.Path) // github.com/moby/ipvs
//
// Code that must run inside a namespace (netlink sockets, SO_MARK dialers,
// anything that opens a socket) goes through Do or Run, which execute a
// function on a locked OS thread moved into the namespace and moved back
// afterwards (or thrown away if that fails), so no goroutine of the test
// ever runs in the wrong namespace. Sockets keep the namespace they were
// created in, so a listener made by Listen may be used from any goroutine:
//
//	lb.Run(t, func() error { return probeWithMark(...) })
//
// Namespaces are named kglbt-<pid>-<n> under /var/run/netns, where
// `nsenter --net=/var/run/netns/NAME` reaches them while a test runs.
package nstest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NetnsDir is where named namespaces are bind-mounted, as `ip netns` does.
const NetnsDir = "/var/run/netns"

// DialTimeout bounds every dial and read of DialRead, so a test against a
// broken data plane fails instead of hanging. It is a safety net, not an
// assertion on speed.
const DialTimeout = 10 * time.Second

// NS is a network namespace used by a test.
type NS struct {
	// Name is the namespace's name under NetnsDir ("" for Root).
	Name string
	// Path opens the namespace: pass it to ipvs.New or netns.GetFromPath.
	Path string

	handle netns.NsHandle
	root   bool

	mu sync.Mutex
	nl *netlink.Handle
}

var seq atomic.Int64

// InVM reports whether the test runs inside the kglb test VM (KGLB_VM=1).
func InVM() bool { return os.Getenv("KGLB_VM") == "1" }

// Require skips the test (fails it with CI=true or inside the VM) when
// namespaces cannot be used: not root, or no network namespace support.
func Require(t testing.TB) {
	t.Helper()
	var why string
	switch {
	case runtime.GOOS != "linux":
		why = "network namespaces need linux"
	case os.Geteuid() != 0:
		why = "network namespaces need root (run the tests as root)"
	default:
		if _, err := os.Stat("/proc/self/ns/net"); err != nil {
			why = "kernel without network namespaces: " + err.Error()
		}
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") == "true" || InVM() {
		t.Fatalf("nstest: %s", why)
	}
	t.Skipf("nstest: %s", why)
}

// New creates a fresh named network namespace with lo up. It is deleted
// when the test ends.
func New(t testing.TB) *NS {
	t.Helper()
	return NewNamed(t, fmt.Sprintf("kglbt-%d-%d", os.Getpid(), seq.Add(1)))
}

// NewNamed is New with a chosen name; the name must not exist yet.
func NewNamed(t testing.TB, name string) *NS {
	t.Helper()
	Require(t)
	n, err := create(name)
	if err != nil {
		t.Fatalf("nstest: create namespace %q: %v", name, err)
	}
	t.Cleanup(func() {
		if err := n.remove(); err != nil {
			t.Errorf("nstest: remove namespace %q: %v", name, err)
		}
	})
	n.LinkUp(t, "lo")
	return n
}

// rootNS is the namespace the process started in, opened while package
// initialisation runs on the main thread, before any test moved a thread.
var rootNS, rootErr = netns.Get()

// Root returns the network namespace the test process started in. Inside
// the VM it is throwaway; on a host, leave it alone (do not add addresses
// or links there).
func Root(t testing.TB) *NS {
	t.Helper()
	Require(t)
	if rootErr != nil {
		t.Fatalf("nstest: open root namespace: %v", rootErr)
	}
	// Not /proc/PID/ns/net: that is the main thread's, which a test may
	// have moved.
	n := &NS{Path: fmt.Sprintf("/proc/self/fd/%d", int(rootNS)), handle: rootNS, root: true}
	t.Cleanup(n.closeHandles)
	return n
}

func create(name string) (*NS, error) {
	if name == "" || strings.ContainsAny(name, "/\x00") {
		return nil, fmt.Errorf("bad namespace name %q", name)
	}
	if err := os.MkdirAll(NetnsDir, 0o755); err != nil {
		return nil, err
	}
	path := filepath.Join(NetnsDir, name)
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return nil, err
	}
	f.Close()
	err = onThread(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare: %w", err)
		}
		self := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		if err := unix.Mount(self, path, "none", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind mount on %s: %w", path, err)
		}
		return nil
	})
	if err != nil {
		os.Remove(path)
		return nil, err
	}
	h, err := netns.GetFromPath(path)
	if err != nil {
		unix.Unmount(path, unix.MNT_DETACH)
		os.Remove(path)
		return nil, err
	}
	return &NS{Name: name, Path: path, handle: h}, nil
}

func (n *NS) closeHandles() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.nl != nil {
		n.nl.Close()
		n.nl = nil
	}
	if n.handle.IsOpen() && !n.root {
		n.handle.Close()
	}
}

func (n *NS) remove() error {
	n.closeHandles()
	if err := unix.Unmount(n.Path, unix.MNT_DETACH); err != nil {
		return fmt.Errorf("unmount: %w", err)
	}
	return os.Remove(n.Path)
}

// String returns the namespace's name ("root" for Root).
func (n *NS) String() string {
	if n.root {
		return "root"
	}
	return n.Name
}

// Handle returns an open handle on the namespace, valid until the test ends.
func (n *NS) Handle() netns.NsHandle { return n.handle }

// Netlink returns a netlink handle bound to the namespace, closed when the
// test ends. Like netlink.Handle itself, use it from one goroutine at a time.
func (n *NS) Netlink(t testing.TB) *netlink.Handle {
	t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.nl == nil {
		// NETLINK_ROUTE only: the default set includes xfrm and netfilter,
		// whose modules a minimal kernel may lack.
		h, err := netlink.NewHandleAt(n.handle, unix.NETLINK_ROUTE)
		if err != nil {
			t.Fatalf("nstest: netlink handle in %s: %v", n, err)
		}
		n.nl = h
	}
	return n.nl
}

// onThread runs fn on a locked OS thread and then moves the thread back to
// the namespace it started in. If that fails the thread stays locked and is
// discarded when the goroutine exits, so whatever fn did to the thread
// (setns, unshare) never leaks to other goroutines. (Discarding is the
// fallback only: Go wedges rather than ends the main thread, which would
// keep a namespace alive until the process exits.)
func onThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("open the thread's namespace: %w", err)
			return
		}
		defer orig.Close()
		defer func() {
			if r := recover(); r != nil {
				errc <- fmt.Errorf("panic: %v\n%s", r, debug.Stack())
			}
			if unix.Setns(int(orig), unix.CLONE_NEWNET) == nil {
				runtime.UnlockOSThread()
			}
		}()
		errc <- fn()
	}()
	return <-errc
}

// Do runs fn on an OS thread inside the namespace and returns its error.
// Sockets fn creates live in the namespace and may be used anywhere after
// Do returns. A panic in fn becomes an error. Each call costs a thread:
// loop inside fn, not around Do.
func (n *NS) Do(fn func() error) error {
	return onThread(func() error {
		if err := unix.Setns(int(n.handle), unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("setns %s: %w", n, err)
		}
		return fn()
	})
}

// Run is Do that fails the test on error.
func (n *NS) Run(t testing.TB, fn func() error) {
	t.Helper()
	if err := n.Do(fn); err != nil {
		t.Fatalf("nstest: in %s: %v", n, err)
	}
}

// Listen opens a stream listener inside the namespace, closed when the test
// ends.
func (n *NS) Listen(t testing.TB, network, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	n.Run(t, func() (err error) {
		ln, err = net.Listen(network, addr)
		return err
	})
	t.Cleanup(func() { ln.Close() })
	return ln
}

// ListenPacket opens a packet socket inside the namespace, closed when the
// test ends.
func (n *NS) ListenPacket(t testing.TB, network, addr string) net.PacketConn {
	t.Helper()
	var pc net.PacketConn
	n.Run(t, func() (err error) {
		pc, err = net.ListenPacket(network, addr)
		return err
	})
	t.Cleanup(func() { pc.Close() })
	return pc
}

// Dial connects from inside the namespace with DialTimeout. Errors are
// returned, not fatal: a refused connection may be what the test expects.
func (n *NS) Dial(network, addr string) (net.Conn, error) {
	return n.DialContext(context.Background(), nil, network, addr)
}

// DialContext connects from inside the namespace with the given dialer
// (nil: one with DialTimeout), e.g. one with LocalAddr or a Control setting
// SO_MARK.
func (n *NS) DialContext(ctx context.Context, d *net.Dialer, network, addr string) (net.Conn, error) {
	if d == nil {
		d = &net.Dialer{Timeout: DialTimeout}
	}
	var c net.Conn
	err := n.Do(func() (err error) {
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// DialRead connects from inside the namespace, reads until the server
// closes, and returns what it read (see ServeTCP).
func (n *NS) DialRead(network, addr string) (string, error) {
	c, err := n.Dial(network, addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(DialTimeout))
	b, err := io.ReadAll(io.LimitReader(c, 1<<20))
	return string(b), err
}

// ServeTCP listens on addr inside the namespace and answers every
// connection with reply, then closes it. It returns the listening address
// (useful with port 0). The server stops when the test ends.
func (n *NS) ServeTCP(t testing.TB, addr, reply string) net.Addr {
	t.Helper()
	ln := n.Listen(t, "tcp", addr)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.SetDeadline(time.Now().Add(DialTimeout))
			io.WriteString(c, reply)
			c.Close()
		}
	}()
	// Registered after Listen's cleanup, so it runs first: close, then wait.
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr()
}

// link finds a link by name in the namespace or fails the test.
func (n *NS) link(t testing.TB, dev string) netlink.Link {
	t.Helper()
	l, err := n.Netlink(t).LinkByName(dev)
	if err != nil {
		t.Fatalf("nstest: find link %q in %s: %v", dev, n, err)
	}
	return l
}

// LinkUp sets a link up.
func (n *NS) LinkUp(t testing.TB, dev string) {
	t.Helper()
	if err := n.Netlink(t).LinkSetUp(n.link(t, dev)); err != nil {
		t.Fatalf("nstest: set %q up in %s: %v", dev, n, err)
	}
}

// AddAddr adds an address in CIDR form ("10.0.0.1/24", "fd00::1/64") to a
// link. IPv6 addresses skip duplicate address detection so they are usable
// at once.
func (n *NS) AddAddr(t testing.TB, dev, cidr string) {
	t.Helper()
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		t.Fatalf("nstest: address %q: %v", cidr, err)
	}
	a := &netlink.Addr{IPNet: &net.IPNet{
		IP:   p.Addr().AsSlice(),
		Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen()),
	}}
	if p.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
	if err := n.Netlink(t).AddrAdd(n.link(t, dev), a); err != nil {
		t.Fatalf("nstest: add %s to %q in %s: %v", cidr, dev, n, err)
	}
}

// AddLoAddr adds an address to lo, e.g. a VIP as a /32 on a tunnel real.
func (n *NS) AddLoAddr(t testing.TB, cidr string) {
	t.Helper()
	n.AddAddr(t, "lo", cidr)
}

// AddDummy creates a dummy link (module dummy; in the VM only), adds the
// addresses and sets it up. It goes with its namespace, or is deleted when
// the test ends if the namespace is Root.
func (n *NS) AddDummy(t testing.TB, name string, cidrs ...string) netlink.Link {
	t.Helper()
	h := n.Netlink(t)
	if err := h.LinkAdd(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: name}}); err != nil {
		t.Fatalf("nstest: add dummy %q in %s: %v", name, n, err)
	}
	if n.root {
		n.cleanupLink(t, name)
	}
	for _, c := range cidrs {
		n.AddAddr(t, name, c)
	}
	n.LinkUp(t, name)
	return n.link(t, name)
}

func (n *NS) cleanupLink(t testing.TB, name string) {
	t.Cleanup(func() {
		h, err := netlink.NewHandleAt(n.handle, unix.NETLINK_ROUTE)
		if err != nil {
			t.Errorf("nstest: delete %q in %s: %v", name, n, err)
			return
		}
		defer h.Close()
		if l, err := h.LinkByName(name); err == nil {
			if err := h.LinkDel(l); err != nil {
				t.Errorf("nstest: delete %q in %s: %v", name, n, err)
			}
		}
	})
}

// End is one side of a veth pair.
type End struct {
	NS    *NS      // the namespace (a Root NS for the process's own)
	Name  string   // the interface name
	Addrs []string // CIDR addresses to add, e.g. "10.9.0.1/24", "fd09::1/64"
}

// Veth creates a veth pair between two ends (they may share a namespace),
// adds their addresses and sets both up. The pair goes with its
// namespaces, or is deleted when the test ends if an end is in Root.
func Veth(t testing.TB, a, b End) {
	t.Helper()
	if a.NS == nil || b.NS == nil {
		t.Fatalf("nstest: veth %s-%s: both ends need a namespace", a.Name, b.Name)
	}
	v := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: a.Name},
		PeerName:      b.Name,
		PeerNamespace: netlink.NsFd(b.NS.handle),
	}
	if err := a.NS.Netlink(t).LinkAdd(v); err != nil {
		t.Fatalf("nstest: add veth %s (%s) - %s (%s): %v", a.Name, a.NS, b.Name, b.NS, err)
	}
	switch {
	case a.NS.root:
		a.NS.cleanupLink(t, a.Name)
	case b.NS.root:
		b.NS.cleanupLink(t, b.Name)
	}
	for _, e := range []End{a, b} {
		for _, c := range e.Addrs {
			e.NS.AddAddr(t, e.Name, c)
		}
		e.NS.LinkUp(t, e.Name)
	}
}

// AddRoute adds a route to dst ("default", "default6" or a CIDR) via a
// gateway address.
func (n *NS) AddRoute(t testing.TB, dst, via string) {
	t.Helper()
	gw, err := netip.ParseAddr(via)
	if err != nil {
		t.Fatalf("nstest: route %s via %q: %v", dst, via, err)
	}
	r := &netlink.Route{Dst: routeDst(t, dst, gw.Is6()), Gw: gw.AsSlice()}
	if err := n.Netlink(t).RouteAdd(r); err != nil {
		t.Fatalf("nstest: add route %s via %s in %s: %v", dst, via, n, err)
	}
}

// AddRouteDev adds an on-link route to dst ("default", "default6" or a
// CIDR) through a device.
func (n *NS) AddRouteDev(t testing.TB, dst, dev string) {
	t.Helper()
	r := &netlink.Route{
		Dst:       routeDst(t, dst, dst == "default6"),
		LinkIndex: n.link(t, dev).Attrs().Index,
		Scope:     netlink.SCOPE_LINK,
	}
	if err := n.Netlink(t).RouteAdd(r); err != nil {
		t.Fatalf("nstest: add route %s dev %s in %s: %v", dst, dev, n, err)
	}
}

func routeDst(t testing.TB, dst string, six bool) *net.IPNet {
	t.Helper()
	if dst == "default" || dst == "default6" {
		if six || dst == "default6" {
			return &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
		}
		return &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
	}
	p, err := netip.ParsePrefix(dst)
	if err != nil {
		t.Fatalf("nstest: route destination %q: %v", dst, err)
	}
	p = p.Masked()
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// sysctlPath maps "net.ipv4.conf.all.rp_filter" or "net/ipv4/conf/all/rp_filter"
// to its file under /proc/sys. Use the slash form for names holding a dot
// (a VLAN device "eth0.100").
func sysctlPath(key string) string {
	if !strings.Contains(key, "/") {
		key = strings.ReplaceAll(key, ".", "/")
	}
	return filepath.Join("/proc/sys", key)
}

// Sysctl sets a sysctl inside the namespace (the /proc/sys/net view depends
// on the namespace of the thread that opens it).
func (n *NS) Sysctl(t testing.TB, key, value string) {
	t.Helper()
	n.Run(t, func() error {
		return os.WriteFile(sysctlPath(key), []byte(value), 0o644)
	})
}

// ReadSysctl reads a sysctl inside the namespace, without the newline.
func (n *NS) ReadSysctl(t testing.TB, key string) string {
	t.Helper()
	var v []byte
	n.Run(t, func() (err error) {
		v, err = os.ReadFile(sysctlPath(key))
		return err
	})
	return strings.TrimSpace(string(v))
}

// TunnelUp sets the ipip fallback device tunl0 up in the namespace, so it
// decapsulates IPVS tunnel traffic, and turns off rp_filter on it (the
// inner source is the client, which is not routed via tunl0). The kernel
// creates tunl0 in every namespace once module ipip is loaded.
func (n *NS) TunnelUp(t testing.TB) {
	t.Helper()
	if _, err := n.Netlink(t).LinkByName("tunl0"); err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			t.Fatalf("nstest: no tunl0 in %s: is module ipip loaded (and net.core.fb_tunnels_only_for_init_net 0)?", n)
		}
		t.Fatalf("nstest: find tunl0 in %s: %v", n, err)
	}
	n.LinkUp(t, "tunl0")
	n.Sysctl(t, "net.ipv4.conf.tunl0.rp_filter", "0")
	n.Sysctl(t, "net.ipv4.conf.all.rp_filter", "0")
}

// Redump runs a netlink dump (a list of routes, addresses, links) again
// while the kernel reports it interrupted by a change made during it
// (NLM_F_DUMP_INTR: the library returns netlink.ErrDumpInterrupted with
// partial results), up to 5 times, as the daemon's own reads do. A test
// that polls a table a router or the kernel is still writing (BIRD
// installing routes, an IPv6 address getting its local route) needs it.
func Redump(dump func() error) error {
	for try := 0; ; try++ {
		err := dump()
		if !errors.Is(err, netlink.ErrDumpInterrupted) || try == 5 {
			return err
		}
	}
}
