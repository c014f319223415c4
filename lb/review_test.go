package lb

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/hashicorp/go-hclog"
	"github.com/kglb/kglb/config"
	"github.com/kglb/kglb/health"
	"github.com/kglb/kglb/ipvs"
	"github.com/kglb/kglb/vip"
)

// copyKernel is a new fake holding what f holds.
func copyKernel(t *testing.T, f *ipvs.Fake) *ipvs.Fake {
	t.Helper()
	c := ipvs.NewFake()
	svcs, err := f.Services()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range svcs {
		s.Flags &^= ipvs.FlagHashed
		if err := c.AddService(s); err != nil {
			t.Fatal(err)
		}
		reals, _ := f.Reals(s.Key)
		for i := len(reals) - 1; i >= 0; i-- {
			if err := c.AddReal(s.Key, reals[i]); err != nil {
				t.Fatal(err)
			}
		}
	}
	return c
}

// play issues ws on k.
func play(t *testing.T, k ipvs.Kernel, ws []ipvs.Write) {
	t.Helper()
	for i, err := range k.Write(ws) {
		if err != nil {
			t.Fatalf("play %v: %v", ws[i].Op, err)
		}
	}
}

func vipsHeld(t *testing.T, f *vip.Fake) []netip.Addr {
	t.Helper()
	es, err := f.List(vip.ModeRoute)
	if err != nil {
		t.Fatal(err)
	}
	var out []netip.Addr
	for _, e := range es {
		if e.Proto == vip.ProtoKGLB {
			out = append(out, e.Prefix.Addr())
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// randomConfig is one to three services on three VIPs, with random reals,
// weights, schedulers and drain times.
func randomConfig(rng *rand.Rand) *config.Config {
	var svcs []*config.Service
	for i, v := range []string{"192.0.2.1", "192.0.2.2", "192.0.2.3"} {
		if rng.IntN(3) == 0 {
			continue
		}
		svcs = append(svcs, svc(fmt.Sprintf("svc%d", i), v, 1+rng.IntN(5), func(s *config.Service) {
			s.Scheduler = []config.Scheduler{config.SchedWRR, config.SchedRR, config.SchedMH}[rng.IntN(3)]
			s.Drain = time.Duration(rng.IntN(2)) * 30 * time.Second
			for j := range s.Reals {
				s.Reals[j].Weight = 50 * (1 + rng.IntN(3))
			}
		}))
	}
	c := daemonCfg(svcs...)
	c.Daemon.StopHold = time.Hour // no hold ends between the plan and the reload
	return c
}

// TestPlanEqualsReload proves the plan cannot drift: for random edits, with
// reals up, down and unknown, the IPVS writes the plan lists are exactly
// what the following reload writes (played on a copy of the kernel they
// give the same table, and the same number of writes), its VIP writes and
// routes are what the reload changes, and a plan right after the reload
// changes nothing.
func TestPlanEqualsReload(t *testing.T) {
	w := newWorld(t)
	w.mixedHealth()
	rng := rand.New(rand.NewPCG(1, 2))
	cfg := randomConfig(rng)
	r := w.start(t, cfg)
	ctx := context.Background()
	if _, err := r.e.PlanConfig(ctx, cfg); err != nil { // waits for the first pass
		t.Fatal(err)
	}
	for step := range 80 {
		next := randomConfig(rng)
		before := copyKernel(t, w.kernel)
		vipsBefore := vipsHeld(t, w.links)
		w.ann.mu.Lock()
		routesBefore := slices.Clone(w.ann.routes)
		w.ann.mu.Unlock()

		rv, err := r.e.PlanConfig(ctx, next)
		if err != nil {
			t.Fatal(err)
		}
		if len(rv.Errors) > 0 {
			t.Fatalf("step %d: %v", step, rv.Errors)
		}
		play(t, before, rv.IPVSWrites)
		w.kernel.ResetCounts()
		r.configs <- next
		after, err := r.e.PlanConfig(ctx, next) // served once the reload is done
		if err != nil {
			t.Fatal(err)
		}
		if got, want := w.kernel.String(), before.String(); got != want {
			t.Fatalf("step %d: reload made\n%s\nplan said\n%s\n%+v", step, got, want, rv)
		}
		if got := w.kernel.Writes().Total(); got != len(rv.IPVSWrites) {
			t.Fatalf("step %d: reload wrote %d (%v), plan %d", step, got, w.kernel.Writes(), len(rv.IPVSWrites))
		}
		held := slices.Clone(vipsBefore)
		for _, vw := range rv.VIPWrites {
			if vw.Op == "add" {
				held = append(held, vw.VIP)
			} else {
				held = slices.DeleteFunc(held, func(a netip.Addr) bool { return a == vw.VIP })
			}
		}
		slices.SortFunc(held, netip.Addr.Compare)
		if got := vipsHeld(t, w.links); !slices.Equal(got, held) {
			t.Fatalf("step %d: vips %v, plan said %v", step, got, held)
		}
		w.ann.mu.Lock()
		routesAfter := slices.Clone(w.ann.routes)
		w.ann.mu.Unlock()
		if got := routeChanges(routesBefore, routesAfter); fmt.Sprint(got) != fmt.Sprint(rv.Routes) {
			t.Fatalf("step %d: routes changed %v, plan said %v", step, got, rv.Routes)
		}
		if len(after.IPVSWrites)+len(after.VIPWrites)+len(after.Routes) != 0 {
			t.Fatalf("step %d: plan after the reload: %+v", step, after)
		}
	}
}

// TestReloadLogsItsPlan proves that a reload logs the plan `kglb plan`
// gave just before it: for random edits, with reals up, down and unknown,
// the Review the reload built from what its pass wrote (and logged,
// compact) equals, field by field, the one PlanConfig returned.
func TestReloadLogsItsPlan(t *testing.T) {
	w := newWorld(t)
	w.mixedHealth()
	// A speaker's plan: one neighbor, sent what the announcer is handed.
	// And a delete guard, whose verdict both carry.
	w.wrap = func(o *Options) {
		o.Announcer = planningAnnouncer{w.ann}
		o.Guard = func(old, new *config.Config) error {
			if len(new.Services) < len(old.Services) {
				return fmt.Errorf("would delete %d services", len(old.Services)-len(new.Services))
			}
			return nil
		}
	}
	rng := rand.New(rand.NewPCG(3, 4))
	cfg := randomConfig(rng)
	r := w.start(t, cfg)
	ctx := context.Background()
	if _, err := r.e.PlanConfig(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	changed := 0
	for step := range 80 {
		next := randomConfig(rng)
		if rng.IntN(8) == 0 {
			next = cfg // an edit that changes nothing
		}
		rv, err := r.e.PlanConfig(ctx, next)
		if err != nil {
			t.Fatal(err)
		}
		r.configs <- next
		if _, err := r.e.PlanConfig(ctx, next); err != nil { // served once the reload is done
			t.Fatal(err)
		}
		// The reload and the plan are each one Apply of the whole
		// value: the same writes, compared service by service.
		got := r.e.lastReload
		byService(&got)
		byService(&rv)
		if d := cmp.Diff(rv, got, cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{}, netip.AddrPort{})); d != "" {
			t.Fatalf("step %d: the reload logged other than the plan before it (-plan +reload):\n%s", step, d)
		}
		if got.Compact(MaxLoggedPlan) != rv.Compact(MaxLoggedPlan) {
			t.Fatalf("step %d: compact forms differ", step)
		}
		if !rv.Empty() {
			changed++
		}
		if rv.Guard == "" {
			t.Fatalf("step %d: no guard verdict", step)
		}
		if fmt.Sprint(rv.Neighbors[0].Routes) != fmt.Sprint(rv.Routes) {
			t.Fatalf("step %d: the neighbor's routes %v, the announcer's %v", step, rv.Neighbors[0].Routes, rv.Routes)
		}
		cfg = next
	}
	if changed < 40 {
		t.Fatalf("only %d of 80 edits changed anything", changed)
	}
}

// planningAnnouncer is an announcer that plans for one neighbor, which is
// sent what the announcer is handed.
type planningAnnouncer struct{ *fakeAnnouncer }

func (a planningAnnouncer) PlanBGP(_ *config.Config, routes []Route) (BGPPlan, error) {
	a.mu.Lock()
	cur := a.routes
	a.mu.Unlock()
	return BGPPlan{Neighbors: []NeighborChange{{Neighbor: "tor", Address: "192.0.2.254", Type: "ebgp", Session: ActKeep, Routes: routeChanges(cur, routes)}}}, nil
}

func (planningAnnouncer) Configure(context.Context, *config.Config, bool) error { return nil }

// byService orders r's writes by service, keeping each service's in
// order (VIP writes, with no service, stay last).
func byService(r *Review) {
	slices.SortStableFunc(r.IPVSWrites, func(a, b ipvs.Write) int { return strings.Compare(a.Service.String(), b.Service.String()) })
	slices.SortStableFunc(r.Writes, func(a, b KernelWrite) int {
		if (a.VIP == "") != (b.VIP == "") {
			return strings.Compare(b.VIP, a.VIP) // IPVS writes first
		}
		return strings.Compare(a.Service, b.Service)
	})
}

// TestReviewKinds checks each kind of change on one edit.
func TestReviewKinds(t *testing.T) {
	w := newWorld(t)
	for i := 1; i <= 3; i++ {
		w.prober.states[netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), 80)] = health.Up
	}
	cfg := daemonCfg(svc("web", "192.0.2.1", 3), svc("old", "192.0.2.2", 1))
	cfg.Daemon.StopHold = time.Hour
	logs := &syncBuffer{}
	w.wrap = func(o *Options) {
		o.Logger = hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Info})
	}
	r := w.start(t, cfg)
	ctx := context.Background()
	if _, err := r.e.PlanConfig(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	eventually(t, "announced", func() bool { return w.ann.prefixes() == "192.0.2.1/32,192.0.2.2/32" })

	next := daemonCfg(
		svc("web", "192.0.2.1", 2, func(s *config.Service) {
			s.Scheduler = config.SchedRR
			s.Reals[0].Weight = 70
			s.Reals = append(s.Reals, config.Real{Addr: netip.MustParseAddr("10.0.0.9"), Port: 80, Weight: 100, Enabled: true})
			s.Announce.MED, s.Announce.HasMED = 5, true
		}),
		svc("new", "192.0.2.3", 1),
	)
	next.Daemon.StopHold = time.Hour
	_ = w.kernel.SetConns(ipvs.AddrKey(ipvs.TCP, netip.MustParseAddr("192.0.2.1"), 80), ipvs.RealKey{Addr: netip.MustParseAddr("10.0.0.3"), Port: 80}, 4, 0)
	rv, err := r.e.PlanConfig(ctx, next)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	printServiceChanges(&b, rv.Services, "%s")
	for _, v := range rv.VIPs {
		fmt.Fprintf(&b, "vip %s %s hold=%s\n", v.Action, v.VIP, v.Hold)
	}
	for _, rt := range rv.Routes {
		fmt.Fprintf(&b, "route %s %s %v\n", rt.Action, rt.Prefix, rt.Fields)
	}
	got := b.String()
	for _, want := range []string{
		"~ web tcp/192.0.2.1:80 [{scheduler wrr rr}] [~ 10.0.0.1:80 [{weight 100 70}] drain= health=up] [~ 10.0.0.3:80 [{weight 100 0}] drain=30s health=] [+ 10.0.0.9:80 [{weight  0}] drain= health=unknown] kept=2 unknown=[10.0.0.9:80]",
		"+ new tcp/192.0.2.3:80 [] [+ 10.0.0.1:80 [{weight  100}] drain= health=up]",
		"vip + 192.0.2.3 hold=",
		"vip - 192.0.2.2 hold=1h0m0s",
		"route ~ 192.0.2.1/32 [{med  5}]",
		"route - 192.0.2.2/32 []",
		"route + 192.0.2.3/32 []",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("plan lacks %q:\n%s", want, got)
		}
	}
	if !strings.Contains(rv.Summary(), "services 1 to add, 1 to change, 0 to remove") {
		t.Errorf("summary %q", rv.Summary())
	}

	// The reload logs what it did, in one line.
	var counts ipvs.Writes
	for _, w := range rv.IPVSWrites {
		counts[w.Op]++
	}
	r.configs <- next
	if _, err := r.e.PlanConfig(ctx, next); err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		"reload applied: summary=\"" + rv.Summary() + "\" ipvs_writes=\"" + counts.String() + "\" plan=",
		"~ service web (tcp/192.0.2.1:80) [scheduler: wrr -> rr; ~ real 10.0.0.1:80: weight 100 -> 70, health up; ",
		"| vips [- 192.0.2.2 (route withdrawn now; address and services removed after the hold, 1h0m0s); + 192.0.2.3 (made local)] | bgp routes [",
	} {
		if !strings.Contains(logs.String(), line) {
			t.Errorf("log lacks %q:\n%s", line, logs.String())
		}
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestPlanStart: the offline plan (no daemon, no health) is what an engine
// started now with that config writes at its first pass.
func TestPlanStart(t *testing.T) {
	w := newWorld(t)
	for i := 1; i <= 3; i++ {
		w.prober.states[netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), 80)] = health.Up
	}
	cfg := daemonCfg(svc("web", "192.0.2.1", 3), svc("old", "192.0.2.2", 1))
	r := w.start(t, cfg)
	if _, err := r.e.PlanConfig(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	r.stop(t) // the data plane stays, as on a stop with on_stop keep

	next := daemonCfg(svc("web", "192.0.2.1", 4, func(s *config.Service) { s.Scheduler = config.SchedMH }))
	open := func(p Prober) *Engine {
		ir, err := ipvs.NewReconciler(w.kernel, ipvs.Options{StateDir: w.dir})
		if err != nil {
			t.Fatal(err)
		}
		vr, err := vip.New(vip.Options{Kernel: w.links})
		if err != nil {
			t.Fatal(err)
		}
		e, err := NewEngine(Options{IPVS: ir, VIPs: vr, Prober: p}, next)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	before := copyKernel(t, w.kernel)
	kernel := w.kernel.String()
	rv, err := open(newFakeProber()).PlanStart(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if w.kernel.String() != kernel {
		t.Fatal("the offline plan wrote to the kernel")
	}
	var unknown int
	for _, s := range rv.Services {
		unknown += len(s.HealthUnknown)
	}
	if unknown != 4 || len(rv.Writes) == 0 {
		t.Fatalf("offline plan: %d unknown, %+v", unknown, rv)
	}
	play(t, before, rv.IPVSWrites)

	// Start it for real, with no verdicts yet: the first pass writes that.
	e := open(newFakeProber())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx, make(chan *config.Config)) }()
	if _, err := e.PlanConfig(ctx, next); err != nil {
		t.Fatal(err)
	}
	cancel()
	<-done
	if got, want := w.kernel.String(), before.String(); got != want {
		t.Fatalf("first pass made\n%s\noffline plan said\n%s", got, want)
	}
}

// TestCompactBounded: a reload of 10,000 services logs one bounded line
// that says how much it left out; a small plan is logged whole.
func TestCompactBounded(t *testing.T) {
	var rv Review
	for i := range 10000 {
		rv.Services = append(rv.Services, ServiceChange{Name: fmt.Sprintf("svc%d", i), Endpoint: fmt.Sprintf("tcp/192.0.2.1:%d", i), Action: ActAdd,
			Reals: []RealChange{{Real: "10.0.0.1:80", Action: ActAdd, Fields: []Field{{Name: "weight", To: "100"}}}}})
		rv.Writes = append(rv.Writes, KernelWrite{Op: "add_service"}, KernelWrite{Op: "add_real"})
	}
	line := rv.Compact(MaxLoggedPlan)
	logged, rest, _ := strings.Cut(line, " ... ")
	var left int
	if _, err := fmt.Sscanf(rest, "%d more changes not logged (kglb plan shows them all)", &left); err != nil ||
		len(logged) > MaxLoggedPlan || !strings.HasPrefix(line, "+ service svc0 (tcp/192.0.2.1:0) [+ real 10.0.0.1:80: weight 100] | ") ||
		strings.Count(logged, "service svc")+strings.Count(logged, "real 10.")+left != 20000 {
		t.Errorf("%d bytes (%v): %s", len(line), err, line)
	}
	small := Review{VIPs: []VIPChange{{VIP: "192.0.2.1", Action: ActAdd}}, Writes: []KernelWrite{{Op: "add_vip"}},
		Neighbors: []NeighborChange{{Neighbor: "tor-a", Address: "192.0.2.254", Type: "ebgp", Session: ActKeep,
			Routes: []RouteChange{{Prefix: "192.0.2.1/32", Action: ActAdd, Fields: []Field{{Name: "next_hop", To: "self"}}}}}}}
	if got, want := small.Compact(MaxLoggedPlan), "vips [+ 192.0.2.1 (made local)] | neighbor tor-a (192.0.2.254, ebgp) [+ 192.0.2.1/32: next_hop self]"; got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

// mixedHealth sets the random configs' reals 10.0.0.1 to .3 up, .4 down;
// .5 stays unknown.
func (w *world) mixedHealth() {
	for i := 1; i <= 4; i++ {
		st := health.Up
		if i == 4 {
			st = health.Down
		}
		w.prober.states[netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), 80)] = st
	}
}

// TestReviewHealthAndOrder checks the changes TestReviewKinds does not
// make: reals of an mh service deleted and re-added to keep their order,
// a service no write touches whose reals start unknown (a new check),
// and disabled services and reals, which are not counted for health.
func TestReviewHealthAndOrder(t *testing.T) {
	w := newWorld(t)
	for i := 1; i <= 3; i++ {
		w.prober.states[netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), 80)] = health.Up
	}
	mh := func(s *config.Service) {
		s.Scheduler = config.SchedMH
		s.Reals = s.Reals[1:] // 10.0.0.2 and .3
	}
	offThird := func(s *config.Service) { s.Reals[2].Enabled = false }
	cfg := daemonCfg(svc("web", "192.0.2.1", 3, mh), svc("lone", "192.0.2.2", 3, offThird), svc("idle", "192.0.2.3", 1))
	cfg.Daemon.StopHold = time.Hour
	r := w.start(t, cfg)
	ctx := context.Background()
	if _, err := r.e.PlanConfig(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	eventually(t, "announced", func() bool { return w.ann.prefixes() == "192.0.2.1/32,192.0.2.2/32,192.0.2.3/32" })
	eventually(t, "weights up", func() bool { return tunnels100(w.kernel) == 5 })

	next := daemonCfg(
		svc("web", "192.0.2.1", 3, func(s *config.Service) { s.Scheduler = config.SchedMH }), // 10.0.0.1 sorts first
		svc("lone", "192.0.2.2", 3, offThird, func(s *config.Service) { s.Checks[0].Interval = 5 * time.Second }),
		svc("idle", "192.0.2.3", 1, func(s *config.Service) {
			s.Enabled = false
			s.Checks[0].Interval = 5 * time.Second
		}),
	)
	next.Daemon.StopHold = time.Hour
	rv, err := r.e.PlanConfig(ctx, next)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	printServiceChanges(&b, rv.Services, "%q")
	want := `"~" web tcp/192.0.2.1:80 [] [+ 10.0.0.1:80 [{weight  100}] drain= health=up] [~ 10.0.0.2:80 [{position  re-added for mh order}] drain= health=up] [~ 10.0.0.3:80 [{position  re-added for mh order}] drain= health=up] kept=3 unknown=[]
" " lone tcp/192.0.2.2:80 [] kept=0 unknown=[10.0.0.1:80 10.0.0.2:80]
`
	if d := cmp.Diff(want, b.String()); d != "" {
		t.Errorf("plan (-want +got):\n%s", d)
	}
}

// printServiceChanges prints a review's services one per line, their reals
// inline, the action in actionVerb ("%q" shows the blank of a service
// listed for its health alone).
func printServiceChanges(b *strings.Builder, services []ServiceChange, actionVerb string) {
	for _, s := range services {
		fmt.Fprintf(b, actionVerb+" %s %s %v", s.Action, s.Name, s.Endpoint, s.Fields)
		for _, rl := range s.Reals {
			fmt.Fprintf(b, " [%s %s %v drain=%s health=%s]", rl.Action, rl.Real, rl.Fields, rl.Drain, rl.Health)
		}
		fmt.Fprintf(b, " kept=%d unknown=%v\n", s.HealthKept, s.HealthUnknown)
	}
}
