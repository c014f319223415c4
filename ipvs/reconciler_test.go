package ipvs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/kglb/kglb/internal/nlbatch"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

var ctx = context.Background()

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

func tcp(addr string, port uint16) Key { return AddrKey(TCP, mustAddr(addr), port) }

func real(addr string, port, weight uint16, fwd Forward) Real {
	return Real{Addr: mustAddr(addr), Port: port, Weight: weight, Forward: fwd}
}

// render is what a kernel holding exactly d prints: built straight on a
// fresh fake, without the reconciler.
func render(t testing.TB, d Desired) string {
	t.Helper()
	f := NewFake()
	for _, s := range d.Services {
		s.Netmask = s.netmask()
		if err := f.AddService(s); err != nil {
			t.Fatalf("render %s: %v", s.Key, err)
		}
		for _, r := range s.Reals {
			if err := f.AddReal(s.Key, r); err != nil {
				t.Fatalf("render %s %s: %v", s.Key, r.Key(), err)
			}
		}
	}
	return f.String()
}

func newRec(t testing.TB, k Kernel, dir string) *Reconciler {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	r, err := NewReconciler(k, Options{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// states exercise every protocol, both families, fwmark services, every
// scheduler with its flags, persistence, one-packet, every forwarding
// method, thresholds and weights.
func states() []struct {
	name string
	d    Desired
} {
	web := tcp("198.51.100.10", 443)
	dns := AddrKey(UDP, mustAddr("198.51.100.11"), 53)
	sig := AddrKey(SCTP, mustAddr("198.51.100.12"), 3868)
	v6 := AddrKey(TCP, mustAddr("2001:db8::10"), 80)
	fw4 := MarkKey(IPv4, 1001)
	fw6 := MarkKey(IPv6, 1001)
	r1 := real("10.1.0.11", 443, 100, ForwardTunnel)
	r2 := real("10.1.0.12", 443, 200, ForwardTunnel)
	r3 := real("10.1.0.13", 443, 100, ForwardTunnel)
	type st = struct {
		name string
		d    Desired
	}
	return []st{
		{"empty", Desired{}},
		{"one mh service", Desired{Services: []Service{
			{Key: web, Scheduler: "mh", Flags: FlagMHFallback | FlagMHPort, Reals: []Real{r2, r1}},
		}}},
		{"weights and forward change", Desired{Services: []Service{
			{Key: web, Scheduler: "mh", Flags: FlagMHFallback, Reals: []Real{
				real("10.1.0.11", 443, 0, ForwardTunnel), real("10.1.0.12", 443, 200, ForwardDR), r3}},
		}}},
		{"persistence and every protocol", Desired{Services: []Service{
			{Key: web, Scheduler: "wlc", Flags: FlagPersistent, Timeout: 300 * time.Second, Netmask: 24, Reals: []Real{r1}},
			{Key: dns, Scheduler: "sh", Flags: FlagSHFallback | FlagSHPort | FlagOnePacket, Reals: []Real{
				real("10.1.0.21", 53, 1, ForwardNAT), real("10.1.0.22", 53, 1, ForwardNAT)}},
			{Key: sig, Scheduler: "rr", Reals: []Real{real("10.1.0.31", 3868, 5, ForwardDR)}},
		}}},
		{"ipv6 and fwmark", Desired{Services: []Service{
			{Key: v6, Scheduler: "lc", Flags: FlagPersistent, Timeout: 60 * time.Second, Netmask: 64, Reals: []Real{
				real("2001:db8:1::1", 80, 10, ForwardTunnel), real("2001:db8:1::2", 80, 10, ForwardDR)}},
			{Key: fw4, Scheduler: "rr", Reals: []Real{real("10.1.0.11", 0, 1, ForwardTunnel)}},
			{Key: fw6, Scheduler: "rr", Reals: []Real{real("2001:db8:1::1", 0, 1, ForwardTunnel)}},
		}}},
		{"thresholds and the other schedulers", Desired{Services: []Service{
			{Key: web, Scheduler: "lblc", Reals: []Real{{Addr: mustAddr("10.1.0.11"), Port: 443, Weight: 65535,
				Forward: ForwardNAT, UpperThreshold: 1000, LowerThreshold: 800}}},
			{Key: tcp("198.51.100.20", 80), Scheduler: "lblcr", Reals: []Real{r1}},
			{Key: tcp("198.51.100.21", 80), Scheduler: "dh", Reals: []Real{r1}},
			{Key: tcp("198.51.100.22", 80), Scheduler: "sed", Reals: []Real{r1}},
			{Key: tcp("198.51.100.23", 80), Scheduler: "nq", Reals: []Real{r1}},
			{Key: tcp("198.51.100.24", 80), Scheduler: "fo", Reals: []Real{r1, r2}},
			{Key: tcp("198.51.100.25", 80), Scheduler: "ovf", Reals: []Real{r1, r2}},
			{Key: tcp("198.51.100.26", 80), Scheduler: "wrr", Flags: FlagSched3, Reals: []Real{r1, r2, r3}},
			{Key: fw6, Scheduler: "mh", Flags: FlagMHPort, Reals: []Real{real("2001:db8:1::3", 0, 1, ForwardTunnel)}},
		}}},
		{"same keys new settings", Desired{Services: []Service{
			{Key: web, Scheduler: "rr", Flags: FlagOnePacket, Reals: []Real{{Addr: mustAddr("10.1.0.11"), Port: 443, Weight: 1,
				Forward: ForwardTunnel, UpperThreshold: 10}}},
			{Key: tcp("198.51.100.20", 80), Scheduler: "mh", Reals: []Real{r3, r2, r1}},
			{Key: fw6, Scheduler: "mh", Flags: FlagMHFallback, Reals: []Real{real("2001:db8:1::3", 0, 7, ForwardDR)}},
		}}},
	}
}

func TestStatesInOrderAndShuffled(t *testing.T) {
	sts := states()
	check := func(t *testing.T, rec *Reconciler, f *Fake, i int) {
		t.Helper()
		if _, err := rec.Apply(ctx, sts[i].d); err != nil {
			t.Fatalf("apply %q: %v", sts[i].name, err)
		}
		if got, want := f.String(), render(t, sts[i].d); got != want {
			t.Fatalf("after %q kernel is\n%s\nwant\n%s", sts[i].name, got, want)
		}
		f.ResetCounts()
		if res, err := rec.Apply(ctx, sts[i].d); err != nil || res.Writes.Total() != 0 {
			t.Fatalf("re-apply %q: writes %v, err %v", sts[i].name, res.Writes, err)
		}
	}
	t.Run("in order", func(t *testing.T) {
		f := NewFake()
		rec := newRec(t, f, "")
		for i := range sts {
			check(t, rec, f, i)
		}
	})
	for seed := int64(1); seed <= 5; seed++ {
		t.Run(fmt.Sprintf("shuffled seed %d", seed), func(t *testing.T) {
			f := NewFake()
			rec := newRec(t, f, "")
			order := rand.New(rand.NewSource(seed)).Perm(len(sts))
			for _, i := range order {
				check(t, rec, f, i)
			}
		})
	}
	t.Run("every pair", func(t *testing.T) {
		for i := range sts {
			for j := range sts {
				f := NewFake()
				rec := newRec(t, f, "")
				check(t, rec, f, i)
				check(t, rec, f, j)
			}
		}
	})
}

// mhReadds counts the writes, beyond minimalWrites, that keeping the
// kernel's list of the reals of each mh service in b canonical costs, read
// from kernel k before it moves from a to b: a real the kernel lists out of
// order (a new real sorting below it, or a restart that adopted it out of
// order) is deleted and added again, 2 writes, or 1 more where its spec
// changes anyway. The order is read from the kernel, not from the
// reconciler: reals added in ascending order, the newest at the head. A
// new real with reals re-added after it is added at weight 0 and raised
// last, 1 more write when its weight is not 0.
func mhReadds(t testing.TB, k Kernel, a, b Desired) int {
	t.Helper()
	old := map[Key]Service{}
	for _, s := range a.Services {
		old[s.Key] = s
	}
	n := 0
	for _, s := range b.Services {
		prev, ok := old[s.Key]
		if s.Scheduler != "mh" || !ok {
			continue
		}
		list, err := k.Reals(s.Key)
		if err != nil {
			t.Fatal(err)
		}
		pos := map[RealKey]int{} // position in the order of the adds
		for i, rl := range list {
			pos[rl.Key()] = len(list) - i
		}
		spec := map[RealKey]realSpec{}
		for _, rl := range prev.Reals {
			spec[rl.Key()] = rl.spec()
		}
		want := slices.Clone(s.Reals)
		slices.SortFunc(want, func(x, y Real) int { return x.Key().compare(y.Key()) })
		last, broken := 0, false
		for i, rl := range want {
			p, in := pos[rl.Key()]
			if !in || p <= last {
				broken = true
			}
			last = p
			if !in && broken && rl.Weight != 0 && i < len(want)-1 {
				n++
			}
			if !broken || !in {
				continue
			}
			if old, ok := spec[rl.Key()]; ok && old != rl.spec() {
				n++
			} else {
				n += 2
			}
		}
	}
	return n
}

// minimalWrites counts the fewest writes from a kernel holding a to one
// holding b, independently of the reconciler's diff: services and reals
// are compared by their printed form.
func minimalWrites(a, b Desired) int {
	type svc struct {
		head  string
		reals map[string]string
	}
	index := func(d Desired) map[string]svc {
		m := map[string]svc{}
		for _, s := range d.Services {
			v := svc{head: fmt.Sprintf("%s %x %d %d", s.Scheduler, uint32(s.Flags), s.Timeout, s.netmask()), reals: map[string]string{}}
			for _, r := range s.Reals {
				v.reals[netip.AddrPortFrom(r.Addr, r.Port).String()] = fmt.Sprintf("%d %d %d %d", r.Weight, r.Forward, r.UpperThreshold, r.LowerThreshold)
			}
			m[s.Key.String()] = v
		}
		return m
	}
	ia, ib := index(a), index(b)
	n := 0
	for k, sb := range ib {
		sa, ok := ia[k]
		if !ok {
			n += 1 + len(sb.reals)
			continue
		}
		if sa.head != sb.head {
			n++
		}
		for rk, rb := range sb.reals {
			if ra, ok := sa.reals[rk]; !ok || ra != rb {
				n++
			}
		}
		for rk := range sa.reals {
			if _, ok := sb.reals[rk]; !ok {
				n++
			}
		}
	}
	for k := range ia {
		if _, ok := ib[k]; !ok {
			n++
		}
	}
	return n
}

// randomEdit changes d in one to five random ways.
func randomEdit(rng *rand.Rand, d Desired) Desired {
	out := Desired{Services: make([]Service, 0, len(d.Services)+1)}
	for _, s := range d.Services {
		s.Reals = slices.Clone(s.Reals)
		out.Services = append(out.Services, s)
	}
	scheds := []string{"rr", "wrr", "mh", "sh", "wlc"}
	newReal := func(fam Family) Real {
		var a netip.Addr
		if fam == IPv4 {
			a = netip.AddrFrom4([4]byte{10, 2, byte(rng.Intn(4)), byte(1 + rng.Intn(12))})
		} else {
			a = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(1 + rng.Intn(12))})
		}
		return Real{Addr: a, Port: uint16(80 + rng.Intn(2)), Weight: uint16(rng.Intn(3) * 50), Forward: []Forward{ForwardNAT, ForwardTunnel, ForwardDR}[rng.Intn(3)]}
	}
	for range 1 + rng.Intn(5) {
		switch op := rng.Intn(8); {
		case op == 0 || len(out.Services) == 0: // add a service
			var k Key
			switch rng.Intn(3) {
			case 0:
				k = AddrKey(TCP, netip.AddrFrom4([4]byte{198, 51, 100, byte(rng.Intn(20))}), 443)
			case 1:
				k = AddrKey(UDP, netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(rng.Intn(20))}), 53)
			default:
				k = MarkKey([]Family{IPv4, IPv6}[rng.Intn(2)], uint32(1+rng.Intn(5)))
			}
			if slices.ContainsFunc(out.Services, func(s Service) bool { return s.Key == k }) {
				continue
			}
			s := Service{Key: k, Scheduler: scheds[rng.Intn(len(scheds))], Drain: time.Duration(rng.Intn(2)) * time.Minute}
			for range rng.Intn(4) {
				r := newReal(k.Family)
				if !slices.ContainsFunc(s.Reals, func(x Real) bool { return x.Key() == r.Key() }) {
					s.Reals = append(s.Reals, r)
				}
			}
			out.Services = append(out.Services, s)
		case op == 1: // remove a service
			i := rng.Intn(len(out.Services))
			out.Services = slices.Delete(out.Services, i, i+1)
		case op == 2: // service settings
			s := &out.Services[rng.Intn(len(out.Services))]
			s.Scheduler = scheds[rng.Intn(len(scheds))]
			s.Flags = Flags(rng.Intn(2))*FlagPersistent | Flags(rng.Intn(2))*FlagSched1
			s.Timeout = time.Duration(rng.Intn(2)*300) * time.Second
		case op == 3: // add a real
			s := &out.Services[rng.Intn(len(out.Services))]
			r := newReal(s.Key.Family)
			if !slices.ContainsFunc(s.Reals, func(x Real) bool { return x.Key() == r.Key() }) {
				s.Reals = append(s.Reals, r)
			}
		case op == 4: // remove a real
			s := &out.Services[rng.Intn(len(out.Services))]
			if len(s.Reals) > 0 {
				i := rng.Intn(len(s.Reals))
				s.Reals = slices.Delete(s.Reals, i, i+1)
			}
		default: // change a real
			s := &out.Services[rng.Intn(len(out.Services))]
			if len(s.Reals) > 0 {
				r := &s.Reals[rng.Intn(len(s.Reals))]
				switch rng.Intn(3) {
				case 0:
					r.Weight = uint16(rng.Intn(4) * 50)
				case 1:
					r.Forward = []Forward{ForwardNAT, ForwardTunnel, ForwardDR}[rng.Intn(3)]
				default:
					r.UpperThreshold = uint32(rng.Intn(2) * 100)
				}
			}
		}
	}
	rng.Shuffle(len(out.Services), func(i, j int) { out.Services[i], out.Services[j] = out.Services[j], out.Services[i] })
	return out
}

func TestWritesAreMinimal(t *testing.T) {
	for seed := int64(1); seed <= 20; seed++ {
		rng := rand.New(rand.NewSource(seed))
		f := NewFake()
		dir := t.TempDir()
		rec := newRec(t, f, dir)
		prev := Desired{}
		for step := range 60 {
			next := randomEdit(rng, prev)
			switch rng.Intn(6) {
			case 0: // a full read must not change the count
				if _, err := rec.Resync(ctx, prev); err != nil {
					t.Fatal(err)
				}
			case 1: // nor must a restart
				rec = newRec(t, f, dir)
			}
			readds := mhReadds(t, f, prev, next)
			f.ResetCounts()
			if _, err := rec.Apply(ctx, next); err != nil {
				t.Fatalf("seed %d step %d: %v", seed, step, err)
			}
			if got, want := f.Writes().Total(), minimalWrites(prev, next)+readds; got != want {
				t.Fatalf("seed %d step %d: %d writes (%v), minimal is %d\nfrom %+v\nto %+v", seed, step, got, f.Writes(), want, prev, next)
			}
			if got, want := f.String(), render(t, next); got != want {
				t.Fatalf("seed %d step %d: kernel\n%s\nwant\n%s", seed, step, got, want)
			}
			f.ResetCounts()
			if _, err := rec.Apply(ctx, next); err != nil || f.Writes().Total() != 0 {
				t.Fatalf("seed %d step %d: no-op apply wrote %v (err %v)", seed, step, f.Writes(), err)
			}
			prev = next
		}
	}
}

func TestForeignServiceIsNeverTouched(t *testing.T) {
	f := NewFake()
	foreign := Service{Key: tcp("198.51.100.99", 80), Scheduler: "rr", Netmask: 32}
	if err := f.AddService(foreign); err != nil {
		t.Fatal(err)
	}
	if err := f.AddReal(foreign.Key, real("10.9.9.9", 80, 1, ForwardNAT)); err != nil {
		t.Fatal(err)
	}
	before := f.String()
	rec := newRec(t, f, "")
	ours := Service{Key: tcp("198.51.100.10", 80), Scheduler: "rr", Reals: []Real{real("10.1.0.1", 80, 1, ForwardNAT)}}
	collide := Service{Key: foreign.Key, Name: "web", Scheduler: "mh", Reals: []Real{real("10.1.0.2", 80, 1, ForwardNAT)}}

	res, err := rec.Apply(ctx, Desired{Services: []Service{ours, collide}})
	if !errors.Is(err, ErrForeign) || !strings.Contains(err.Error(), `add service "web" (tcp 198.51.100.99:80)`) {
		t.Fatalf("want a conflict naming the service, got %v", err)
	}
	if !slices.Equal(res.Foreign, []Key{foreign.Key}) {
		t.Errorf("foreign = %v", res.Foreign)
	}
	// Desired goes empty: ours is deleted, the foreign one stays as it was.
	f.ResetCounts()
	if _, err := rec.Apply(ctx, Desired{}); err != nil {
		t.Fatal(err)
	}
	if got := f.String(); got != before {
		t.Errorf("kernel after deleting ours:\n%s\nwant\n%s", got, before)
	}
	if w := f.Writes(); w.Total() != 1 || w[OpDeleteService] != 1 {
		t.Errorf("writes %v, want one delete_service", w)
	}
}

func TestForeignCreatedBetweenReads(t *testing.T) {
	f := NewFake()
	rec := newRec(t, f, "")
	if _, err := rec.Apply(ctx, Desired{}); err != nil {
		t.Fatal(err)
	}
	k := tcp("198.51.100.7", 80)
	if err := f.AddService(Service{Key: k, Scheduler: "wlc", Netmask: 32}); err != nil {
		t.Fatal(err)
	}
	_, err := rec.Apply(ctx, Desired{Services: []Service{{Key: k, Scheduler: "rr"}}})
	if !errors.Is(err, ErrForeign) {
		t.Fatalf("want ErrForeign, got %v", err)
	}
	if slices.Contains(rec.Owned(), k) {
		t.Error("a service someone else created became owned")
	}
	if _, err := rec.Apply(ctx, Desired{}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(f.String(), "198.51.100.7:80 wlc") {
		t.Errorf("foreign service was changed:\n%s", f)
	}
}

func TestAdoptionAfterRestartWritesNothing(t *testing.T) {
	f := NewFake()
	dir := t.TempDir()
	d := states()[4].d
	if _, err := newRec(t, f, dir).Apply(ctx, d); err != nil {
		t.Fatal(err)
	}
	f.ResetCounts()
	rec := newRec(t, f, dir) // a restart: same kernel, same state dir
	res, err := rec.Apply(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	if f.Writes().Total() != 0 || len(res.Foreign) != 0 || res.Services != 3 || !res.FullRead {
		t.Errorf("restart: writes %v, foreign %v, services %d, full read %v", f.Writes(), res.Foreign, res.Services, res.FullRead)
	}
	svcReads, realReads := f.Reads()
	if svcReads != 1 || realReads != 3 {
		t.Errorf("reads: %d service dumps, %d real dumps; want 1 and 3", svcReads, realReads)
	}
	// A second apply trusts its cache: no read at all.
	f.ResetCounts()
	if _, err := rec.Apply(ctx, d); err != nil {
		t.Fatal(err)
	}
	if s, r := f.Reads(); s+r != 0 {
		t.Errorf("cached apply read the kernel: %d + %d dumps", s, r)
	}
}

func TestDriftRepair(t *testing.T) {
	f := NewFake()
	rec := newRec(t, f, "")
	d := states()[3].d
	if _, err := rec.Apply(ctx, d); err != nil {
		t.Fatal(err)
	}
	want := f.String()
	web := d.Services[0].Key
	// Someone deletes a service and changes a weight by hand.
	if err := f.DeleteService(web); err != nil {
		t.Fatal(err)
	}
	dns := d.Services[1]
	changed := dns.Reals[0]
	changed.Weight = 9
	if err := f.UpdateReal(dns.Key, changed); err != nil {
		t.Fatal(err)
	}
	f.ResetCounts()
	res, err := rec.Resync(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	if got := f.String(); got != want {
		t.Errorf("after resync:\n%s\nwant\n%s", got, want)
	}
	// Re-adding the service with its reals and restoring one weight.
	if w := f.Writes(); w[OpAddService] != 1 || w[OpAddReal] != 1 || w[OpUpdateReal] != 1 || w.Total() != 3 {
		t.Errorf("writes %v", w)
	}
	if len(res.Foreign) != 0 {
		t.Errorf("deleted own service came back as foreign: %v", res.Foreign)
	}
}

func TestStaleCacheRetriesWithFullRead(t *testing.T) {
	f := NewFake()
	rec := newRec(t, f, "")
	svc := Service{Key: tcp("198.51.100.10", 80), Scheduler: "rr", Reals: []Real{real("10.1.0.1", 80, 1, ForwardNAT)}}
	if _, err := rec.Apply(ctx, Desired{Services: []Service{svc}}); err != nil {
		t.Fatal(err)
	}
	if err := f.DeleteService(svc.Key); err != nil { // behind the cache's back
		t.Fatal(err)
	}
	svc.Reals = []Real{real("10.1.0.1", 80, 5, ForwardNAT)}
	res, err := rec.Apply(ctx, Desired{Services: []Service{svc}})
	if err != nil {
		t.Fatalf("apply over a stale cache: %v", err)
	}
	if !res.FullRead {
		t.Error("no full read after ESRCH")
	}
	if got, want := f.String(), render(t, Desired{Services: []Service{svc}}); got != want {
		t.Errorf("kernel\n%s\nwant\n%s", got, want)
	}
}

func TestDrain(t *testing.T) {
	f := NewFake()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	rec, err := NewReconciler(f, Options{StateDir: t.TempDir(), Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	k := tcp("198.51.100.10", 443)
	a, b, c := real("10.1.0.1", 443, 100, ForwardTunnel), real("10.1.0.2", 443, 100, ForwardTunnel), real("10.1.0.3", 443, 100, ForwardTunnel)
	svc := func(rs ...Real) Desired {
		return Desired{Services: []Service{{Key: k, Scheduler: "mh", Drain: 30 * time.Second, Reals: rs}}}
	}
	if _, err := rec.Apply(ctx, svc(a, b, c)); err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(f.SetConns(k, a.Key(), 3, 0))
	must(f.SetConns(k, b.Key(), 2, 0))
	// c has no connections: removing it deletes it at once.

	f.ResetCounts()
	res, err := rec.Apply(ctx, svc())
	must(err)
	if w := f.Writes(); w[OpUpdateReal] != 2 || w[OpDeleteReal] != 1 || w.Total() != 3 {
		t.Fatalf("removing reals: writes %v", w)
	}
	if len(res.Draining) != 2 || !res.NextDrain.Equal(now.Add(30*time.Second)) {
		t.Fatalf("draining %v, next %v", res.Draining, res.NextDrain)
	}
	if !strings.Contains(f.String(), "10.1.0.1:443                 Tunnel  0 ") {
		t.Errorf("draining real not at weight 0:\n%s", f)
	}

	// 10 s later: b's connections ended, so b goes; a still drains.
	now = now.Add(10 * time.Second)
	must(f.SetConns(k, b.Key(), 0, 4))
	f.ResetCounts()
	res, err = rec.Apply(ctx, svc())
	must(err)
	if w := f.Writes(); w[OpDeleteReal] != 1 || w.Total() != 1 {
		t.Errorf("after b idles: writes %v", w)
	}
	if len(res.Draining) != 1 || res.Draining[0].Real != a.Key() || res.Draining[0].ActiveConns != 3 {
		t.Errorf("draining %+v", res.Draining)
	}

	// A no-op apply before the deadline writes nothing.
	f.ResetCounts()
	if _, err := rec.Apply(ctx, svc()); err != nil || f.Writes().Total() != 0 {
		t.Errorf("apply while draining: %v, %v", f.Writes(), err)
	}

	// At the deadline a goes, connections or not.
	now = now.Add(20 * time.Second)
	f.ResetCounts()
	res, err = rec.Apply(ctx, svc())
	must(err)
	if w := f.Writes(); w[OpDeleteReal] != 1 || w.Total() != 1 || len(res.Draining) != 0 || !res.NextDrain.IsZero() {
		t.Errorf("at deadline: writes %v, draining %v", w, res.Draining)
	}
	if got, want := f.String(), render(t, svc()); got != want {
		t.Errorf("kernel\n%s\nwant\n%s", got, want)
	}
}

// A UDP real's flows are all "inactive" to IPVS: they must hold the drain
// as TCP's active connections do, and a TCP real's inactive ones must not.
func TestDrainCountsUDPFlows(t *testing.T) {
	for _, tt := range []struct {
		proto    Protocol
		drains   bool
		active   int
		inactive int
	}{
		{UDP, true, 0, 4},
		{UDP, false, 0, 0},
		{TCP, false, 0, 4},
		{TCP, true, 1, 0},
	} {
		t.Run(fmt.Sprintf("%s/%d-%d", tt.proto, tt.active, tt.inactive), func(t *testing.T) {
			f := NewFake()
			rec, err := NewReconciler(f, Options{StateDir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			k := AddrKey(tt.proto, netip.MustParseAddr("198.51.100.53"), 53)
			a, b := real("10.1.0.1", 53, 100, ForwardNAT), real("10.1.0.2", 53, 100, ForwardNAT)
			d := func(rs ...Real) Desired {
				return Desired{Services: []Service{{Key: k, Scheduler: "wrr", Drain: time.Minute, Reals: rs}}}
			}
			if _, err := rec.Apply(ctx, d(a, b)); err != nil {
				t.Fatal(err)
			}
			if err := f.SetConns(k, b.Key(), tt.active, tt.inactive); err != nil {
				t.Fatal(err)
			}
			res, err := rec.Apply(ctx, d(a))
			if err != nil {
				t.Fatal(err)
			}
			if got := len(res.Draining) == 1; got != tt.drains {
				t.Errorf("draining %v, want draining %v\n%s", res.Draining, tt.drains, f)
			}
		})
	}
}

func TestDrainUndoneWhenRealReturns(t *testing.T) {
	f := NewFake()
	rec := newRec(t, f, "")
	k := tcp("198.51.100.10", 443)
	a, b := real("10.1.0.1", 443, 100, ForwardTunnel), real("10.1.0.2", 443, 50, ForwardTunnel)
	d := func(rs ...Real) Desired {
		return Desired{Services: []Service{{Key: k, Scheduler: "wrr", Drain: time.Minute, Reals: rs}}}
	}
	if _, err := rec.Apply(ctx, d(a, b)); err != nil {
		t.Fatal(err)
	}
	if err := f.SetConns(k, b.Key(), 1, 0); err != nil {
		t.Fatal(err)
	}
	if res, err := rec.Apply(ctx, d(a)); err != nil || len(res.Draining) != 1 {
		t.Fatalf("drain b: %v %v", res.Draining, err)
	}
	f.ResetCounts()
	res, err := rec.Apply(ctx, d(a, b))
	if err != nil || len(res.Draining) != 0 || f.Writes()[OpUpdateReal] != 1 || f.Writes().Total() != 1 {
		t.Fatalf("b back: draining %v writes %v err %v", res.Draining, f.Writes(), err)
	}
	if err := f.SetConns(k, b.Key(), 0, 0); err != nil {
		t.Fatal(err)
	}
	if got, want := f.String(), render(t, d(a, b)); got != want {
		t.Errorf("kernel\n%s\nwant\n%s", got, want)
	}
}

func TestRemovedServiceIsDeletedAtOnce(t *testing.T) {
	// A service leaving Desired has had its route withdrawn and held by lb
	// already; draining its reals here would keep nothing alive.
	f := NewFake()
	rec := newRec(t, f, "")
	k := tcp("198.51.100.10", 443)
	d := Desired{Services: []Service{{Key: k, Scheduler: "rr", Drain: time.Hour, Reals: []Real{real("10.1.0.1", 443, 1, ForwardNAT)}}}}
	if _, err := rec.Apply(ctx, d); err != nil {
		t.Fatal(err)
	}
	if err := f.SetConns(k, d.Services[0].Reals[0].Key(), 10, 0); err != nil {
		t.Fatal(err)
	}
	f.ResetCounts()
	res, err := rec.Apply(ctx, Desired{})
	if err != nil {
		t.Fatal(err)
	}
	if w := f.Writes(); w[OpDeleteService] != 1 || w.Total() != 1 || len(res.Draining) != 0 {
		t.Errorf("writes %v draining %v", w, res.Draining)
	}
}

func TestPartialFailure(t *testing.T) {
	f := NewFake()
	rec := newRec(t, f, "")
	boom := errors.New("injected failure")
	bad := RealKey{mustAddr("10.1.0.12"), 443}
	f.Inject = func(op Op, svc Key, r RealKey) error {
		if op == OpAddReal && r == bad {
			return boom
		}
		return nil
	}
	d := states()[3].d
	d.Services[0].Name = "web"
	d.Services[0].Reals = append(d.Services[0].Reals, Real{Addr: bad.Addr, Port: 443, Weight: 1, Forward: ForwardTunnel})
	res, err := rec.Apply(ctx, d)
	if !errors.Is(err, boom) {
		t.Fatalf("want the injected error, got %v", err)
	}
	if want := `add real 10.1.0.12:443 to service "web" (tcp 198.51.100.10:443): injected failure`; err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
	if res.Services != 3 || res.Reals != 4 {
		t.Errorf("reached %d services %d reals, want 3 and 4", res.Services, res.Reals)
	}
	// The rest was applied; once the fault clears the next apply adds only
	// the missing real.
	f.Inject = nil
	f.ResetCounts()
	if _, err := rec.Apply(ctx, d); err != nil {
		t.Fatal(err)
	}
	if w := f.Writes(); w[OpAddReal] != 1 || w.Total() != 1 {
		t.Errorf("retry writes %v", w)
	}
	if got, want := f.String(), render(t, d); got != want {
		t.Errorf("kernel\n%s\nwant\n%s", got, want)
	}
}

func TestInvalidItemsFailAlone(t *testing.T) {
	f := NewFake()
	rec := newRec(t, f, "")
	good := Service{Key: tcp("198.51.100.10", 80), Scheduler: "rr", Reals: []Real{real("10.1.0.1", 80, 1, ForwardNAT)}}
	tests := []struct {
		name string
		svc  Service
		want string
	}{
		{"unknown scheduler", Service{Key: tcp("198.51.100.11", 80), Scheduler: "nope"},
			"add service tcp 198.51.100.11:80: scheduler \"nope\": no such file or directory (is scheduler module ip_vs_nope loaded?)"},
		{"family mismatch", Service{Key: tcp("198.51.100.12", 80), Scheduler: "rr", Reals: []Real{real("2001:db8::1", 80, 1, ForwardNAT)}},
			"service tcp 198.51.100.12:80: real [2001:db8::1]:80: address family differs from the service's (ipv4)"},
		{"thresholds", Service{Key: tcp("198.51.100.13", 80), Scheduler: "rr", Reals: []Real{{Addr: mustAddr("10.1.0.1"), LowerThreshold: 5}}},
			"service tcp 198.51.100.13:80: real 10.1.0.1:0: lower threshold 5 above upper threshold 0"},
		{"fractional timeout", Service{Key: tcp("198.51.100.14", 80), Scheduler: "rr", Timeout: 1500 * time.Millisecond},
			"service tcp 198.51.100.14:80: persistence timeout 1.5s is not whole seconds"},
		{"no address", Service{Key: Key{Family: IPv4, Protocol: TCP}, Scheduler: "rr"},
			"service tcp invalid AddrPort: service has neither an address nor an fwmark"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := rec.Apply(ctx, Desired{Services: []Service{good, tt.svc}})
			if err == nil || err.Error() != tt.want {
				t.Fatalf("error %v\nwant    %s", err, tt.want)
			}
			if got, want := f.String(), render(t, Desired{Services: []Service{good}}); got != want {
				t.Errorf("kernel\n%s\nwant\n%s", got, want)
			}
		})
	}
}

func TestStateFile(t *testing.T) {
	t.Run("corrupt is an error", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, StateFile), []byte("{not json"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := NewReconciler(NewFake(), Options{StateDir: dir})
		if err == nil || !strings.Contains(err.Error(), "is corrupt") || !strings.Contains(err.Error(), "move it away") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("round trip", func(t *testing.T) {
		dir := t.TempDir()
		f := NewFake()
		d := states()[4].d
		if _, err := newRec(t, f, dir).Apply(ctx, d); err != nil {
			t.Fatal(err)
		}
		owned, err := loadOwned(filepath.Join(dir, StateFile))
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range d.Services {
			if !owned[s.Key] {
				t.Errorf("%s not recorded", s.Key)
			}
		}
		entries, _ := os.ReadDir(dir)
		if len(entries) != 1 {
			t.Errorf("state dir holds %d files, want only %s (no temp files left)", len(entries), StateFile)
		}
	})
	t.Run("unwritable state dir adds nothing", func(t *testing.T) {
		dir := t.TempDir()
		f := NewFake()
		rec := newRec(t, f, dir)
		if err := os.Chmod(dir, 0o500); err != nil {
			t.Fatal(err)
		}
		defer os.Chmod(dir, 0o700)
		if os.Geteuid() == 0 {
			// root ignores the mode; make the path a file instead.
			rec.statePath = filepath.Join(dir, StateFile, "x")
		}
		_, err := rec.Apply(ctx, states()[1].d)
		if err == nil || !strings.Contains(err.Error(), "record ownership") {
			t.Fatalf("got %v", err)
		}
		if f.Writes().Total() != 0 {
			t.Errorf("wrote %v without recording ownership", f.Writes())
		}
	})
}

// TestApplyOneChange: Apply of the whole value with one real's weight
// changed is one write and no read: the reconciler diffs against its cache.
func TestApplyOneChange(t *testing.T) {
	f := NewFake()
	rec := newRec(t, f, "")
	d := states()[5].d
	if _, err := rec.Apply(ctx, d); err != nil {
		t.Fatal(err)
	}
	d = withWeight(d, 3, 0)
	f.ResetCounts()
	if _, err := rec.Apply(ctx, d); err != nil {
		t.Fatal(err)
	}
	if w := f.Writes(); w[OpUpdateReal] != 1 || w.Total() != 1 {
		t.Errorf("writes %v", w)
	}
	if sr, rr := f.Reads(); sr+rr != 0 {
		t.Errorf("reads %d+%d", sr, rr)
	}
	if got, want := f.String(), render(t, d); got != want {
		t.Errorf("kernel\n%s\nwant\n%s", got, want)
	}
}

// withWeight is d with the weight of the first real of service i set to w,
// in new slices, as a caller of Apply must hand a change.
func withWeight(d Desired, i int, w uint16) Desired {
	s := d.Services[i]
	s.Reals = slices.Clone(s.Reals)
	s.Reals[0].Weight = w
	d.Services = slices.Clone(d.Services)
	d.Services[i] = s
	return d
}

// TestApplyChanged hands the reconciler the services that changed
// (Desired.Changed): only those are looked at, whatever the others hold;
// a list that does not fit the last pass (another service at the index,
// another length) is ignored and every service is diffed.
func TestApplyChanged(t *testing.T) {
	f := NewFake()
	rec := newRec(t, f, "")
	d := states()[5].d
	if _, err := rec.Apply(ctx, d); err != nil {
		t.Fatal(err)
	}
	// Service 3 changed and is listed; service 1 changed too but is not:
	// the caller said it had not, and it is not looked at.
	next := withWeight(withWeight(d, 3, 0), 1, 0)
	next.Changed = []int{3}
	f.ResetCounts()
	if _, err := rec.Apply(ctx, next); err != nil {
		t.Fatal(err)
	}
	if w := f.Writes(); w[OpUpdateReal] != 1 || w.Total() != 1 {
		t.Errorf("listed: writes %v, want the one update of service 3", w)
	}
	// The same list with another service at its index: not in step, every
	// service is diffed (service 1's change is written now).
	other := next
	other.Services = slices.Clone(next.Services)
	other.Services[3], other.Services[4] = other.Services[4], other.Services[3]
	other.Changed = []int{3}
	f.ResetCounts()
	if _, err := rec.Apply(ctx, other); err != nil {
		t.Fatal(err)
	}
	if got, want := f.String(), render(t, other); got != want {
		t.Errorf("kernel after a list that does not fit\n%s\nwant\n%s", got, want)
	}
	// Nothing changed: nothing looked at, nothing written.
	other.Changed = []int{}
	f.ResetCounts()
	if _, err := rec.Apply(ctx, other); err != nil {
		t.Fatal(err)
	}
	if w := f.Writes(); w.Total() != 0 {
		t.Errorf("empty list: writes %v", w)
	}
}

func TestCanonicalRealOrder(t *testing.T) {
	// Two nodes given the same reals in different orders add them in the
	// same order, so mh builds the same table on both.
	var orders [2][]RealKey
	for i, rs := range [][]Real{
		{real("10.1.0.3", 443, 1, ForwardTunnel), real("10.1.0.1", 443, 1, ForwardTunnel), real("10.1.0.2", 443, 1, ForwardTunnel)},
		{real("10.1.0.2", 443, 1, ForwardTunnel), real("10.1.0.3", 443, 1, ForwardTunnel), real("10.1.0.1", 443, 1, ForwardTunnel)},
	} {
		f := NewFake()
		f.Inject = func(op Op, _ Key, r RealKey) error {
			if op == OpAddReal {
				orders[i] = append(orders[i], r)
			}
			return nil
		}
		if _, err := newRec(t, f, "").Apply(ctx, Desired{Services: []Service{{Key: tcp("198.51.100.1", 443), Scheduler: "mh", Reals: rs}}}); err != nil {
			t.Fatal(err)
		}
	}
	if !slices.Equal(orders[0], orders[1]) || !slices.IsSortedFunc(orders[0], RealKey.compare) {
		t.Errorf("orders %v and %v", orders[0], orders[1])
	}
}

func TestContextCancelStopsWrites(t *testing.T) {
	f := NewFake()
	rec := newRec(t, f, "")
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err := rec.Apply(cctx, states()[1].d)
	if !errors.Is(err, context.Canceled) || f.Writes().Total() != 0 {
		t.Fatalf("err %v writes %v", err, f.Writes())
	}
	if _, err := rec.Apply(ctx, states()[1].d); err != nil {
		t.Fatal(err)
	}
	if got, want := f.String(), render(t, states()[1].d); got != want {
		t.Errorf("kernel\n%s\nwant\n%s", got, want)
	}
}

func TestMetricsAndStats(t *testing.T) {
	f := NewFake()
	reg := prometheus.NewRegistry()
	rec, err := NewReconciler(f, Options{StateDir: t.TempDir(), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	d := states()[1].d
	if _, err := rec.Apply(ctx, d); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP kglb_ipvs_writes_total IPVS netlink writes issued by the reconciler, by operation and outcome (ok or error).
# TYPE kglb_ipvs_writes_total counter
kglb_ipvs_writes_total{op="add_real",outcome="error"} 0
kglb_ipvs_writes_total{op="add_real",outcome="ok"} 2
kglb_ipvs_writes_total{op="add_service",outcome="error"} 0
kglb_ipvs_writes_total{op="add_service",outcome="ok"} 1
kglb_ipvs_writes_total{op="delete_real",outcome="error"} 0
kglb_ipvs_writes_total{op="delete_real",outcome="ok"} 0
kglb_ipvs_writes_total{op="delete_service",outcome="error"} 0
kglb_ipvs_writes_total{op="delete_service",outcome="ok"} 0
kglb_ipvs_writes_total{op="update_real",outcome="error"} 0
kglb_ipvs_writes_total{op="update_real",outcome="ok"} 0
kglb_ipvs_writes_total{op="update_service",outcome="error"} 0
kglb_ipvs_writes_total{op="update_service",outcome="ok"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "kglb_ipvs_writes_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.ToFloat64(rec.m.owned); n != 1 {
		t.Errorf("owned gauge %v", n)
	}
	k := d.Services[0].Key
	if err := f.SetConns(k, d.Services[0].Reals[0].Key(), 4, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := rec.Resync(ctx, d); err != nil {
		t.Fatal(err)
	}
	snap := rec.Stats()
	if len(snap.Services) != 1 || snap.Services[0].Stats.Connections != 5 || snap.Services[0].Reals[1].ActiveConns != 4 ||
		snap.Services[0].Flags&FlagHashed != 0 {
		t.Errorf("stats %+v", snap)
	}
}

func TestReadAdoptsWithoutWriting(t *testing.T) {
	f := NewFake()
	dir := t.TempDir()
	d := states()[3].d
	if _, err := newRec(t, f, dir).Apply(ctx, d); err != nil {
		t.Fatal(err)
	}
	f.ResetCounts()
	rec := newRec(t, f, dir)
	snap, err := rec.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Services) != len(d.Services) || f.Writes().Total() != 0 {
		t.Fatalf("read %d services, writes %v", len(snap.Services), f.Writes())
	}
	f.ResetCounts()
	res, err := rec.Apply(ctx, d)
	if err != nil || res.FullRead || res.Writes.Total() != 0 {
		t.Errorf("apply after Read: full read %v, writes %v, err %v", res.FullRead, res.Writes, err)
	}
}

// TestPassIsOneWrite: a pass decides every write, then hands them to the
// kernel in one Write (Netlink sends them many per message): a cold apply
// of 50 services x 10 reals, and a change touching several services, are
// one call each. A service whose add fails takes its reals with it, with
// one error, and the rest is applied.
func TestPassIsOneWrite(t *testing.T) {
	f := NewFake()
	rec := newRec(t, f, "")
	var d Desired
	for i := range 50 {
		s := Service{Key: tcp(fmt.Sprintf("198.51.100.%d", i+1), 80), Name: fmt.Sprintf("s%d", i), Scheduler: "wrr"}
		for j := range 10 {
			s.Reals = append(s.Reals, real(fmt.Sprintf("10.1.%d.%d", i, j+1), 80, 1, ForwardNAT))
		}
		d.Services = append(d.Services, s)
	}
	d.Services[3].Scheduler = "nope"
	_, err := rec.Apply(ctx, d)
	if want := `add service "s3" (tcp 198.51.100.4:80): scheduler "nope": no such file or directory (is scheduler module ip_vs_nope loaded?)`; err == nil || err.Error() != want {
		t.Errorf("error %v, want %s", err, want)
	}
	if n := f.Batches(); n != 1 {
		t.Errorf("cold apply: %d kernel writes calls, want 1", n)
	}
	if w := f.Writes(); w[OpAddService] != 49 || w[OpAddReal] != 490 {
		t.Errorf("cold apply wrote %v", w)
	}
	d.Services[3].Scheduler = "wrr"
	for _, i := range []int{3, 7, 20} {
		// A new slice: Apply keeps the ones it was handed.
		d.Services[i].Reals = slices.Clone(d.Services[i].Reals)
		d.Services[i].Reals[2].Weight = 5
	}
	f.ResetCounts()
	if _, err := rec.Apply(ctx, d); err != nil {
		t.Fatal(err)
	}
	if n, w := f.Batches(), f.Writes(); n != 1 || w[OpAddService] != 1 || w[OpAddReal] != 10 || w[OpUpdateReal] != 2 || w.Total() != 13 {
		t.Errorf("second pass: %d calls, writes %v", n, w)
	}
	if got, want := f.String(), render(t, d); got != want {
		t.Errorf("kernel\n%s\nwant\n%s", got, want)
	}
}

// TestAppliedLogLevel: a pass that only sets weights from the cache (a health
// pass) logs at Debug; adds, and what a full read repaired, at Info.
func TestAppliedLogLevel(t *testing.T) {
	var b bytes.Buffer
	f := NewFake()
	rec, err := NewReconciler(f, Options{StateDir: t.TempDir(),
		Logger: hclog.New(&hclog.LoggerOptions{Output: &b, Level: hclog.Info})})
	if err != nil {
		t.Fatal(err)
	}
	d := states()[5].d
	if _, err := rec.Apply(ctx, d); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "ipvs applied") {
		t.Fatalf("adds not logged at Info:\n%s", b.String())
	}
	b.Reset()
	d = withWeight(d, 3, 0)
	if _, err := rec.Apply(ctx, d); err != nil {
		t.Fatal(err)
	}
	if b.Len() != 0 {
		t.Errorf("a weight-only pass logged at Info:\n%s", b.String())
	}
	// Someone changes the weight back by hand; the resync repairs it.
	r := d.Services[3].Reals[0]
	r.Weight = 7
	if err := f.UpdateReal(d.Services[3].Key, r); err != nil {
		t.Fatal(err)
	}
	if _, err := rec.Resync(ctx, d); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "update_real=1") || !strings.Contains(b.String(), "full_read=true") {
		t.Errorf("a repair by a full read not logged at Info:\n%s", b.String())
	}
}

// TestFailedAddRetriedByNextChangedPass: a real whose add failed in a pass
// that also changed the set of services (a reload adding a service) is
// added by the next pass, even when that pass lists only other services
// as changed (Desired.Changed, as the engine's health passes do): the
// failed service is not in step, and must not be taken as such.
func TestFailedAddRetriedByNextChangedPass(t *testing.T) {
	f := NewFake()
	rec := newRec(t, f, "")
	a := Service{Key: tcp("198.51.100.1", 80), Name: "a", Scheduler: "wrr", Reals: []Real{real("10.1.0.1", 80, 100, ForwardTunnel)}}
	b := Service{Key: tcp("198.51.100.2", 80), Name: "b", Scheduler: "wrr",
		Reals: []Real{real("10.1.0.2", 80, 100, ForwardTunnel), real("10.1.0.3", 80, 100, ForwardTunnel)}}
	if _, err := rec.Apply(ctx, Desired{Services: []Service{a}}); err != nil {
		t.Fatal(err)
	}
	// A reload adds b; one of its reals fails to be added (a transient
	// error, not one that shows the cache wrong).
	boom := errors.New("transient failure")
	bad := RealKey{mustAddr("10.1.0.3"), 80}
	f.Inject = func(op Op, _ Key, r RealKey) error {
		if op == OpAddReal && r == bad {
			return boom
		}
		return nil
	}
	d := Desired{Services: []Service{a, b}}
	if _, err := rec.Apply(ctx, d); !errors.Is(err, boom) {
		t.Fatalf("want the injected error, got %v", err)
	}
	f.Inject = nil
	// A health pass: a's weight changes, and only a is listed.
	next := withWeight(d, 0, 0)
	next.Changed = []int{0}
	if _, err := rec.Apply(ctx, next); err != nil {
		t.Fatal(err)
	}
	if got, want := f.String(), render(t, next); got != want {
		t.Errorf("kernel after the next pass\n%s\nwant\n%s", got, want)
	}
}

// applyTwo makes rec apply two services of one real each, and returns them.
func applyTwo(t *testing.T, rec *Reconciler) (a, b Service) {
	t.Helper()
	a = Service{Key: tcp("198.51.100.1", 80), Name: "a", Scheduler: "wrr", Reals: []Real{real("10.1.0.1", 80, 100, ForwardTunnel)}}
	b = Service{Key: tcp("198.51.100.2", 80), Name: "b", Scheduler: "wrr", Reals: []Real{real("10.1.0.2", 80, 100, ForwardTunnel)}}
	if _, err := rec.Apply(ctx, Desired{Services: []Service{a, b}}); err != nil {
		t.Fatal(err)
	}
	return a, b
}

// TestOwnershipSavedAfterFailedSave: when the ownership record cannot be
// written (a full disk), the next pass writes it, even if it changes no
// ownership. Else the record keeps a service kglb deleted, and after a
// restart kglb deletes the service someone else has since created there.
func TestOwnershipSavedAfterFailedSave(t *testing.T) {
	f := NewFake()
	dir := t.TempDir()
	rec := newRec(t, f, dir)
	a, b := applyTwo(t, rec)
	// b leaves the configuration while the record cannot be written.
	path := rec.statePath
	blocker := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	rec.statePath = filepath.Join(blocker, StateFile) // ENOTDIR
	if _, err := rec.Apply(ctx, Desired{Services: []Service{a}}); err == nil {
		t.Fatal("no error from a failed save of the record")
	}
	rec.statePath = path
	if _, err := rec.Apply(ctx, Desired{Services: []Service{a}}); err != nil {
		t.Fatal(err)
	}
	owned, err := loadOwned(path)
	if err != nil {
		t.Fatal(err)
	}
	if owned[b.Key] {
		t.Errorf("the record still lists %s, deleted two passes ago", b.Key)
	}
	// The consequence: someone creates their own service at b's key, and
	// kglb restarts.
	if err := f.AddService(Service{Key: b.Key, Scheduler: "rr", Netmask: 32}); err != nil {
		t.Fatal(err)
	}
	rec2 := newRec(t, f, dir)
	if _, err := rec2.Apply(ctx, Desired{Services: []Service{a}}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
	svcs, _ := f.Services()
	if !slices.ContainsFunc(svcs, func(s Service) bool { return s.Key == b.Key }) {
		t.Errorf("after a restart kglb deleted a service it does not own:\n%s", f)
	}
}

// TestFailedSaveIsReported: a save of the ownership record that fails with
// ENOENT (its directory gone) is reported, not taken for a stale cache and
// lost in the pass run again with a full read.
func TestFailedSaveIsReported(t *testing.T) {
	f := NewFake()
	dir := t.TempDir()
	rec := newRec(t, f, dir)
	a, _ := applyTwo(t, rec)
	rec.statePath = filepath.Join(dir, "gone", StateFile)
	if _, err := rec.Apply(ctx, Desired{Services: []Service{a}}); err == nil {
		t.Error("a failed save of the ownership record was not reported")
	}
}

// lostAcks is the kernel with the acks of some writes lost: it makes every
// write, as the kernel does within sendmsg, and reports those lose picks as
// nlbatch reports an ack that never came.
type lostAcks struct {
	*Fake
	lose func(Write) bool
}

func (k *lostAcks) Write(ws []Write) []error {
	errs := k.Fake.Write(ws)
	for i, w := range ws {
		if k.lose(w) {
			errs[i] = fmt.Errorf("no ack within %s: %w", nlbatch.AckTimeout, nlbatch.ErrUnknown)
		}
	}
	return errs
}

// TestLostAckOutcomeUnknown: an add whose ack never came may have been
// made. The pass fails naming the write; the next pass reads the kernel
// rather than assume either outcome, and finds the service kglb's own:
// it writes nothing and reports nothing foreign.
func TestLostAckOutcomeUnknown(t *testing.T) {
	f := NewFake()
	k := &lostAcks{Fake: f, lose: func(w Write) bool { return w.Op == OpAddService }}
	rec := newRec(t, k, "")
	d := states()[3].d
	d.Services[0].Name = "web"
	_, err := rec.Apply(ctx, d)
	if !errors.Is(err, nlbatch.ErrUnknown) {
		t.Fatalf("lost acks: %v, want %v", err, nlbatch.ErrUnknown)
	}
	if want := `add service "web" (tcp 198.51.100.10:443): no ack within 10s: outcome unknown`; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q, want it to say %q", err, want)
	}
	k.lose = func(Write) bool { return false }
	f.ResetCounts()
	res, err := rec.Apply(ctx, d)
	if err != nil || len(res.Foreign) > 0 {
		t.Fatalf("after the lost acks: %v, foreign %v", err, res.Foreign)
	}
	if svcs, _ := f.Reads(); svcs != 1 {
		t.Errorf("services read %d times, want 1 (the outcome was unknown)", svcs)
	}
	if w := f.Writes(); w.Total() != 0 {
		t.Errorf("writes %v, want none: the adds were made", w)
	}
	if got, want := f.String(), render(t, d); got != want {
		t.Errorf("kernel\n%s\nwant\n%s", got, want)
	}
}
