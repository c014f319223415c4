//go:build vmtest

package vip_test

// Tests that need the VM's kernel: kglb's own dummy link kglb0 and IPVS.
// Run with `vmtest/run.sh test ./vip` (or `make vmtest VM_PKGS=./vip`).

import (
	"context"
	"net"
	"slices"
	"syscall"
	"testing"

	"github.com/kglb/kglb/internal/nstest"
	"github.com/kglb/kglb/vip"
	"github.com/moby/ipvs"
)

// newOwnLink returns a reconciler of mode on kglb's own link (kglb0, not
// yet created) in a fresh namespace.
func newOwnLink(t *testing.T, mode vip.Mode) (*nstest.NS, *vip.Reconciler) {
	t.Helper()
	ns := nstest.New(t)
	k, err := vip.NewNetlink(vip.NetlinkOptions{NetNS: ns.Path})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.Close() })
	r, err := vip.New(vip.Options{Kernel: k, Mode: mode, StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	return ns, r
}

// TestVMOwnLink: kglb creates kglb0 as a dummy link and brings it up, holds
// IPv4 and IPv6 VIPs on it in both modes, and when someone deletes the link
// the next Apply creates it again and refills it.
func TestVMOwnLink(t *testing.T) {
	for _, mode := range []vip.Mode{vip.ModeRoute, vip.ModeAddress} {
		t.Run(string(mode), func(t *testing.T) {
			ns, r := newOwnLink(t, mode)
			h := ns.Netlink(t)
			if got := kernelState(t, h, vip.DefaultLink); got != "link kglb0 missing\n" {
				t.Fatalf("before Apply:\n%s", got)
			}
			desired := addrs("198.51.100.1", "2001:db8::1")
			res, err := r.Apply(context.Background(), desired)
			if err != nil {
				t.Fatal(err)
			}
			l, err := h.LinkByName(vip.DefaultLink)
			if err != nil {
				t.Fatal(err)
			}
			if l.Type() != "dummy" || l.Attrs().Flags&net.FlagUp == 0 {
				t.Errorf("kglb0 is %s with flags %v, want an up dummy", l.Type(), l.Attrs().Flags)
			}
			if !slices.Equal(res.Held, desired) {
				t.Errorf("held %v, want %v", res.Held, desired)
			}
			want := kernelState(t, h, vip.DefaultLink)

			if err := h.LinkDel(l); err != nil {
				t.Fatal(err)
			}
			res, err = r.Resync(context.Background(), desired)
			if err != nil {
				t.Fatal(err)
			}
			if res.Writes != 2 || !slices.Equal(res.Added, desired) {
				t.Errorf("after the link was deleted: %+v, want both VIPs added again", res)
			}
			if got := kernelState(t, h, vip.DefaultLink); got != want {
				t.Errorf("kernel after re-creation:\n%s\nwant:\n%s", got, want)
			}
			if res, err := r.Apply(context.Background(), nil); err != nil || res.Writes != 2 {
				t.Errorf("Apply(nil): %+v, %v", res, err)
			}
			if _, err := h.LinkByName(vip.DefaultLink); err != nil {
				t.Errorf("kglb0 gone after Apply(nil): %v; the link stays", err)
			}
		})
	}
}

// TestVMKernel runs the full kernel scenario (the fake's states, drift,
// restart with zero writes, ownership) on kglb0 in both modes.
func TestVMKernel(t *testing.T) {
	for _, mode := range []vip.Mode{vip.ModeRoute, vip.ModeAddress} {
		t.Run(string(mode), func(t *testing.T) {
			testKernelLink(t, nstest.New(t), vip.DefaultLink, mode)
		})
	}
}

// TestVMRouteModeAccepts: a VIP held as a local route on kglb0 accepts TCP
// connections from another namespace, IPv4 and IPv6.
func TestVMRouteModeAccepts(t *testing.T) {
	lb, r := newOwnLink(t, vip.ModeRoute)
	testAccepts(t, lb, r)
}

// TestVMIPVS: IPVS takes a service on a VIP held only as a local route on
// kglb0 (it sees the packets at LOCAL_IN), and forwards a client's
// connection to a real in its own namespace by NAT, IPv4 and IPv6.
func TestVMIPVS(t *testing.T) {
	lb, r := newOwnLink(t, vip.ModeRoute)
	client, backend := nstest.New(t), nstest.New(t)
	nstest.Veth(t,
		nstest.End{NS: client, Name: "c0", Addrs: []string{"10.9.0.1/24", "fd09::1/64"}},
		nstest.End{NS: lb, Name: "l0", Addrs: []string{"10.9.0.2/24", "fd09::2/64"}})
	nstest.Veth(t,
		nstest.End{NS: backend, Name: "r0", Addrs: []string{"10.9.1.2/24", "fd09:1::2/64"}},
		nstest.End{NS: lb, Name: "l1", Addrs: []string{"10.9.1.1/24", "fd09:1::1/64"}})
	client.AddRoute(t, "198.51.100.0/24", "10.9.0.2")
	client.AddRoute(t, "2001:db8::/32", "fd09::2")
	backend.AddRoute(t, "default", "10.9.1.1")
	backend.AddRoute(t, "default6", "fd09:1::1")
	lb.Sysctl(t, "net.ipv4.ip_forward", "1")
	lb.Sysctl(t, "net.ipv6.conf.all.forwarding", "1")
	backend.ServeTCP(t, "10.9.1.2:8080", "backend v4")
	backend.ServeTCP(t, "[fd09:1::2]:8080", "backend v6")

	if _, err := r.Apply(context.Background(), addrs("198.51.100.20", "2001:db8::20")); err != nil {
		t.Fatal(err)
	}
	h, err := ipvs.New(lb.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	for _, tt := range []struct {
		vip, backend string
		family       uint16
		netmask      uint32
		want         string
	}{
		{"198.51.100.20", "10.9.1.2", syscall.AF_INET, 0xffffffff, "backend v4"},
		{"2001:db8::20", "fd09:1::2", syscall.AF_INET6, 128, "backend v6"},
	} {
		svc := &ipvs.Service{Address: net.ParseIP(tt.vip), Protocol: syscall.IPPROTO_TCP, Port: 80,
			SchedName: "rr", AddressFamily: tt.family, Netmask: tt.netmask}
		if err := h.NewService(svc); err != nil {
			t.Fatalf("ipvs service %s: %v", tt.vip, err)
		}
		dst := &ipvs.Destination{Address: net.ParseIP(tt.backend), Port: 8080, Weight: 1,
			ConnectionFlags: ipvs.ConnectionFlagMasq, AddressFamily: tt.family}
		if err := h.NewDestination(svc, dst); err != nil {
			t.Fatalf("ipvs backend %s: %v", tt.backend, err)
		}
		addr := net.JoinHostPort(tt.vip, "80")
		got, err := client.DialRead("tcp", addr)
		if err != nil || got != tt.want {
			t.Errorf("client -> %s through IPVS: %q, %v; want %q", addr, got, err, tt.want)
		}
	}
}
