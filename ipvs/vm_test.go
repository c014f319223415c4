//go:build vmtest

package ipvs

import (
	"errors"
	"fmt"
	"math/rand"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kglb/kglb/internal/nstest"
	mobyipvs "github.com/moby/ipvs"
	"golang.org/x/sys/unix"
)

// These tests run in the VM (make vmtest VM_PKGS=./ipvs) against the real
// kernel's IPVS, each in a network namespace of its own (IPVS tables are
// per namespace).

// vmKernel returns a fresh namespace and a Netlink kernel on it.
func vmKernel(t testing.TB) (*nstest.NS, *Netlink) {
	t.Helper()
	nstest.Require(t)
	lb := nstest.New(t)
	k, err := NewNetlink(lb.Path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	return lb, k
}

// dump prints what kernel k holds, through the fake's printer (connection
// counts left out), to compare with render(desired).
func dump(t testing.TB, k Kernel) string {
	t.Helper()
	f := NewFake()
	svcs, err := k.Services()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range svcs {
		if s.Flags&FlagHashed == 0 {
			t.Errorf("service %s read back without HASHED", s.Key)
		}
		if err := f.AddService(s); err != nil {
			t.Fatalf("dump %s: %v", s.Key, err)
		}
		reals, err := k.Reals(s.Key)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range reals {
			if err := f.AddReal(s.Key, r); err != nil {
				t.Fatalf("dump %s %s: %v", s.Key, r.Key(), err)
			}
		}
	}
	return f.String()
}

// TestVMStates moves the real kernel through every state of the table
// (every scheduler with its flags, every forwarding method, tcp, udp, sctp,
// fwmark, IPv6, persistence, thresholds) in order and shuffled: each state
// is reached with the minimal writes and a second apply writes nothing.
func TestVMStates(t *testing.T) {
	sts := states()
	run := func(t *testing.T, order []int) {
		_, k := vmKernel(t)
		rec := newRec(t, k, "")
		prev := Desired{}
		for _, i := range order {
			readds := mhReadds(t, k, prev, sts[i].d)
			res, err := rec.Apply(ctx, sts[i].d)
			if err != nil {
				t.Fatalf("apply %q: %v", sts[i].name, err)
			}
			if got, want := res.Writes.Total(), minimalWrites(prev, sts[i].d)+readds; got != want {
				t.Errorf("apply %q: %d writes (%v), minimal %d", sts[i].name, got, res.Writes, want)
			}
			if got, want := dump(t, k), render(t, sts[i].d); got != want {
				t.Fatalf("after %q the kernel holds\n%s\nwant\n%s", sts[i].name, got, want)
			}
			res, err = rec.Resync(ctx, sts[i].d)
			if err != nil || res.Writes.Total() != 0 {
				t.Fatalf("resync of %q: writes %v, err %v", sts[i].name, res.Writes, err)
			}
			prev = sts[i].d
		}
	}
	inOrder := make([]int, len(sts))
	for i := range inOrder {
		inOrder[i] = i
	}
	t.Run("in order", func(t *testing.T) { run(t, inOrder) })
	for seed := int64(1); seed <= 3; seed++ {
		t.Run(fmt.Sprintf("shuffled seed %d", seed), func(t *testing.T) {
			run(t, rand.New(rand.NewSource(seed)).Perm(len(sts)))
		})
	}
}

// TestVMEveryScheduler creates a service with each scheduler the kernel
// offers, with one real per forwarding method, then changes scheduler,
// flags, persistence and netmask in place.
func TestVMEveryScheduler(t *testing.T) {
	_, k := vmKernel(t)
	rec := newRec(t, k, "")
	reals := []Real{
		real("10.1.0.1", 80, 1, ForwardNAT),
		real("10.1.0.2", 80, 2, ForwardTunnel),
		real("10.1.0.3", 80, 3, ForwardDR),
	}
	var d Desired
	for i, s := range Schedulers {
		var fl Flags
		switch s {
		case "sh":
			fl = FlagSHFallback | FlagSHPort
		case "mh":
			fl = FlagMHFallback | FlagMHPort
		}
		d.Services = append(d.Services, Service{Key: tcp(fmt.Sprintf("198.51.100.%d", i+1), 80), Scheduler: s, Flags: fl, Reals: reals})
	}
	if _, err := rec.Apply(ctx, d); err != nil {
		t.Fatal(err)
	}
	if got, want := dump(t, k), render(t, d); got != want {
		t.Fatalf("kernel\n%s\nwant\n%s", got, want)
	}
	// Rotate the schedulers and set every flag combination in place.
	for i := range d.Services {
		s := &d.Services[i]
		s.Scheduler = Schedulers[(i+1)%len(Schedulers)]
		s.Flags = FlagPersistent | FlagOnePacket | Flags(i%4)*FlagSched1
		s.Timeout = time.Duration(60+i) * time.Second
		s.Netmask = 24
	}
	res, err := rec.Apply(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	if w := res.Writes; w[OpUpdateService] != len(d.Services) || w.Total() != len(d.Services) {
		t.Errorf("in-place update issued %v, want only %d update_service", w, len(d.Services))
	}
	if got, want := dump(t, k), render(t, d); got != want {
		t.Fatalf("kernel\n%s\nwant\n%s", got, want)
	}
}

func TestVMUnknownScheduler(t *testing.T) {
	_, k := vmKernel(t)
	rec := newRec(t, k, "")
	_, err := rec.Apply(ctx, Desired{Services: []Service{{Key: tcp("198.51.100.1", 80), Scheduler: "nope"}}})
	if !errors.Is(err, unix.ENOENT) || !strings.Contains(err.Error(), "ip_vs_nope") {
		t.Fatalf("got %v", err)
	}
}

func mobyHandle(t testing.TB, ns *nstest.NS) *mobyipvs.Handle {
	t.Helper()
	h, err := mobyipvs.New(ns.Path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// TestVMDriftRepair deletes a service and changes a weight by hand (as
// `ipvsadm -D` and `ipvsadm -e` would); Resync puts both back.
func TestVMDriftRepair(t *testing.T) {
	lb, k := vmKernel(t)
	rec := newRec(t, k, "")
	d := states()[3].d
	if _, err := rec.Apply(ctx, d); err != nil {
		t.Fatal(err)
	}
	want := dump(t, k)
	h := mobyHandle(t, lb)
	web := d.Services[0].Key
	if err := h.DelService(&mobyipvs.Service{AddressFamily: unix.AF_INET, Protocol: unix.IPPROTO_TCP,
		Address: net.IP(web.Addr.AsSlice()), Port: web.Port}); err != nil {
		t.Fatal(err)
	}
	dns := d.Services[1]
	if err := h.UpdateDestination(toMobyService(dns), &mobyipvs.Destination{Address: net.IP(dns.Reals[0].Addr.AsSlice()),
		Port: dns.Reals[0].Port, Weight: 77, ConnectionFlags: mobyipvs.ConnectionFlagMasq}); err != nil {
		t.Fatal(err)
	}
	res, err := rec.Resync(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	if got := dump(t, k); got != want {
		t.Errorf("after resync\n%s\nwant\n%s", got, want)
	}
	if w := res.Writes; w[OpAddService] != 1 || w[OpAddReal] != 1 || w[OpUpdateReal] != 1 || w.Total() != 3 {
		t.Errorf("repair writes %v", w)
	}

	// Without a Resync, a write that hits the hole (ESRCH) triggers a full
	// read and the repair at once.
	if err := h.DelService(&mobyipvs.Service{AddressFamily: unix.AF_INET, Protocol: unix.IPPROTO_TCP,
		Address: net.IP(web.Addr.AsSlice()), Port: web.Port}); err != nil {
		t.Fatal(err)
	}
	d.Services[0].Reals = slices.Clone(d.Services[0].Reals) // Apply keeps the slice it was handed
	d.Services[0].Reals[0].Weight = 42
	res, err = rec.Apply(ctx, d)
	if err != nil || !res.FullRead {
		t.Fatalf("apply over a stale cache: full read %v, err %v", res.FullRead, err)
	}
	if got, want := dump(t, k), render(t, d); got != want {
		t.Errorf("kernel\n%s\nwant\n%s", got, want)
	}
}

// TestVMAdoption restarts the reconciler (new handle, same state dir): the
// first apply reads the kernel and writes nothing.
func TestVMAdoption(t *testing.T) {
	lb, k := vmKernel(t)
	dir := t.TempDir()
	d := states()[4].d
	if _, err := newRec(t, k, dir).Apply(ctx, d); err != nil {
		t.Fatal(err)
	}
	k2, err := NewNetlink(lb.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer k2.Close()
	res, err := newRec(t, k2, dir).Apply(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	if res.Writes.Total() != 0 || !res.FullRead || res.Services != len(d.Services) || len(res.Foreign) != 0 {
		t.Errorf("adoption: writes %v full %v services %d foreign %v", res.Writes, res.FullRead, res.Services, res.Foreign)
	}
}

// TestVMForeignSurvives: a service created outside kglb is reported, never
// changed, and left in place when kglb deletes its own.
func TestVMForeignSurvives(t *testing.T) {
	lb, k := vmKernel(t)
	h := mobyHandle(t, lb)
	fs := &mobyipvs.Service{AddressFamily: unix.AF_INET, Protocol: unix.IPPROTO_TCP, Address: net.ParseIP("198.51.100.99").To4(),
		Port: 80, SchedName: "wlc", Netmask: 0xffffffff}
	if err := h.NewService(fs); err != nil {
		t.Fatal(err)
	}
	if err := h.NewDestination(fs, &mobyipvs.Destination{Address: net.ParseIP("10.9.9.9").To4(), Port: 80, Weight: 5,
		ConnectionFlags: mobyipvs.ConnectionFlagDirectRoute}); err != nil {
		t.Fatal(err)
	}
	before := dump(t, k)
	rec := newRec(t, k, "")
	fk := tcp("198.51.100.99", 80)
	d := Desired{Services: []Service{
		{Key: tcp("198.51.100.1", 80), Scheduler: "rr", Reals: []Real{real("10.1.0.1", 80, 1, ForwardDR)}},
		{Key: fk, Scheduler: "mh", Reals: []Real{real("10.1.0.2", 80, 1, ForwardDR)}},
	}}
	res, err := rec.Apply(ctx, d)
	if !errors.Is(err, ErrForeign) || len(res.Foreign) != 1 || res.Foreign[0] != fk {
		t.Fatalf("err %v foreign %v", err, res.Foreign)
	}
	if _, err := rec.Apply(ctx, Desired{}); err != nil {
		t.Fatal(err)
	}
	if got := dump(t, k); got != before {
		t.Errorf("kernel\n%s\nwant the foreign service alone\n%s", got, before)
	}
}

// dialSpread dials addr n times from ns and counts the replies.
func dialSpread(t *testing.T, ns *nstest.NS, addr string, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	for range n {
		s, err := ns.DialRead("tcp", addr)
		if err != nil {
			t.Fatalf("dial %s: %v", addr, err)
		}
		got[s]++
	}
	return got
}

const vip = "198.51.100.10"

// TestVMPacketsNAT: a client reaches two reals through the VIP with NAT
// forwarding (the reals route back through the LB), rr alternates between
// them, and weight 0 stops new connections to one.
func TestVMPacketsNAT(t *testing.T) {
	lb, k := vmKernel(t)
	client := nstest.New(t)
	nstest.Veth(t, nstest.End{NS: client, Name: "c0", Addrs: []string{"10.0.1.2/24"}},
		nstest.End{NS: lb, Name: "l0", Addrs: []string{"10.0.1.1/24"}})
	client.AddRoute(t, vip+"/32", "10.0.1.1")
	lb.AddDummy(t, "kglb0", vip+"/32")
	lb.Sysctl(t, "net.ipv4.ip_forward", "1")
	var reals []Real
	for i, name := range []string{"r1", "r2"} {
		r := nstest.New(t)
		sub := fmt.Sprintf("10.0.%d", 2+i)
		nstest.Veth(t, nstest.End{NS: r, Name: "e0", Addrs: []string{sub + ".2/24"}},
			nstest.End{NS: lb, Name: fmt.Sprintf("l%d", i+1), Addrs: []string{sub + ".1/24"}})
		r.AddRoute(t, "default", sub+".1")
		r.ServeTCP(t, sub+".2:8080", name)
		reals = append(reals, real(sub+".2", 8080, 1, ForwardNAT))
	}
	rec := newRec(t, k, "")
	svc := Service{Key: tcp(vip, 80), Scheduler: "rr", Reals: reals}
	if _, err := rec.Apply(ctx, Desired{Services: []Service{svc}}); err != nil {
		t.Fatal(err)
	}
	if got := dialSpread(t, client, vip+":80", 6); got["r1"] != 3 || got["r2"] != 3 {
		t.Errorf("rr over two NAT reals: %v", got)
	}
	svc.Reals = slices.Clone(svc.Reals) // Apply keeps the slice it was handed
	svc.Reals[0].Weight = 0
	res, err := rec.Apply(ctx, Desired{Services: []Service{svc}})
	if err != nil || res.Writes.Total() != 1 {
		t.Fatalf("weight 0: writes %v err %v", res.Writes, err)
	}
	if got := dialSpread(t, client, vip+":80", 6); got["r2"] != 6 {
		t.Errorf("after weight 0 on r1: %v", got)
	}
	if _, err := rec.Resync(ctx, Desired{Services: []Service{svc}}); err != nil {
		t.Fatal(err)
	}
	// Connection counts are live; the packet and byte counters are summed
	// by the kernel's rate estimator every 2 s, so they are not checked.
	if s := rec.Stats(); len(s.Services) != 1 || len(s.Services[0].Reals) != 2 ||
		s.Services[0].Reals[0].ActiveConns+s.Services[0].Reals[0].InactiveConns != 3 ||
		s.Services[0].Reals[1].ActiveConns+s.Services[0].Reals[1].InactiveConns != 9 {
		t.Errorf("stats after 3 + 9 connections: %+v", s.Services)
	}
}

// TestVMPacketsTunnel: IPIP forwarding. Each real has tunl0 up, the VIP on
// lo and rp_filter 0, and answers the client over a return path of its own
// (its reply's source is the VIP, which is local on the LB, so it must not
// go back through the LB).
func TestVMPacketsTunnel(t *testing.T) {
	lb, k := vmKernel(t)
	client := nstest.New(t)
	nstest.Veth(t, nstest.End{NS: client, Name: "c0", Addrs: []string{"10.0.1.2/24"}},
		nstest.End{NS: lb, Name: "l0", Addrs: []string{"10.0.1.1/24"}})
	client.AddRoute(t, vip+"/32", "10.0.1.1")
	client.Sysctl(t, "net.ipv4.conf.all.rp_filter", "0")
	lb.AddDummy(t, "kglb0", vip+"/32")
	var reals []Real
	for i, name := range []string{"r1", "r2"} {
		r := nstest.New(t)
		sub := fmt.Sprintf("10.0.%d", 2+i)
		ret := fmt.Sprintf("10.0.%d", 4+i)
		nstest.Veth(t, nstest.End{NS: r, Name: "e0", Addrs: []string{sub + ".2/24"}},
			nstest.End{NS: lb, Name: fmt.Sprintf("l%d", i+1), Addrs: []string{sub + ".1/24"}})
		nstest.Veth(t, nstest.End{NS: r, Name: "b0", Addrs: []string{ret + ".2/24"}},
			nstest.End{NS: client, Name: fmt.Sprintf("c%d", i+1), Addrs: []string{ret + ".1/24"}})
		client.Sysctl(t, fmt.Sprintf("net.ipv4.conf.c%d.rp_filter", i+1), "0")
		r.AddRoute(t, "10.0.1.0/24", ret+".1")
		r.TunnelUp(t)
		r.AddLoAddr(t, vip+"/32")
		r.ServeTCP(t, vip+":80", name)
		reals = append(reals, real(sub+".2", 80, 1, ForwardTunnel))
	}
	client.Sysctl(t, "net.ipv4.conf.c0.rp_filter", "0")
	rec := newRec(t, k, "")
	svc := Service{Key: tcp(vip, 80), Scheduler: "rr", Reals: reals}
	if _, err := rec.Apply(ctx, Desired{Services: []Service{svc}}); err != nil {
		t.Fatal(err)
	}
	if got := dialSpread(t, client, vip+":80", 6); got["r1"] != 3 || got["r2"] != 3 {
		t.Errorf("rr over two tunnel reals: %v", got)
	}
	svc.Reals = slices.Clone(svc.Reals)
	svc.Reals[1].Weight = 0
	if _, err := rec.Apply(ctx, Desired{Services: []Service{svc}}); err != nil {
		t.Fatal(err)
	}
	if got := dialSpread(t, client, vip+":80", 6); got["r1"] != 6 {
		t.Errorf("after weight 0 on r2: %v", got)
	}
}

// TestVMDrainWithConnections holds a connection open through a NAT real,
// removes the real from the config, and checks it is kept at weight 0
// while the connection lives and deleted once it is gone.
func TestVMDrainWithConnections(t *testing.T) {
	lb, k := vmKernel(t)
	client := nstest.New(t)
	nstest.Veth(t, nstest.End{NS: client, Name: "c0", Addrs: []string{"10.0.1.2/24"}},
		nstest.End{NS: lb, Name: "l0", Addrs: []string{"10.0.1.1/24"}})
	client.AddRoute(t, vip+"/32", "10.0.1.1")
	lb.AddDummy(t, "kglb0", vip+"/32")
	lb.Sysctl(t, "net.ipv4.ip_forward", "1")
	r := nstest.New(t)
	nstest.Veth(t, nstest.End{NS: r, Name: "e0", Addrs: []string{"10.0.2.2/24"}},
		nstest.End{NS: lb, Name: "l1", Addrs: []string{"10.0.2.1/24"}})
	r.AddRoute(t, "default", "10.0.2.1")
	ln := r.Listen(t, "tcp", "10.0.2.2:8080")
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	now := time.Now()
	rec, err := NewReconciler(k, Options{StateDir: t.TempDir(), Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	rl := real("10.0.2.2", 8080, 1, ForwardNAT)
	d := func(rs ...Real) Desired {
		return Desired{Services: []Service{{Key: tcp(vip, 80), Scheduler: "rr", Drain: time.Minute, Reals: rs}}}
	}
	if _, err := rec.Apply(ctx, d(rl)); err != nil {
		t.Fatal(err)
	}
	conn, err := client.Dial("tcp", vip+":80")
	if err != nil {
		t.Fatal(err)
	}
	srv := <-accepted
	res, err := rec.Apply(ctx, d())
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Draining) != 1 || res.Draining[0].ActiveConns != 1 || res.Writes[OpUpdateReal] != 1 || res.Writes.Total() != 1 {
		t.Fatalf("drain with a live connection: draining %+v writes %v", res.Draining, res.Writes)
	}
	if !strings.Contains(dump(t, k), "10.0.2.2:8080                Masq    0 ") {
		t.Errorf("draining real not at weight 0:\n%s", dump(t, k))
	}
	// Past the deadline it goes even with the connection open.
	conn.Close()
	srv.Close()
	now = now.Add(2 * time.Minute)
	res, err = rec.Apply(ctx, d())
	if err != nil || res.Writes[OpDeleteReal] != 1 || len(res.Draining) != 0 {
		t.Fatalf("after the deadline: writes %v draining %v err %v", res.Writes, res.Draining, err)
	}
}

// TestVMWriteBatch sends one list of writes, more than one message holds,
// with failures among them, to the kernel and to the fake: each write
// stands alone (a failure stops none after it), each answer is the same
// errno, and both end with the same table.
func TestVMWriteBatch(t *testing.T) {
	_, k := vmKernel(t)
	f := NewFake()
	a := Service{Key: tcp("198.51.100.1", 80), Scheduler: "wrr", Netmask: 32}
	b := Service{Key: tcp("198.51.100.2", 80), Scheduler: "nope", Netmask: 32}
	m := Service{Key: MarkKey(IPv4, 7), Scheduler: "mh", Netmask: 32}
	gone := tcp("198.51.100.3", 80)
	var ws []Write
	type want struct {
		i   int
		err error
	}
	var wants []want
	add := func(w Write, err error) {
		if err != nil {
			wants = append(wants, want{len(ws), err})
		}
		ws = append(ws, w)
	}
	rl := func(i int, weight uint16) *Real {
		r := real(fmt.Sprintf("10.1.%d.%d", i/200, i%200+1), 80, weight, ForwardNAT)
		return &r
	}
	add(Write{Op: OpAddService, Service: a.Key, Svc: &a}, nil)
	for i := range 100 { // two messages' worth
		add(Write{Op: OpAddReal, Service: a.Key, Real: rl(i, 1)}, nil)
	}
	add(Write{Op: OpAddReal, Service: a.Key, Real: rl(5, 3)}, unix.EEXIST)
	add(Write{Op: OpAddReal, Service: gone, Real: rl(1, 1)}, unix.ESRCH)
	add(Write{Op: OpAddService, Service: b.Key, Svc: &b}, unix.ENOENT)
	add(Write{Op: OpAddReal, Service: b.Key, Real: rl(1, 1)}, unix.ESRCH)
	add(Write{Op: OpUpdateReal, Service: a.Key, Real: rl(7, 9)}, nil)
	add(Write{Op: OpUpdateReal, Service: a.Key, Real: rl(150, 9)}, unix.ENOENT)
	add(Write{Op: OpDeleteReal, Service: a.Key, RealKey: rl(8, 0).Key()}, nil)
	add(Write{Op: OpDeleteReal, Service: a.Key, RealKey: rl(8, 0).Key()}, unix.ENOENT)
	add(Write{Op: OpAddService, Service: m.Key, Svc: &m}, nil)
	add(Write{Op: OpAddReal, Service: m.Key, Real: rl(2, 5)}, nil)
	a2 := a
	a2.Scheduler = "rr"
	add(Write{Op: OpUpdateService, Service: a.Key, Svc: &a2}, nil)
	add(Write{Op: OpDeleteService, Service: gone}, unix.ESRCH)
	for i, w := range ws {
		if w.Real != nil {
			ws[i].RealKey = w.Real.Key()
		}
	}

	got, fake := k.Write(ws), f.Write(ws)
	if len(got) != len(ws) || len(fake) != len(ws) {
		t.Fatalf("%d and %d answers to %d writes", len(got), len(fake), len(ws))
	}
	wantErr := make([]error, len(ws))
	for _, w := range wants {
		wantErr[w.i] = w.err
	}
	for i := range ws {
		if !errors.Is(got[i], wantErr[i]) || (got[i] == nil) != (wantErr[i] == nil) {
			t.Errorf("write %d (%v): kernel says %v, want %v", i, ws[i].Op, got[i], wantErr[i])
		}
		if !errors.Is(fake[i], wantErr[i]) || (fake[i] == nil) != (wantErr[i] == nil) {
			t.Errorf("write %d (%v): fake says %v, want %v", i, ws[i].Op, fake[i], wantErr[i])
		}
	}
	if got, want := dump(t, k), dump(t, f); got != want {
		t.Errorf("kernel\n%s\nfake\n%s", got, want)
	}
}
