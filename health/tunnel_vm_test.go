//go:build vmtest

package health

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/kglb/kglb/internal/nstest"
	"github.com/moby/ipvs"
	"golang.org/x/sys/unix"
)

// TestTunnelledCheck proves a tunnelled check end to end in the VM: the probe goes to
// VIP:80 from a socket marked with the real's fwmark and bound to a non-VIP address
// of the LB; IPVS's fwmark service for that mark encapsulates it (IPIP) to that one
// real. A real with tunl0 up and the VIP on lo answers (up); a real that serves HTTP
// on its own address but lacks the VIP and tunnel is down when tunnelled and up when
// checked directly.
//
// Layout: the LB is the VM's root namespace (VIP 192.0.2.10 on a dummy link, IPVS,
// source 10.9.0.1), good real 10.9.0.2 and bad real 10.9.1.2 in namespaces of their
// own, each on a veth from the LB, each with a default route back via the LB.
func TestTunnelledCheck(t *testing.T) {
	lb := nstest.Root(t)
	good, bad := nstest.New(t), nstest.New(t)
	nstest.Veth(t, nstest.End{NS: lb, Name: "hc0", Addrs: []string{"10.9.0.1/24"}},
		nstest.End{NS: good, Name: "eth0", Addrs: []string{"10.9.0.2/24"}})
	nstest.Veth(t, nstest.End{NS: lb, Name: "hc1", Addrs: []string{"10.9.1.1/24"}},
		nstest.End{NS: bad, Name: "eth0", Addrs: []string{"10.9.1.2/24"}})
	good.AddRoute(t, "default", "10.9.0.1")
	bad.AddRoute(t, "default", "10.9.1.1")
	const vip = "192.0.2.10"
	lb.AddDummy(t, "kglbt0", vip+"/32")
	// The real answers from the VIP, an address that is local on the LB too:
	// accept_local lets such packets in, rp_filter must not drop them.
	for _, dev := range []string{"all", "hc0", "hc1"} {
		lb.Sysctl(t, "net.ipv4.conf."+dev+".accept_local", "1")
		lb.Sysctl(t, "net.ipv4.conf."+dev+".rp_filter", "0")
	}
	good.TunnelUp(t)
	good.AddLoAddr(t, vip+"/32")

	serveHTTP := func(ns *nstest.NS) {
		ln := ns.Listen(t, "tcp", "0.0.0.0:80")
		srv := &http.Server{ErrorLog: quietLog(), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			la := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
			io.WriteString(w, "served on "+la.String()+"\n")
		})}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
	}
	serveHTTP(good)
	serveHTTP(bad)

	goodIP, badIP := netip.MustParseAddr("10.9.0.2"), netip.MustParseAddr("10.9.1.2")
	marks, err := NewMarks(1001, 16)
	if err != nil {
		t.Fatal(err)
	}
	mk, err := marks.Sync([]netip.Addr{badIP, goodIP})
	if err != nil {
		t.Fatal(err)
	}

	// One fwmark service per mark, one tunnel real at port 0 (the packet keeps its
	// destination port), as the ipvs package will do from the engine's marks.
	h, err := ipvs.New("")
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	for backend, m := range mk {
		svc := &ipvs.Service{FWMark: m, AddressFamily: unix.AF_INET, SchedName: "rr", Netmask: 0xffffffff}
		if err := h.NewService(svc); err != nil {
			t.Fatalf("fwmark service %d: %v", m, err)
		}
		t.Cleanup(func() { h.DelService(svc) })
		if err := h.NewDestination(svc, &ipvs.Destination{Address: backend.AsSlice(), Port: 0, Weight: 1,
			ConnectionFlags: ipvs.ConnectionFlagTunnel, AddressFamily: unix.AF_INET}); err != nil {
			t.Fatalf("real %s of fwmark %d: %v", backend, m, err)
		}
	}

	httpCheck := func(backend netip.Addr, tunnel bool, body string) Target {
		s := Spec{Type: HTTP, Interval: 2 * time.Second, Timeout: time.Second, Rise: 1, Fall: 1}
		s.HTTP.Body = body
		if tunnel {
			s.Tunnel, s.VIP, s.Mark = true, netip.MustParseAddr(vip), mk[backend]
		}
		return Target{Real: netip.AddrPortFrom(backend, 80), Spec: s}
	}
	tcpCheck := func(backend netip.Addr) Target {
		return Target{Real: netip.AddrPortFrom(backend, 80), Spec: Spec{Type: TCP, Interval: 2 * time.Second,
			Timeout: time.Second, Rise: 1, Fall: 1, Tunnel: true, VIP: netip.MustParseAddr(vip), Mark: mk[backend]}}
	}
	want := map[Target]State{
		httpCheck(goodIP, true, "served on "+vip+":80"):  Up,
		httpCheck(badIP, true, ""):                       Down,
		httpCheck(badIP, false, "served on 10.9.1.2:80"): Up,
		httpCheck(goodIP, false, ""):                     Up,
		tcpCheck(goodIP):                                 Up,
		tcpCheck(badIP):                                  Down,
	}
	var targets []Target
	for tg := range want {
		targets = append(targets, tg)
	}

	s, err := New(Options{Dialer: Dialer{Source4: netip.MustParseAddr("10.9.0.1")}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Update(targets); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	got := map[Target]Change{}
	safety := time.After(60 * time.Second) // a hang guard, not a timing assertion
	for len(got) < len(want) {
		select {
		case cs := <-s.Changes():
			for _, c := range cs {
				got[c.Key] = c
			}
		case <-safety:
			t.Fatalf("only %d of %d verdicts: %v", len(got), len(want), got)
		}
	}
	for tg, st := range want {
		c := got[tg]
		name := fmt.Sprintf("%s %s", tg, tg.Spec.HTTP.Body)
		if c.State != st {
			t.Errorf("%s: %s (%s), want %s", name, c.State, c.Reason, st)
		} else {
			t.Logf("%s: %s (%s)", name, c.State, c.Reason)
		}
	}
}
