package lb

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/kglb/kglb/config"
	"github.com/kglb/kglb/health"
	"github.com/kglb/kglb/ipvs"
	"github.com/kglb/kglb/vip"
	"github.com/prometheus/client_golang/prometheus"
)

// equateNetip lets cmp.Diff compare values that hold netip addresses.
var equateNetip = cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{}, netip.AddrPort{})

// tableProber keeps a verdict per target, as the health scheduler does: a
// target that leaves the plan forgets its verdict, a new one is unknown.
type tableProber struct {
	targets []health.Target
	states  map[health.Target]health.State
	updates int
}

func (p *tableProber) Update(ts []health.Target) error {
	p.updates++
	states := make(map[health.Target]health.State, len(ts))
	for _, t := range ts {
		if st, ok := p.states[t]; ok {
			states[t] = st
		}
	}
	p.targets, p.states = ts, states
	return nil
}

func (p *tableProber) Changes() <-chan []health.Change { return nil }

func (p *tableProber) Lookup(t health.Target) (health.Status, bool) {
	st, ok := p.states[t]
	return health.Status{Target: t, State: st}, ok
}

func (p *tableProber) health(t health.Target) health.State { return p.states[t] }

// editor makes random configurations, each from the last by one edit. Like
// config.Loader it shares the slices of the services an edit leaves alone,
// and like config.Load it sometimes copies everything.
type editor struct {
	r     *rand.Rand
	names int // services made so far, for fresh names and ports
}

func (g *editor) real() config.Real {
	return config.Real{Addr: netip.AddrFrom4([4]byte{10, 0, 0, byte(1 + g.r.IntN(12))}), Port: 80, Weight: 1 + g.r.IntN(200), Enabled: g.r.IntN(8) != 0}
}

func (g *editor) check() config.Check {
	c := config.Check{Type: config.CheckTCP, Interval: time.Duration(2+g.r.IntN(2)) * time.Second, Timeout: time.Second, Rise: 2, Fall: 3}
	switch g.r.IntN(6) {
	case 0:
		c.Tunnel = true
	case 5:
		c.Timeout = c.Interval // invalid: its service's plan reports it, the rest stands
	case 1:
		c.Type = config.CheckHTTP
		c.HTTP = config.HTTPCheck{Method: "GET", Path: "/", Status: []config.StatusRange{{Min: 200, Max: 299}}, Headers: map[string]string{"X": "1"}}
	}
	return c
}

func (g *editor) service() config.Service {
	g.names++
	// Names at random, so that a new service lands anywhere in the list.
	s := svc(fmt.Sprintf("s%04d-%d", g.r.IntN(10000), g.names), fmt.Sprintf("192.0.2.%d", 1+g.r.IntN(6)), 0)
	s.Port = uint16(1000 + g.names) // a key of its own
	s.Reals = nil
	for range 1 + g.r.IntN(4) {
		s.Reals = g.addReal(s.Reals)
	}
	s.Checks = nil
	for range g.r.IntN(3) {
		s.Checks = append(s.Checks, g.check())
	}
	if g.r.IntN(3) == 0 {
		s.Drain = 0
	}
	if g.r.IntN(4) == 0 {
		s.WhenAllDown = config.FailOpen
	}
	if g.r.IntN(6) == 0 { // an fwmark service
		s.VIP, s.Port, s.Protocol, s.FWMark = netip.Addr{}, 0, "", uint32(g.names)
		for i := range s.Reals {
			s.Reals[i].Port = 0
		}
		s.Checks = slices.DeleteFunc(s.Checks, func(c config.Check) bool { return c.Tunnel })
	}
	return *s
}

// addReal adds a real not yet in reals, keeping them sorted.
func (g *editor) addReal(reals []config.Real) []config.Real {
	r := g.real()
	if len(reals) > 0 {
		r.Port = reals[0].Port
	}
	for _, x := range reals {
		if x.Addr == r.Addr {
			return reals
		}
	}
	reals = append(slices.Clone(reals), r)
	slices.SortFunc(reals, func(a, b config.Real) int { return a.Addr.Compare(b.Addr) })
	return reals
}

func (g *editor) initial() *config.Config {
	cfg := daemonCfg()
	cfg.Daemon.StopHold = 0        // a withdrawn VIP's data plane goes at once, as a fresh engine has it
	cfg.Daemon.TunnelMarkCount = 3 // run out: reals wait for a mark, and get one when another leaves
	for range 8 {
		cfg.Services = g.insert(cfg.Services, g.service())
	}
	return cfg
}

// insert adds s to services, sorted by name.
func (g *editor) insert(services []*config.Service, s config.Service) []*config.Service {
	i, _ := slices.BinarySearchFunc(services, s.Name, func(x *config.Service, n string) int { return strings.Compare(x.Name, n) })
	return slices.Insert(services, i, &s)
}

// edit returns a new configuration: prev with one change, named by what.
func (g *editor) edit(prev *config.Config) (cfg *config.Config, what string) {
	c := *prev
	c.Services = slices.Clone(prev.Services)
	cfg = &c
	if len(c.Services) == 0 {
		c.Services = g.insert(c.Services, g.service())
		return cfg, "add the first service"
	}
	i := g.r.IntN(len(c.Services))
	s := *c.Services[i] // a copy, changed below only through fresh slices
	switch k := g.r.IntN(18); k {
	case 0, 1, 2:
		if len(s.Reals) > 0 {
			s.Reals = slices.Clone(s.Reals)
			s.Reals[g.r.IntN(len(s.Reals))].Weight = 1 + g.r.IntN(200)
		}
		what = "weight"
	case 3:
		if len(s.Reals) > 0 {
			s.Reals = slices.Clone(s.Reals)
			j := g.r.IntN(len(s.Reals))
			s.Reals[j].Enabled = !s.Reals[j].Enabled
		}
		what = "toggle a real"
	case 4:
		s.Reals = g.addReal(s.Reals)
		what = "add a real"
	case 5:
		if len(s.Reals) > 0 {
			s.Reals = slices.Delete(slices.Clone(s.Reals), 0, 1)
		}
		what = "remove a real"
	case 6:
		s.Enabled = !s.Enabled
		what = "toggle a service"
	case 7:
		c.Services = g.insert(c.Services, g.service())
		return cfg, "add a service"
	case 8:
		c.Services = slices.Delete(c.Services, i, i+1)
		return cfg, "remove a service"
	case 9:
		if s.VIP.IsValid() {
			s.VIP = netip.AddrFrom4([4]byte{192, 0, 2, byte(1 + g.r.IntN(6))})
		}
		what = "move to another VIP"
	case 10:
		s.Checks = slices.Clone(s.Checks)
		if len(s.Checks) > 0 && g.r.IntN(2) == 0 {
			s.Checks = s.Checks[:len(s.Checks)-1]
		} else if s.VIP.IsValid() {
			s.Checks = append(s.Checks, g.check())
		}
		what = "change the checks"
	case 11:
		s.Scheduler = []config.Scheduler{config.SchedWRR, config.SchedMH, config.SchedRR}[g.r.IntN(3)]
		s.Persistence.Enabled = !s.Persistence.Enabled
		s.Persistence.Timeout = time.Minute
		what = "scheduler and persistence"
	case 12:
		s.Announce.MinHealthy = config.Threshold{Value: float64(g.r.IntN(3))}
		s.Announce.RestoreHealthy = config.Threshold{Value: s.Announce.MinHealthy.Value + float64(g.r.IntN(2))}
		s.WhenAllDown = []config.AllDownPolicy{config.Withdraw, config.FailOpen}[g.r.IntN(2)]
		s.Announce.Degraded = config.Degraded{Enabled: g.r.IntN(2) == 0, Below: config.Threshold{Value: 100, Percent: true}, MED: 9, HasMED: true}
		what = "announce policy"
	case 13:
		s.Source = fmt.Sprintf("moved.hcl:%d", g.r.IntN(100))
		what = "source only"
	case 14:
		if s.FWMark == 0 {
			g.names++
			s.Port = uint16(1000 + g.names)
		}
		what = "port (a new key)"
	case 15:
		// The same services, all copied: nothing shared with prev.
		for j := range c.Services {
			cp := deepCopy(*c.Services[j])
			c.Services[j] = &cp
		}
		return cfg, "copy everything"
	case 16:
		return cfg, "nothing"
	case 17:
		cfg, a := g.edit(prev)
		cfg, b := g.edit(cfg)
		return cfg, a + " + " + b
	}
	c.Services[i] = &s
	return cfg, what
}

// oracle is what a full pass computes from scratch for the engine's inputs.
func oracle(t *testing.T, e *Engine, p *tableProber, qualified map[string]bool) (Desired, *Plan) {
	t.Helper()
	marks, _ := e.marks.Sync(TunnelReals(e.cfg)) // the same reals: changes nothing
	plan, _ := NewPlan(e.cfg, marks)
	return Compute(Input{Config: e.cfg, Plan: plan, Health: p.health, Adopted: e.adopted, Qualified: qualified}), plan
}

// checkPlan compares the engine's plan, carried over from earlier ones,
// with one made from scratch.
func checkPlan(t *testing.T, step string, got, want *Plan) {
	t.Helper()
	if d := cmp.Diff(want.All(), got.All(), equateNetip); d != "" {
		t.Fatalf("%s: plan's targets differ from a fresh one's (-fresh +carried):\n%s", step, d)
	}
	if d := cmp.Diff(want.tunnels, got.tunnels, equateNetip); d != "" {
		t.Fatalf("%s: plan's tunnels differ from a fresh one's (-fresh +carried):\n%s", step, d)
	}
	if fmt.Sprint(got.err) != fmt.Sprint(want.err) {
		t.Fatalf("%s: plan's error %v, a fresh one's %v", step, got.err, want.err)
	}
	all := want.All()
	for i, tg := range all {
		if slices.Contains(all[:i], tg) {
			t.Fatalf("%s: target %s listed twice", step, tg)
		}
	}
	cfg := want.cfg
	for _, tg := range all {
		var brute []int
		for i, s := range cfg.Services {
			if slices.Contains(want.Targets(s.Name, tg.Real), tg) {
				brute = append(brute, i)
			}
		}
		if idx := got.servicesOf(tg, nil); !slices.Equal(slices.Sorted(slices.Values(idx)), brute) {
			t.Fatalf("%s: services of %s = %v, want %v", step, tg, idx, brute)
		}
	}
}

// dropConns ends every connection in both kernels. While the engine lags
// behind verdicts, it may delete and add a real again on the way, which the
// reference, applying only the end state, does not: the real's connections
// would differ for no fault of either.
func dropConns(t *testing.T, kernels ...*ipvs.Fake) {
	t.Helper()
	for _, k := range kernels {
		svcs, err := k.Services()
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range svcs {
			reals, err := k.Reals(s.Key)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range reals {
				if err := k.SetConns(s.Key, r.Key(), 0, 0); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
}

// vipMetrics gathers the per-VIP metric families as text.
func vipMetrics(t *testing.T, reg *prometheus.Registry) string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), "kglb_vip_") {
			for _, m := range mf.GetMetric() {
				fmt.Fprintf(&b, "%s %v %v\n", mf.GetName(), m.GetLabel(), m.GetGauge().GetValue())
			}
		}
	}
	return b.String()
}

// TestIncrementalMatchesFull drives an engine through random edits, health
// changes, resyncs and drain ticks. After each step its decisions must be
// what Compute makes from scratch, its plan what NewPlan makes, and its
// kernel, VIPs and routes what a full Apply of Compute's result gives, with
// the same number of kernel writes. Health changes are sometimes held back
// over a reload, as they can be in the channel: the engine may lag until
// they arrive, and must be exact once they have. Some are lost on the way:
// then the next resync must make it exact. Connections come and go, so
// removed reals drain.
func TestIncrementalMatchesFull(t *testing.T) {
	for seed := range uint64(8) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { testIncremental(t, seed, 300) })
	}
}

func testIncremental(t *testing.T, seed uint64, steps int) {
	ctx := context.Background()
	g := &editor{r: rand.New(rand.NewPCG(seed, 1))}
	cfg := g.initial()

	// One clock for both reconcilers' drain deadlines, moved by drain ticks.
	now := time.Unix(1e9, 0)
	clock := func() time.Time { return now }
	kernel, links, ann, prober := ipvs.NewFake(), vip.NewFake("kglb0"), &fakeAnnouncer{}, &tableProber{}
	ir, err := ipvs.NewReconciler(kernel, ipvs.Options{StateDir: t.TempDir(), Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	vr, err := vip.New(vip.Options{Kernel: links})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	e, err := NewEngine(Options{IPVS: ir, VIPs: vr, Announcer: ann, Prober: prober, Metrics: NewMetrics(reg)}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.adopt(ctx); err != nil {
		t.Fatal(err)
	}

	// The reference data plane: a full Apply of Compute's result each time.
	refKernel, refLinks := ipvs.NewFake(), vip.NewFake("kglb0")
	refIPVS, err := ipvs.NewReconciler(refKernel, ipvs.Options{StateDir: t.TempDir(), Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	refVIPs, err := vip.New(vip.Options{Kernel: refLinks})
	if err != nil {
		t.Fatal(err)
	}

	var pending []health.Change
	lost := false   // a verdict change never reached the engine
	behind := false // the reference was not applied at the last step
	window := 1     // steps since the write counts were reset
	check := func(step string, d Desired, whole bool) {
		t.Helper()
		if lost {
			return
		}
		if whole {
			if diff := cmp.Diff(d, e.desired, equateNetip); diff != "" {
				t.Fatalf("%s: desired differs from Compute (-Compute +engine):\n%s", step, diff)
			}
		}
		if diff := cmp.Diff(d.IPVS, e.desired.IPVS, equateNetip); diff != "" {
			t.Fatalf("%s: IPVS differs from Compute (-Compute +engine):\n%s", step, diff)
		}
	}
	apply := func(step string, d Desired) {
		t.Helper()
		if lost {
			return
		}
		if _, err := refIPVS.Apply(ctx, d.IPVS); err != nil {
			t.Fatalf("%s: reference apply: %v", step, err)
		}
		if _, err := refVIPs.Apply(ctx, d.VIPs); err != nil {
			t.Fatalf("%s: reference vips: %v", step, err)
		}
		if got, want := kernel.String(), refKernel.String(); got != want {
			t.Fatalf("%s: kernel:\n%s\nwant (a full apply):\n%s", step, got, want)
		}
		// Over steps with verdicts held back the engine made writes on
		// the way that one apply at the end skips: compare counts only
		// for a single step.
		if got, want := kernel.Writes(), refKernel.Writes(); window == 1 && got != want {
			t.Fatalf("%s: kernel writes %s, a full apply writes %s", step, got, want)
		}
		if got, want := links.String(), refLinks.String(); got != want {
			t.Fatalf("%s: VIPs:\n%s\nwant:\n%s", step, got, want)
		}
		behind = false
	}

	// The first pass, from nothing.
	q := maps.Clone(e.qualified) // the pass changes the engine's in place
	e.setConfig(cfg)
	e.reconcile(ctx, kindPass)
	d, _ := oracle(t, e, prober, q)
	check("start", d, true)
	apply("start", d)

	counts, drains := map[string]int{}, 0
	for n := range steps {
		var what string
		window++
		if len(pending) == 0 && !lost && !behind {
			// Writes are counted from the last step both sides saw.
			kernel.ResetCounts()
			refKernel.ResetCounts()
			window = 1
		}
		switch k := g.r.IntN(11); {
		case k == 10:
			// Connections come and go, in both kernels: a real removed
			// with connections drains, and goes when they are gone.
			what = "connections"
			svcs := e.desired.IPVS.Services
			if len(svcs) == 0 || len(pending) > 0 || lost || behind { // only while the kernels agree
				break
			}
			s := svcs[g.r.IntN(len(svcs))]
			if len(s.Reals) == 0 {
				break
			}
			rk := s.Reals[g.r.IntN(len(s.Reals))].Key()
			active := []int{0, 5}[g.r.IntN(2)]
			kernel.SetConns(s.Key, rk, active, 0)
			refKernel.SetConns(s.Key, rk, active, 0)
		case k < 4: // a reload
			var next *config.Config
			next, what = g.edit(e.cfg)
			q := maps.Clone(e.qualified) // the pass changes the engine's in place
			e.setConfig(next)
			e.reconcile(ctx, kindPass)
			step := fmt.Sprintf("step %d (%s)", n, what)
			d, plan := oracle(t, e, prober, q)
			checkPlan(t, step, e.plan, plan)
			if !slices.Equal(prober.targets, plan.All()) {
				t.Fatalf("%s: prober probes %v, want %v", step, prober.targets, plan.All())
			}
			if len(pending) == 0 {
				check(step, d, true)
				apply(step, d)
			}
		case k < 8: // verdicts
			what = "health"
			for range 1 + g.r.IntN(3) {
				if len(prober.targets) == 0 {
					break
				}
				tg := prober.targets[g.r.IntN(len(prober.targets))]
				st := []health.State{health.Up, health.Down}[g.r.IntN(2)]
				if prober.states[tg] != st {
					prober.states[tg] = st
					pending = append(pending, health.Change{Key: tg, State: st})
				}
			}
			if g.r.IntN(4) == 0 {
				what = "health, held back"
				dropConns(t, kernel, refKernel)
				break
			}
			if g.r.IntN(15) == 0 {
				// Lost on the way: only a resync decides the services again.
				what = "health, lost"
				pending, lost = nil, true
				dropConns(t, kernel, refKernel)
				break
			}
			q := maps.Clone(e.qualified) // the pass changes the engine's in place
			e.verdicts(ctx, pending)
			pending = nil
			step := fmt.Sprintf("step %d (%s)", n, what)
			d, _ := oracle(t, e, prober, q)
			check(step, d, false) // only the affected services were decided again
			if len(e.draining) > 0 {
				// A drained real whose connections are gone goes when a
				// pass writes its service; this one wrote only those the
				// verdicts touch. The reference catches up next time.
				behind = true
				break
			}
			apply(step, d)
		case k < 9:
			what = "resync"
			if len(pending) > 0 {
				break
			}
			q := maps.Clone(e.qualified) // the pass changes the engine's in place
			e.reconcile(ctx, kindResync)
			lost = false
			step := fmt.Sprintf("step %d (%s)", n, what)
			d, _ := oracle(t, e, prober, q)
			check(step, d, true)
			apply(step, d)
		default:
			what = "drain tick"
			if len(pending) > 0 {
				break
			}
			if !lost { // the reference starts its drains late: keep its deadlines in step
				now = now.Add(10 * time.Second)
			}
			q := maps.Clone(e.qualified) // the pass changes the engine's in place
			e.reconcile(ctx, kindPass)
			step := fmt.Sprintf("step %d (%s)", n, what)
			d, _ := oracle(t, e, prober, q)
			check(step, d, true)
			apply(step, d)
			if lost {
				break
			}
			if !sameRoutes(ann.routes, d.Routes) {
				t.Fatalf("%s: announced %v, want %v", step, ann.routes, d.Routes)
			}
			// The engine's metrics, read from its status at scrape time,
			// export what those of a fresh Compute do.
			fresh := prometheus.NewRegistry()
			NewMetrics(fresh).watch(func(f func(*Desired)) { f(&d) })
			if got, want := vipMetrics(t, reg), vipMetrics(t, fresh); got != want {
				t.Fatalf("%s: VIP metrics:\n%s\nwant:\n%s", step, got, want)
			}
		}
		counts[what]++
		if len(e.draining) > 0 {
			drains++
		}
	}
	t.Logf("steps: %v; prober updates: %d; drains seen: %d", counts, prober.updates, drains)
}

// stubProber says every target is up; Update fails while fail is set.
type stubProber struct {
	updates int
	fail    error
}

func (p *stubProber) Update([]health.Target) error    { p.updates++; return p.fail }
func (p *stubProber) Changes() <-chan []health.Change { return nil }
func (p *stubProber) Lookup(t health.Target) (health.Status, bool) {
	return health.Status{Target: t, State: health.Up}, true
}

// flakyVIPs fails Apply and Resync, changing nothing, while fail is set,
// and counts the Resyncs.
type flakyVIPs struct {
	VIPs
	fail    error
	resyncs int
}

func (f *flakyVIPs) Apply(ctx context.Context, desired []netip.Addr) (vip.Result, error) {
	if f.fail != nil {
		return vip.Result{}, f.fail
	}
	return f.VIPs.Apply(ctx, desired)
}

func (f *flakyVIPs) Resync(ctx context.Context, desired []netip.Addr) (vip.Result, error) {
	f.resyncs++
	if f.fail != nil {
		return vip.Result{}, f.fail
	}
	return f.VIPs.Resync(ctx, desired)
}

// flakyAnnouncer takes the routes but reports failure while fail is set,
// as a speaker that got some of them out may.
type flakyAnnouncer struct {
	fakeAnnouncer
	fail error
}

func (a *flakyAnnouncer) Apply(ctx context.Context, routes []Route) error {
	a.fakeAnnouncer.Apply(ctx, routes)
	return a.fail
}

// TestIncrementalAfterFailures: a pass that did not reach everything makes
// the next one whole, even when the next one changes nothing of its own.
func TestIncrementalAfterFailures(t *testing.T) {
	ctx := context.Background()
	errBoom := fmt.Errorf("boom")
	a := svc("a", "192.0.2.1", 2)
	b := svc("b", "192.0.2.2", 2, func(s *config.Service) {
		s.Reals[0].Addr, s.Reals[1].Addr = netip.MustParseAddr("10.0.0.3"), netip.MustParseAddr("10.0.0.4")
	})
	cfgWith := func(wa, wb int, mod ...func(*config.Config)) *config.Config {
		sa, sb := deepCopy(*a), deepCopy(*b)
		sa.Reals[0].Weight, sb.Reals[0].Weight = wa, wb
		c := daemonCfg(&sa, &sb)
		c.Daemon.StopHold = 0 // a moved VIP goes at once
		for _, m := range mod {
			m(c)
		}
		return c
	}
	type world struct {
		e      *Engine
		kernel *ipvs.Fake
		links  *vip.Fake
		vips   *flakyVIPs
		ann    *flakyAnnouncer
		prober *stubProber
		pass   func(*config.Config) error
	}
	start := func(t *testing.T) *world {
		w := &world{kernel: ipvs.NewFake(), links: vip.NewFake("kglb0"), ann: &flakyAnnouncer{}, prober: &stubProber{}}
		ir, err := ipvs.NewReconciler(w.kernel, ipvs.Options{StateDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		vr, err := vip.New(vip.Options{Kernel: w.links})
		if err != nil {
			t.Fatal(err)
		}
		w.vips = &flakyVIPs{VIPs: vr}
		cfg := cfgWith(100, 100)
		w.e, err = NewEngine(Options{IPVS: ir, VIPs: w.vips, Announcer: w.ann, Prober: w.prober}, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.e.adopt(ctx); err != nil {
			t.Fatal(err)
		}
		w.pass = func(cfg *config.Config) error {
			w.e.setConfig(cfg)
			w.e.reconcile(ctx, kindPass)
			_, err := w.e.Status()
			return err
		}
		if err := w.pass(cfg); err != nil {
			t.Fatal(err)
		}
		return w
	}
	weight := func(k *ipvs.Fake, real string) string {
		for _, l := range strings.Split(k.String(), "\n") {
			if f := strings.Fields(l); len(f) > 3 && f[1] == real {
				return f[3]
			}
		}
		return "none"
	}

	t.Run("vips retried with a read", func(t *testing.T) {
		// The vip reconciler keeps its cache over a lasting failure; the
		// retry of the pass reads the link again (Resync), the passes
		// before it take the cache (Apply).
		w := start(t)
		clock := time.Now()
		w.e.now = func() time.Time { return clock }
		w.vips.fail = errBoom
		if err := w.pass(cfgWith(100, 100)); err == nil {
			t.Fatal("no error from a failed vip pass")
		}
		n := w.vips.resyncs
		if err := w.pass(cfgWith(100, 100)); err == nil || w.vips.resyncs != n {
			t.Errorf("a pass before the retry is due: %v, %d resyncs, want the failure and none", err, w.vips.resyncs-n)
		}
		clock = clock.Add(time.Hour) // past any retry
		w.vips.fail = nil
		if err := w.pass(cfgWith(100, 100)); err != nil || w.vips.resyncs != n+1 {
			t.Errorf("the retry: %v, %d resyncs, want it to complete with 1", err, w.vips.resyncs-n)
		}
	})

	t.Run("ipvs write failed", func(t *testing.T) {
		w := start(t)
		w.kernel.Inject = func(op ipvs.Op, k ipvs.Key, _ ipvs.RealKey) error {
			if op == ipvs.OpUpdateReal && k.Addr == a.VIP {
				return errBoom
			}
			return nil
		}
		if err := w.pass(cfgWith(50, 100)); err == nil {
			t.Fatal("no error from a failed write")
		}
		w.kernel.Inject = nil
		// Only b changes now; a's weight must be written again all the same.
		if err := w.pass(cfgWith(50, 60)); err != nil {
			t.Fatal(err)
		}
		if got := weight(w.kernel, "10.0.0.1:80") + " " + weight(w.kernel, "10.0.0.3:80"); got != "50 60" {
			t.Errorf("weights %s, want 50 60:\n%s", got, w.kernel)
		}
	})

	t.Run("ipvs cache found stale", func(t *testing.T) {
		w := start(t)
		// Someone deletes a real of each service.
		for _, r := range []struct{ vip, real string }{{"192.0.2.1", "10.0.0.1"}, {"192.0.2.2", "10.0.0.3"}} {
			k := ipvs.AddrKey(ipvs.TCP, netip.MustParseAddr(r.vip), 80)
			if err := w.kernel.DeleteReal(k, ipvs.RealKey{Addr: netip.MustParseAddr(r.real), Port: 80}); err != nil {
				t.Fatal(err)
			}
		}
		// Writing a's finds its cache wrong: the kernel is read again and
		// b is repaired too, not left for the next resync.
		if err := w.pass(cfgWith(50, 100)); err != nil {
			t.Fatal(err)
		}
		if got := weight(w.kernel, "10.0.0.1:80") + " " + weight(w.kernel, "10.0.0.3:80"); got != "50 100" {
			t.Errorf("weights %s, want 50 100:\n%s", got, w.kernel)
		}
	})

	t.Run("vips failed", func(t *testing.T) {
		w := start(t)
		w.vips.fail = errBoom
		moved := func(c *config.Config) { c.Services[1].VIP = netip.MustParseAddr("192.0.2.3") }
		if err := w.pass(cfgWith(100, 100, moved)); err == nil {
			t.Fatal("no error from a failed VIP apply")
		}
		w.vips.fail = nil
		if err := w.pass(cfgWith(50, 100, moved)); err != nil {
			t.Fatal(err)
		}
		if got := w.links.String(); !strings.Contains(got, "192.0.2.3") || strings.Contains(got, "192.0.2.2") {
			t.Errorf("VIPs after a failed apply and an edit:\n%s", got)
		}
	})

	t.Run("announce failed", func(t *testing.T) {
		w := start(t)
		want := w.ann.prefixes()
		if want != "192.0.2.1/32,192.0.2.2/32" {
			t.Fatalf("announced %q", want)
		}
		w.ann.fail = errBoom
		if err := w.pass(cfgWith(100, 100, func(c *config.Config) { c.Services[1].Announce.Enabled = false })); err == nil {
			t.Fatal("no error from a failed announce")
		}
		w.ann.fail = nil
		// Back to the routes last announced in full: handed over again.
		if err := w.pass(cfgWith(100, 100)); err != nil {
			t.Fatal(err)
		}
		if got := w.ann.prefixes(); got != want {
			t.Errorf("announced %q, want %q", got, want)
		}
	})

	t.Run("prober update failed", func(t *testing.T) {
		w := start(t)
		w.prober.fail = errBoom
		w.pass(cfgWith(100, 100, func(c *config.Config) { c.Services[0].Checks[0].Interval = 5 * time.Second }))
		w.prober.fail = nil
		n := w.prober.updates
		// The same probes: handed over again only because the last failed.
		w.pass(cfgWith(50, 100, func(c *config.Config) { c.Services[0].Checks[0].Interval = 5 * time.Second }))
		if w.prober.updates != n+1 {
			t.Errorf("prober updated %d times after a failed update, want once", w.prober.updates-n)
		}
		n = w.prober.updates
		w.pass(cfgWith(60, 100, func(c *config.Config) { c.Services[0].Checks[0].Interval = 5 * time.Second }))
		if w.prober.updates != n {
			t.Errorf("prober updated %d times for an edit of no probe, want 0", w.prober.updates-n)
		}
	})
}

// TestIncrementalDrain: a real removed with connections drains at weight 0
// and goes when its connections are gone or its drain time is over, at the
// next pass, whatever that pass changes otherwise.
func TestIncrementalDrain(t *testing.T) {
	ctx := context.Background()
	a := svc("a", "192.0.2.1", 2)
	b := svc("b", "192.0.2.2", 1, func(s *config.Service) { s.Reals[0].Addr = netip.MustParseAddr("10.0.0.3") })
	keyA := ipvs.AddrKey(ipvs.TCP, a.VIP, 80)
	gone := ipvs.RealKey{Addr: netip.MustParseAddr("10.0.0.2"), Port: 80}
	cfgOfWeights := func(reals, wb int) *config.Config {
		sa, sb := deepCopy(*a), deepCopy(*b)
		sa.Reals = sa.Reals[:reals]
		sb.Reals[0].Weight = wb
		return daemonCfg(&sa, &sb)
	}
	for _, end := range []string{"connections gone", "drain poll", "drain time over"} {
		t.Run(end, func(t *testing.T) {
			now := time.Unix(1e9, 0)
			kernel := ipvs.NewFake()
			ir, err := ipvs.NewReconciler(kernel, ipvs.Options{StateDir: t.TempDir(), Now: func() time.Time { return now }})
			if err != nil {
				t.Fatal(err)
			}
			vr, err := vip.New(vip.Options{Kernel: vip.NewFake("kglb0")})
			if err != nil {
				t.Fatal(err)
			}
			e, err := NewEngine(Options{IPVS: ir, VIPs: vr, Prober: &stubProber{}, Now: func() time.Time { return now }}, cfgOfWeights(2, 100))
			if err != nil {
				t.Fatal(err)
			}
			if err := e.adopt(ctx); err != nil {
				t.Fatal(err)
			}
			pass := func(cfg *config.Config) {
				t.Helper()
				e.setConfig(cfg)
				e.reconcile(ctx, kindPass)
				if _, err := e.Status(); err != nil {
					t.Fatal(err)
				}
			}
			pass(cfgOfWeights(2, 100))
			if err := kernel.SetConns(keyA, gone, 5, 0); err != nil {
				t.Fatal(err)
			}
			pass(cfgOfWeights(1, 100))
			if !strings.Contains(kernel.String(), "10.0.0.2:80") || e.nextDrain.IsZero() {
				t.Fatalf("removed real with connections not draining:\n%s", kernel)
			}
			if w := e.nextWake(); w.IsZero() || w.After(now.Add(drainPoll)) {
				t.Errorf("while a real drains the engine wakes at %v, want by %v", w, now.Add(drainPoll))
			}
			switch end {
			case "connections gone":
				if err := kernel.SetConns(keyA, gone, 0, 0); err != nil {
					t.Fatal(err)
				}
				pass(cfgOfWeights(1, 60)) // an edit of b only
			case "drain poll":
				if err := kernel.SetConns(keyA, gone, 0, 0); err != nil {
					t.Fatal(err)
				}
				now = now.Add(drainPoll)
				if !now.Before(e.nextDrain) {
					t.Fatalf("the drain time (until %v) is too short to test the poll", e.nextDrain)
				}
				e.reconcile(ctx, kindPass) // the drain timer, at the poll
			default:
				now = e.nextDrain
				e.reconcile(ctx, kindPass) // the drain timer
			}
			if strings.Contains(kernel.String(), "10.0.0.2:80") {
				t.Errorf("%s, and the drained real is still there:\n%s", end, kernel)
			}
			if w := e.nextWake(); !w.IsZero() {
				t.Errorf("drain over, yet the engine still wakes at %v", w)
			}
		})
	}
}

// TestIncrementalMarkHandedOver: with the fwmark range used up, a real
// waits for a mark; when another real leaves and frees one, the waiting
// real's service is decided again though its configuration did not change.
func TestIncrementalMarkHandedOver(t *testing.T) {
	ctx := context.Background()
	tunnelled := func(s *config.Service) { s.Checks[0].Tunnel = true }
	a := svc("a", "192.0.2.1", 1, tunnelled)
	b := svc("b", "192.0.2.2", 1, tunnelled, func(s *config.Service) { s.Reals[0].Addr = netip.MustParseAddr("10.0.0.2") })
	cfgOf := func(services ...*config.Service) *config.Config {
		c := daemonCfg(services...)
		c.Daemon.TunnelMarkCount = 1
		return c
	}
	kernel, prober := ipvs.NewFake(), &tableProber{}
	ir, vr := fakeReconcilers(t, kernel)
	cfg := cfgOf(a, b)
	e, err := NewEngine(Options{IPVS: ir, VIPs: vr, Prober: prober}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.adopt(ctx); err != nil {
		t.Fatal(err)
	}
	e.setConfig(cfg)
	e.reconcile(ctx, kindPass)
	e.reconcile(ctx, kindPass) // once more: the qualifications settle
	// b's real has no mark: no target, so it is trusted.
	if w := e.desired.IPVS.Services[1].Reals[0].Weight; w != 100 {
		t.Fatalf("b's real without a mark: weight %d, want 100 (trusted)", w)
	}
	e.setConfig(cfgOf(b)) // a leaves; b, unchanged, gets its mark
	e.reconcile(ctx, kindPass)
	if len(prober.targets) != 1 || prober.targets[0].Spec.Mark == 0 {
		t.Fatalf("prober probes %v, want b's real with a mark", prober.targets)
	}
	// Now it has a target not yet judged: no traffic.
	if w := e.desired.IPVS.Services[0].Reals[0].Weight; w != 0 {
		t.Errorf("b's real with its new mark, unchecked: weight %d, want 0", w)
	}
}
