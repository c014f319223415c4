//go:build vmtest

package smoke

import (
	"fmt"
	"net"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/kglb/kglb/internal/nstest"
	"github.com/moby/ipvs"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Service flags from linux/ip_vs.h that moby/ipvs does not name.
const (
	flagHashed     = 0x0002 // set by the kernel on every service it holds
	flagMHFallback = 0x0008 // IP_VS_SVC_F_SCHED_MH_FALLBACK (SCHED1)
	flagMHPort     = 0x0010 // IP_VS_SVC_F_SCHED_MH_PORT (SCHED2)
)

func TestInVM(t *testing.T) {
	if os.Getenv("KGLB_VM") != "1" {
		t.Fatalf("KGLB_VM=%q, want 1: vmtest files must run in the VM", os.Getenv("KGLB_VM"))
	}
	if os.Geteuid() != 0 {
		t.Fatalf("euid %d, want root", os.Geteuid())
	}
	if addrs, err := net.LookupHost("localhost"); err != nil || !slices.Contains(addrs, "127.0.0.1") {
		t.Errorf("localhost resolves to %v, %v; want 127.0.0.1 (from /etc/hosts)", addrs, err)
	}
	if fi, err := os.Stat(nstest.NetnsDir); err != nil || !fi.IsDir() {
		t.Errorf("%s: %v; want a directory for named namespaces", nstest.NetnsDir, err)
	}
}

func TestIPVSFamily(t *testing.T) {
	f, err := netlink.GenlFamilyGet("IPVS")
	if err != nil {
		t.Fatalf("generic netlink family IPVS: %v (module ip_vs not loaded?)", err)
	}
	if f.ID == 0 {
		t.Fatalf("IPVS family has id 0")
	}
	t.Logf("IPVS genl family id %d version %d", f.ID, f.Version)
}

func newIPVS(t *testing.T, ns *nstest.NS) *ipvs.Handle {
	t.Helper()
	h, err := ipvs.New(ns.Path)
	if err != nil {
		t.Fatalf("ipvs handle in %s: %v", ns, err)
	}
	t.Cleanup(h.Close)
	return h
}

func TestIPVSMaglevTunnel(t *testing.T) {
	ns := nstest.New(t)
	h := newIPVS(t, ns)
	svc := &ipvs.Service{
		AddressFamily: unix.AF_INET,
		Protocol:      unix.IPPROTO_TCP,
		Address:       net.ParseIP("192.0.2.10").To4(),
		Port:          443,
		SchedName:     "mh",
		Flags:         flagMHFallback | flagMHPort,
		Netmask:       0xffffffff,
	}
	if err := h.NewService(svc); err != nil {
		t.Fatalf("add mh service: %v", err)
	}
	reals := []string{"198.51.100.1", "198.51.100.2", "198.51.100.3"}
	for _, r := range reals {
		d := &ipvs.Destination{
			AddressFamily:   unix.AF_INET,
			Address:         net.ParseIP(r).To4(),
			Port:            443,
			Weight:          1,
			ConnectionFlags: ipvs.ConnectionFlagTunnel,
		}
		if err := h.NewDestination(svc, d); err != nil {
			t.Fatalf("add tunnel real %s: %v", r, err)
		}
	}

	svcs, err := h.GetServices()
	if err != nil {
		t.Fatal(err)
	}
	if len(svcs) != 1 {
		t.Fatalf("got %d services, want 1", len(svcs))
	}
	got := svcs[0]
	if got.SchedName != "mh" || !got.Address.Equal(svc.Address) || got.Port != 443 ||
		got.Flags != flagHashed|flagMHFallback|flagMHPort {
		t.Errorf("read back service %s %s:%d flags %#x, want mh 192.0.2.10:443 flags %#x",
			got.SchedName, got.Address, got.Port, got.Flags, flagHashed|flagMHFallback|flagMHPort)
	}
	dsts, err := h.GetDestinations(got)
	if err != nil {
		t.Fatal(err)
	}
	var gotReals []string
	for _, d := range dsts {
		if d.ConnectionFlags&ipvs.ConnectionFlagFwdMask != ipvs.ConnectionFlagTunnel || d.Weight != 1 {
			t.Errorf("real %s: fwd %#x weight %d, want tunnel weight 1", d.Address, d.ConnectionFlags, d.Weight)
		}
		gotReals = append(gotReals, d.Address.String())
	}
	sort.Strings(gotReals)
	if strings.Join(gotReals, ",") != strings.Join(reals, ",") {
		t.Errorf("reals %v, want %v", gotReals, reals)
	}
}

func TestEverySchedulerLoaded(t *testing.T) {
	ns := nstest.New(t)
	h := newIPVS(t, ns)
	for i, sched := range []string{"rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh"} {
		svc := &ipvs.Service{
			AddressFamily: unix.AF_INET,
			Protocol:      unix.IPPROTO_TCP,
			Address:       net.ParseIP("192.0.2.20").To4(),
			Port:          uint16(1000 + i),
			SchedName:     sched,
			Netmask:       0xffffffff,
		}
		if err := h.NewService(svc); err != nil {
			t.Errorf("add service with scheduler %s: %v", sched, err)
		}
	}
}

func TestDummyLink(t *testing.T) {
	ns := nstest.New(t)
	l := ns.AddDummy(t, "kglb0", "192.0.2.1/32", "2001:db8::1/128")
	if l.Type() != "dummy" || l.Attrs().Flags&net.FlagUp == 0 {
		t.Fatalf("link kglb0 type %q flags %v, want an up dummy", l.Type(), l.Attrs().Flags)
	}
	addrs, err := ns.Netlink(t).AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range addrs {
		if a.IP.IsLinkLocalUnicast() {
			continue
		}
		got = append(got, a.IPNet.String())
	}
	sort.Strings(got)
	if want := "192.0.2.1/32,2001:db8::1/128"; strings.Join(got, ",") != want {
		t.Errorf("kglb0 addresses %v, want %s", got, want)
	}
}

func TestTunl0(t *testing.T) {
	ns := nstest.New(t)
	ns.TunnelUp(t)
	l, err := ns.Netlink(t).LinkByName("tunl0")
	if err != nil {
		t.Fatal(err)
	}
	if l.Type() != "ipip" || l.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("tunl0 type %q flags %v, want an up ipip link", l.Type(), l.Attrs().Flags)
	}
	if got := ns.ReadSysctl(t, "net.ipv4.conf.tunl0.rp_filter"); got != "0" {
		t.Errorf("tunl0 rp_filter %s, want 0", got)
	}
}

func TestVethTCP(t *testing.T) {
	tests := []struct {
		name   string
		client func(t testing.TB) *nstest.NS
		caddr  string
		saddr  string
		dial   string
	}{
		{"between namespaces v4", nstest.New, "10.20.0.1/24", "10.20.0.2/24", "10.20.0.2:80"},
		{"between namespaces v6", nstest.New, "fd20::1/64", "fd20::2/64", "[fd20::2]:80"},
		// In the VM the root namespace is throwaway too.
		{"root to namespace", nstest.Root, "10.21.0.1/24", "10.21.0.2/24", "10.21.0.2:80"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			client, server := tc.client(t), nstest.New(t)
			nstest.Veth(t,
				nstest.End{NS: client, Name: "vc0", Addrs: []string{tc.caddr}},
				nstest.End{NS: server, Name: "vs0", Addrs: []string{tc.saddr}})
			server.ServeTCP(t, tc.dial, "pong")
			got, err := client.DialRead("tcp", tc.dial)
			if err != nil || got != "pong" {
				t.Fatalf("round trip to %s: %q, %v; want \"pong\"", tc.dial, got, err)
			}
		})
	}
}

// TestIPVSNAT sends connections from a client namespace to a VIP on a
// dummy link of an LB namespace; IPVS (rr, masquerade) spreads them over two
// reals in namespaces of their own whose default route is the LB.
func TestIPVSNAT(t *testing.T) {
	client, lb := nstest.New(t), nstest.New(t)
	nstest.Veth(t,
		nstest.End{NS: client, Name: "eth0", Addrs: []string{"10.30.0.2/24"}},
		nstest.End{NS: lb, Name: "c0", Addrs: []string{"10.30.0.1/24"}})
	client.AddRoute(t, "default", "10.30.0.1")
	lb.Sysctl(t, "net.ipv4.ip_forward", "1")
	lb.AddDummy(t, "kglb0", "192.0.2.10/32")

	h := newIPVS(t, lb)
	svc := &ipvs.Service{
		AddressFamily: unix.AF_INET,
		Protocol:      unix.IPPROTO_TCP,
		Address:       net.ParseIP("192.0.2.10").To4(),
		Port:          80,
		SchedName:     "rr",
		Netmask:       0xffffffff,
	}
	if err := h.NewService(svc); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 2; i++ {
		real := nstest.New(t)
		lbAddr, realAddr := fmt.Sprintf("10.30.%d.1", i), fmt.Sprintf("10.30.%d.2", i)
		nstest.Veth(t,
			nstest.End{NS: lb, Name: fmt.Sprintf("r%d", i), Addrs: []string{lbAddr + "/24"}},
			nstest.End{NS: real, Name: "eth0", Addrs: []string{realAddr + "/24"}})
		real.AddRoute(t, "default", lbAddr)
		real.ServeTCP(t, realAddr+":8080", fmt.Sprintf("real%d", i))
		d := &ipvs.Destination{
			AddressFamily:   unix.AF_INET,
			Address:         net.ParseIP(realAddr).To4(),
			Port:            8080,
			Weight:          1,
			ConnectionFlags: ipvs.ConnectionFlagMasq,
		}
		if err := h.NewDestination(svc, d); err != nil {
			t.Fatal(err)
		}
	}

	seen := map[string]int{}
	for range 4 {
		got, err := client.DialRead("tcp", "192.0.2.10:80")
		if err != nil {
			t.Fatalf("connect through IPVS: %v", err)
		}
		seen[got]++
	}
	if seen["real1"] != 2 || seen["real2"] != 2 {
		t.Errorf("answers %v, want real1 and real2 twice each (rr)", seen)
	}
}
