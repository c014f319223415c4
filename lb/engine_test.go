package lb

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/kglb/kglb/config"
	"github.com/kglb/kglb/health"
	"github.com/kglb/kglb/ipvs"
	"github.com/kglb/kglb/vip"
)

type fakeProber struct {
	mu      sync.Mutex
	states  map[netip.AddrPort]health.State
	targets []health.Target
	ch      chan []health.Change
	// onUpdate, if set, runs at each Update before the targets change.
	onUpdate func()
}

func newFakeProber() *fakeProber {
	return &fakeProber{states: map[netip.AddrPort]health.State{}, ch: make(chan []health.Change, 64)}
}

func (f *fakeProber) Update(ts []health.Target) error {
	if f.onUpdate != nil {
		f.onUpdate()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	// Like the scheduler, a new target whose real has a verdict reports it.
	var news []health.Change
	for _, t := range ts {
		if st := f.states[t.Real]; st != health.Unknown && !slices.Contains(f.targets, t) {
			news = append(news, health.Change{Key: t, State: st})
		}
	}
	f.targets = ts
	if len(news) > 0 {
		f.ch <- news
	}
	return nil
}

func (f *fakeProber) Changes() <-chan []health.Change { return f.ch }

func (f *fakeProber) Lookup(t health.Target) (health.Status, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	// Like the scheduler, it knows only the targets it was given.
	return health.Status{Target: t, State: f.states[t.Real]}, slices.Contains(f.targets, t)
}

// set gives every target of real r the state st and reports the changes.
func (f *fakeProber) set(r string, st health.State) {
	ap := netip.MustParseAddrPort(r)
	f.mu.Lock()
	f.states[ap] = st
	var changed []health.Target
	for _, t := range f.targets {
		if t.Real == ap {
			changed = append(changed, t)
		}
	}
	f.mu.Unlock()
	for _, t := range changed {
		f.ch <- []health.Change{{Key: t, State: st}}
	}
}

type fakeAnnouncer struct {
	mu     sync.Mutex
	routes []Route
	log    []string
}

func (a *fakeAnnouncer) Apply(_ context.Context, routes []Route) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.routes = routes
	var ps []string
	for _, r := range routes {
		ps = append(ps, r.Prefix.String())
	}
	a.log = append(a.log, "apply "+strings.Join(ps, ","))
	return nil
}

func (a *fakeAnnouncer) WithdrawAll(context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.routes = nil
	a.log = append(a.log, "withdraw-all")
	return nil
}

func (a *fakeAnnouncer) prefixes() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var ps []string
	for _, r := range a.routes {
		ps = append(ps, r.Prefix.String())
	}
	return strings.Join(ps, ",")
}

type world struct {
	kernel *ipvs.Fake
	links  *vip.Fake
	prober *fakeProber
	ann    *fakeAnnouncer
	dir    string
	wrap   func(*Options) // if set, changes the engine's options before start
}

func newWorld(t *testing.T) *world {
	return &world{kernel: ipvs.NewFake(), links: vip.NewFake("kglb0"), prober: newFakeProber(), ann: &fakeAnnouncer{}, dir: t.TempDir()}
}

type running struct {
	e       *Engine
	configs chan *config.Config
	cancel  context.CancelFunc
	done    chan error
}

func (w *world) start(t *testing.T, cfg *config.Config) *running {
	t.Helper()
	ir, err := ipvs.NewReconciler(w.kernel, ipvs.Options{StateDir: w.dir})
	if err != nil {
		t.Fatal(err)
	}
	vr, err := vip.New(vip.Options{Kernel: w.links})
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{IPVS: ir, VIPs: vr, Announcer: w.ann, Prober: w.prober, Metrics: NewMetrics(nil)}
	if w.wrap != nil {
		w.wrap(&opts)
	}
	e, err := NewEngine(opts, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{e: e, configs: make(chan *config.Config), cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- e.Run(ctx, r.configs) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

func (r *running) stop(t *testing.T) {
	if r.cancel == nil {
		return
	}
	r.cancel()
	if err := <-r.done; err != nil {
		t.Errorf("Run: %v", err)
	}
	r.cancel = nil
}

// eventually polls cond; the deadline only bounds a hung test.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

var tunnel100 = regexp.MustCompile(`Tunnel +100 `)

// tunnels100 counts the reals at weight 100 in the fake kernel's listing.
func tunnels100(k *ipvs.Fake) int { return len(tunnel100.FindAllString(k.String(), -1)) }

func daemonCfg(services ...*config.Service) *config.Config {
	c := cfgOf(services...)
	c.Daemon = config.Daemon{ResyncInterval: time.Hour, StopHold: 50 * time.Millisecond, TunnelMarkBase: 1000, TunnelMarkCount: 100}
	return c
}

func TestEngineLifecycle(t *testing.T) {
	w := newWorld(t)
	cfg := daemonCfg(svc("web", "192.0.2.1", 2))
	r := w.start(t, cfg)

	// New reals get no traffic until checked; nothing is announced.
	eventually(t, "service created", func() bool { return strings.Contains(w.kernel.String(), "10.0.0.2:80") })
	if got := w.kernel.String(); !strings.Contains(got, "-> 10.0.0.1:80") || tunnels100(w.kernel) != 0 {
		t.Errorf("kernel before health:\n%s", got)
	}
	if p := w.ann.prefixes(); p != "" {
		t.Errorf("announced %q before the first health round", p)
	}

	w.prober.set("10.0.0.1:80", health.Up)
	w.prober.set("10.0.0.2:80", health.Up)
	eventually(t, "route announced", func() bool { return w.ann.prefixes() == "192.0.2.1/32" })
	eventually(t, "weights up", func() bool { return tunnels100(w.kernel) == 2 })

	// One real down: exactly one write, route stays (1 of 2 = 50%).
	w.kernel.ResetCounts()
	w.prober.set("10.0.0.2:80", health.Down)
	eventually(t, "weight 0", func() bool { return tunnels100(w.kernel) == 1 })
	if n := w.kernel.Writes().Total(); n != 1 {
		t.Errorf("%d writes for one health change (%s), want 1", n, w.kernel.Writes())
	}
	if p := w.ann.prefixes(); p != "192.0.2.1/32" {
		t.Errorf("routes %q", p)
	}

	// Both down: withdrawn.
	w.prober.set("10.0.0.1:80", health.Down)
	eventually(t, "withdrawn", func() bool { return w.ann.prefixes() == "" })
	// The status is published just after the announcer is called.
	eventually(t, "reason all_down", func() bool {
		st, _ := r.e.Status()
		return len(st.VIPStatus) == 1 && st.VIPStatus[0].Reason == ReasonAllDown
	})

	// A config edit adds a real live.
	w.prober.set("10.0.0.1:80", health.Up)
	cfg2 := daemonCfg(svc("web", "192.0.2.1", 3))
	r.configs <- cfg2
	eventually(t, "real added", func() bool { return strings.Contains(w.kernel.String(), "10.0.0.3:80") })
}

// TestEngineProbesAfterFirstPass: at a cold start the prober gets its
// targets only once the first pass has written every service, real and VIP:
// probes would take the CPU that pass needs, and every new real starts at
// weight 0 whatever they find.
func TestEngineProbesAfterFirstPass(t *testing.T) {
	w := newWorld(t)
	var mu sync.Mutex
	var atUpdate []string
	w.prober.onUpdate = func() {
		mu.Lock()
		defer mu.Unlock()
		atUpdate = append(atUpdate, w.kernel.String()+"vips: "+w.links.String())
	}
	passed := make(chan string, 2)
	w.wrap = func(o *Options) { o.FirstPass = func() { passed <- w.kernel.String() } }
	w.start(t, daemonCfg(svc("web", "192.0.2.1", 2), svc("db", "192.0.2.2", 3)))
	if k := <-passed; !strings.Contains(k, "-> 10.0.0.3:80") {
		t.Errorf("FirstPass called before the first pass wrote the kernel:\n%s", k)
	}
	eventually(t, "probes started", func() bool {
		w.prober.mu.Lock()
		defer w.prober.mu.Unlock()
		return len(w.prober.targets) > 0
	})
	mu.Lock()
	defer mu.Unlock()
	if len(atUpdate) != 1 {
		t.Fatalf("%d prober updates, want 1", len(atUpdate))
	}
	for _, want := range []string{"192.0.2.1:80", "192.0.2.2:80", "-> 10.0.0.2:80", "-> 10.0.0.3:80", "192.0.2.1/32", "192.0.2.2/32"} {
		if !strings.Contains(atUpdate[0], want) {
			t.Errorf("the prober got its targets before %s was written; kernel then:\n%s", want, atUpdate[0])
		}
	}
}

// TestEngineFullFirstRound: after a planned restart the announcer hears
// nothing, not even an empty set, until every VIP has had its first health
// round; the speaker connects at that first Apply, and its End-of-RIB ends
// the routers' stale period, so the set must be complete.
func TestEngineFullFirstRound(t *testing.T) {
	for _, full := range []bool{false, true} {
		t.Run(fmt.Sprintf("FullFirstRound=%v", full), func(t *testing.T) {
			w := newWorld(t)
			w.wrap = func(o *Options) { o.FullFirstRound = full }
			w.start(t, daemonCfg(svc("web", "192.0.2.1", 2)))
			eventually(t, "service created", func() bool { return strings.Contains(w.kernel.String(), "10.0.0.2:80") })
			w.prober.set("10.0.0.1:80", health.Up)
			eventually(t, "the verdict applied", func() bool { return tunnels100(w.kernel) == 1 })
			w.ann.mu.Lock()
			early := slices.Clone(w.ann.log)
			w.ann.mu.Unlock()
			if full && len(early) != 0 {
				t.Errorf("announcer called while a real waits for its first verdict: %q", early)
			}
			w.prober.set("10.0.0.2:80", health.Up)
			eventually(t, "route announced", func() bool { return w.ann.prefixes() == "192.0.2.1/32" })
			w.ann.mu.Lock()
			defer w.ann.mu.Unlock()
			if full && w.ann.log[0] != "apply 192.0.2.1/32" {
				t.Errorf("first Apply %q, want the route", w.ann.log[0])
			}
			if !full && (len(w.ann.log) < 2 || w.ann.log[0] != "apply ") {
				t.Errorf("without FullFirstRound an empty set goes first (the default a fresh start keeps): %q", w.ann.log)
			}
		})
	}
}

// TestEngineAnnouncesEveryPass: a pass that changes no route still hands
// the announcer every route; the speaker alone decides that nothing is to
// be sent (bgp's TestApplyStates shows it sends nothing).
func TestEngineAnnouncesEveryPass(t *testing.T) {
	w := newWorld(t)
	w.start(t, daemonCfg(svc("web", "192.0.2.1", 2)))
	w.prober.set("10.0.0.1:80", health.Up)
	w.prober.set("10.0.0.2:80", health.Up)
	eventually(t, "route announced", func() bool { return w.ann.prefixes() == "192.0.2.1/32" })
	eventually(t, "weights up", func() bool { return tunnels100(w.kernel) == 2 })
	w.ann.mu.Lock()
	n := len(w.ann.log)
	w.ann.mu.Unlock()
	// One real of two down: its weight goes to 0, the VIP stays announced
	// (half the reals are healthy, the minimum).
	w.prober.set("10.0.0.2:80", health.Down)
	eventually(t, "weight down", func() bool { return tunnels100(w.kernel) == 1 })
	eventually(t, "the same route handed again", func() bool {
		w.ann.mu.Lock()
		defer w.ann.mu.Unlock()
		return len(w.ann.log) > n
	})
	w.ann.mu.Lock()
	defer w.ann.mu.Unlock()
	if got := w.ann.log[n:]; !slices.Equal(got, []string{"apply 192.0.2.1/32"}) {
		t.Errorf("announcer calls of the health pass %q, want the one route once", got)
	}
}

func TestEngineRestartWritesNothing(t *testing.T) {
	w := newWorld(t)
	cfg := daemonCfg(svc("web", "192.0.2.1", 2, func(s *config.Service) { s.Checks[0].Tunnel = true }))
	r := w.start(t, cfg)
	w.prober.set("10.0.0.1:80", health.Up)
	w.prober.set("10.0.0.2:80", health.Up)
	eventually(t, "weights up", func() bool { return tunnels100(w.kernel) == 2 })
	r.stop(t)
	before := w.kernel.String()

	// A new process: health unknown, the kernel adopted as it is.
	w.kernel.ResetCounts()
	w.prober = newFakeProber()
	r2 := w.start(t, cfg)
	eventually(t, "first pass", func() bool { st, _ := r2.e.Status(); return len(st.Services) == 1 })
	if n := w.kernel.Writes().Total(); n != 0 {
		t.Errorf("restart issued %d writes (%s):\nbefore:\n%s\nafter:\n%s", n, w.kernel.Writes(), before, w.kernel.String())
	}
	if got := w.kernel.String(); got != before {
		t.Errorf("kernel changed:\n%s\nwant:\n%s", got, before)
	}
}

func TestEngineStop(t *testing.T) {
	for _, cleanup := range []bool{false, true} {
		w := newWorld(t)
		r := w.start(t, daemonCfg(svc("web", "192.0.2.1", 1)))
		w.prober.set("10.0.0.1:80", health.Up)
		eventually(t, "announced", func() bool { return w.ann.prefixes() == "192.0.2.1/32" })
		r.stop(t)
		if err := r.e.Stop(context.Background(), cleanup); err != nil {
			t.Fatal(err)
		}
		if w.ann.prefixes() != "" || w.ann.log[len(w.ann.log)-1] != "withdraw-all" {
			t.Errorf("cleanup=%v: announcer log %v", cleanup, w.ann.log)
		}
		has := strings.Contains(w.kernel.String(), "10.0.0.1:80")
		if has == cleanup {
			t.Errorf("cleanup=%v: kernel after stop:\n%s", cleanup, w.kernel.String())
		}
		if vips := w.links.String(); strings.Contains(vips, "192.0.2.1") == cleanup {
			t.Errorf("cleanup=%v: link after stop:\n%s", cleanup, vips)
		}
	}
}

func TestEngineRemovedVIPWithdrawnBeforeDataPlane(t *testing.T) {
	w := newWorld(t)
	r := w.start(t, daemonCfg(svc("a", "192.0.2.1", 1), svc("b", "192.0.2.2", 1, func(s *config.Service) {
		s.Reals[0].Addr = netip.MustParseAddr("10.0.0.2")
	})))
	w.prober.set("10.0.0.1:80", health.Up)
	w.prober.set("10.0.0.2:80", health.Up)
	eventually(t, "both announced", func() bool { return w.ann.prefixes() == "192.0.2.1/32,192.0.2.2/32" })

	cfg := daemonCfg(svc("a", "192.0.2.1", 1))
	cfg.Daemon.StopHold = time.Hour // hold long enough to look at it
	r.configs <- cfg
	eventually(t, "b withdrawn", func() bool { return w.ann.prefixes() == "192.0.2.1/32" })
	if !strings.Contains(w.kernel.String(), "192.0.2.2:80") || !strings.Contains(w.links.String(), "192.0.2.2") {
		t.Errorf("data plane of b removed before its hold time:\n%s\n%s", w.kernel.String(), w.links.String())
	}
}

// TestFailedPassIsRetried: a pass that did not complete (here the first,
// whose service add failed) runs again on its own within seconds, not only
// at the next config, verdict or resync (an hour here).
func TestFailedPassIsRetried(t *testing.T) {
	w := newWorld(t)
	var failing atomic.Bool
	var failed atomic.Int32
	failing.Store(true)
	w.kernel.Inject = func(op ipvs.Op, _ ipvs.Key, _ ipvs.RealKey) error {
		if op == ipvs.OpAddService && failing.Load() {
			failed.Add(1)
			return errors.New("boom")
		}
		return nil
	}
	w.start(t, daemonCfg(svc("web", "192.0.2.1", 2)))
	eventually(t, "a service add failed", func() bool { return failed.Load() > 0 })
	failing.Store(false)
	eventually(t, "the service added by a retry", func() bool { return strings.Contains(w.kernel.String(), "10.0.0.2:80") })
}

// configuringAnnouncer is an announcer that takes a reload's bgp block as
// the speaker does: Configure fails while failing is set (a password file
// that cannot be read), and configured is the ASN of the last block it took.
// handed lists each Configure's kind: "reload" reads every password file,
// "retry" only those that failed.
type configuringAnnouncer struct {
	*fakeAnnouncer
	failing    atomic.Bool
	failed     atomic.Int32
	configured atomic.Uint32
	handedMu   sync.Mutex
	handed     []string
}

// kinds is handed, one word for each Configure.
func (a *configuringAnnouncer) kinds() string {
	a.handedMu.Lock()
	defer a.handedMu.Unlock()
	return strings.Join(a.handed, " ")
}

func (a *configuringAnnouncer) PlanBGP(*config.Config, []Route) (BGPPlan, error) {
	return BGPPlan{}, nil
}

func (a *configuringAnnouncer) Configure(_ context.Context, cfg *config.Config, retry bool) error {
	a.handedMu.Lock()
	a.handed = append(a.handed, map[bool]string{false: "reload", true: "retry"}[retry])
	a.handedMu.Unlock()
	if a.failing.Load() {
		a.failed.Add(1)
		return errors.New(`neighbor "tor1" (192.0.2.254): read password file: permission denied`)
	}
	a.configured.Store(cfg.BGP.ASN)
	return nil
}

// TestFailedBGPConfigIsRetried: a reload whose bgp block the speaker
// refused in part is an incomplete pass, retried like a failed kernel
// write: the speaker takes the block within seconds, without another edit
// (the resync is an hour away).
func TestFailedBGPConfigIsRetried(t *testing.T) {
	w := newWorld(t)
	ann := &configuringAnnouncer{fakeAnnouncer: w.ann}
	w.wrap = func(o *Options) { o.Announcer = ann }
	cfg := daemonCfg(svc("web", "192.0.2.1", 1))
	cfg.BGP = config.BGP{Enabled: true, ASN: 65010}
	r := w.start(t, cfg)
	w.prober.set("10.0.0.1:80", health.Up)
	eventually(t, "web announced", func() bool { return w.ann.prefixes() == "192.0.2.1/32" })

	ann.failing.Store(true)
	next := daemonCfg(svc("web", "192.0.2.1", 1))
	next.BGP = config.BGP{Enabled: true, ASN: 65020}
	r.configs <- next
	// The second Configure is a retry's: the first pass has finished.
	eventually(t, "the refused bgp block handed again by a retry", func() bool { return ann.failed.Load() >= 2 })
	if _, err := r.e.Status(); err == nil || !strings.Contains(err.Error(), "configure bgp: ") {
		t.Errorf("status error after a refused bgp block = %v, want it to say configure bgp", err)
	}
	ann.failing.Store(false)
	eventually(t, "the bgp block taken by a retry", func() bool { return ann.configured.Load() == 65020 })
	eventually(t, "the pass complete", func() bool { _, err := r.e.Status(); return err == nil })
}

// startRefusedBGP runs an engine whose speaker refused the bgp block at
// start (Options.BGPPending) and refuses it still, with one service.
func startRefusedBGP(t *testing.T) (*world, *configuringAnnouncer, *running) {
	t.Helper()
	w := newWorld(t)
	ann := &configuringAnnouncer{fakeAnnouncer: w.ann}
	ann.failing.Store(true)
	w.wrap = func(o *Options) { o.Announcer, o.BGPPending = ann, true }
	cfg := daemonCfg(svc("web", "192.0.2.1", 1))
	cfg.BGP = config.BGP{Enabled: true, ASN: 65010}
	return w, ann, w.start(t, cfg)
}

// TestBGPRefusedAtStartIsRetried: a speaker that started but refused a
// neighbor (Options.BGPPending) is handed the block by the first pass and
// by its retries until it takes it, with no edit and the resync an hour
// away.
func TestBGPRefusedAtStartIsRetried(t *testing.T) {
	w, ann, r := startRefusedBGP(t)
	eventually(t, "the block refused at start handed again by a retry", func() bool { return ann.failed.Load() >= 2 })
	ann.failing.Store(false)
	eventually(t, "the bgp block taken by a retry", func() bool { return ann.configured.Load() == 65010 })
	w.prober.set("10.0.0.1:80", health.Up)
	eventually(t, "web announced", func() bool { return w.ann.prefixes() == "192.0.2.1/32" })
	eventually(t, "the pass complete", func() bool { _, err := r.e.Status(); return err == nil })
}

// TestPendingBGPBlockRetriedAsRetry: the pass of a reload hands the
// speaker the bgp block as a reload's, which reads every password file;
// the retries while it refuses the block hand it as a retry, which keeps
// the passwords the reload read and reads only the files that failed
// (bgp.Speaker.RetryConfig), so that a key written for another neighbor
// ahead of its own reload does not go live with them. The next reload
// reads every file again. A block refused at start is retried the same
// way: the start read the files.
func TestPendingBGPBlockRetriedAsRetry(t *testing.T) {
	t.Run("after a reload", func(t *testing.T) {
		w := newWorld(t)
		ann := &configuringAnnouncer{fakeAnnouncer: w.ann}
		ann.failing.Store(true)
		w.wrap = func(o *Options) { o.Announcer = ann }
		cfg := daemonCfg(svc("web", "192.0.2.1", 1))
		cfg.BGP = config.BGP{Enabled: true, ASN: 65010}
		r := w.start(t, cfg)
		reload := func(asn uint32) {
			next := daemonCfg(svc("web", "192.0.2.1", 1))
			next.BGP = config.BGP{Enabled: true, ASN: asn}
			r.configs <- next
		}
		reload(65020)
		eventually(t, "the reload's block handed again by a retry", func() bool { return strings.HasPrefix(ann.kinds(), "reload retry") })
		reload(65030)
		eventually(t, "the next reload's block handed", func() bool { return strings.Count(ann.kinds(), "reload") == 2 })
		if k := ann.kinds(); !regexp.MustCompile(`^reload( retry)+ reload( retry)*$`).MatchString(k) {
			t.Errorf("the bgp block was handed as %q, want each reload's pass to read the password files and its retries to keep them", k)
		}
	})
	t.Run("after a start", func(t *testing.T) {
		_, ann, _ := startRefusedBGP(t)
		eventually(t, "the block refused at start handed again by a retry", func() bool { return ann.failed.Load() >= 2 })
		if k := ann.kinds(); !regexp.MustCompile(`^retry( retry)+$`).MatchString(k) {
			t.Errorf("the bgp block was handed as %q, want retries only: the start read the password files", k)
		}
	})
}

// restartingAnnouncer is a configuringAnnouncer that defers its block as
// the speaker after a planned restart does (bgp.Options.Restarting): it
// keeps the block it is handed and takes it at its first Apply, which
// fails as Configure would while failing is set, after the routes went in.
type restartingAnnouncer struct {
	*configuringAnnouncer
	mu       sync.Mutex
	deferred bool
	held     *config.Config // the block kept until the first Apply
}

func (a *restartingAnnouncer) Configure(ctx context.Context, cfg *config.Config, retry bool) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.deferred {
		a.held = cfg
		return nil
	}
	return a.configuringAnnouncer.Configure(ctx, cfg, retry)
}

func (a *restartingAnnouncer) Apply(ctx context.Context, routes []Route) error {
	if err := a.fakeAnnouncer.Apply(ctx, routes); err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.deferred {
		return nil
	}
	a.deferred = false
	// The speaker reads the password files of the block it held here.
	return a.configuringAnnouncer.Configure(ctx, a.held, false)
}

// TestBGPRefusedAtFirstApplyIsRetried: after a planned restart the speaker
// connects its neighbors at its first Apply, and refuses there the one
// whose password file it cannot read. That failed announce is the block
// refused, handed again by the retries until the speaker takes it; the
// retried Apply alone succeeded (the routes were in), and the neighbor
// stayed unconfigured until the next edit.
func TestBGPRefusedAtFirstApplyIsRetried(t *testing.T) {
	w := newWorld(t)
	cfg := daemonCfg(svc("web", "192.0.2.1", 1))
	cfg.BGP = config.BGP{Enabled: true, ASN: 65010}
	ann := &restartingAnnouncer{configuringAnnouncer: &configuringAnnouncer{fakeAnnouncer: w.ann}, deferred: true, held: cfg}
	ann.failing.Store(true)
	w.wrap = func(o *Options) { o.Announcer, o.FullFirstRound = ann, true }
	r := w.start(t, cfg)
	w.prober.set("10.0.0.1:80", health.Up)
	eventually(t, "web announced", func() bool { return w.ann.prefixes() == "192.0.2.1/32" })
	eventually(t, "the block refused at the first Apply handed again by a retry", func() bool { return ann.failed.Load() >= 2 })
	ann.failing.Store(false)
	eventually(t, "the bgp block taken by a retry", func() bool { return ann.configured.Load() == 65010 })
	eventually(t, "the pass complete", func() bool { _, err := r.e.Status(); return err == nil })
	// The first Apply read the password files; the engine retried.
	if k := ann.kinds(); !regexp.MustCompile(`^reload( retry)+$`).MatchString(k) {
		t.Errorf("the bgp block was handed as %q, want the first Apply's reading then retries", k)
	}
}

// TestLastingFailureLoggedOnce: a failure that every pass meets (here the
// kernel refusing every weight change of one real) is logged at Error by
// the pass that meets it first and by the retries, not by each health pass
// that repeats it at the verdicts' rate.
func TestLastingFailureLoggedOnce(t *testing.T) {
	logs := refusedWeightPasses(t, hclog.Info, 3)
	if n := strings.Count(logs.String(), "[ERROR] reconcile incomplete; retrying: kind=health"); n != 1 {
		t.Errorf("%d health passes logged the failure at Error, want the first only:\n%s", n, logs)
	}
}

// refusedWeightPasses runs web (10.0.0.1, 10.0.0.2), whose kernel refuses
// every weight change of 10.0.0.1, brings 10.0.0.1 up (refused), then
// makes flips health passes of web, each of which tries 10.0.0.1's weight
// again and meets the same refusal: two a flip of 10.0.0.2. It returns the
// log, at level.
func refusedWeightPasses(t *testing.T, level hclog.Level, flips int) *syncBuffer {
	t.Helper()
	w := newWorld(t)
	w.kernel.Inject = func(op ipvs.Op, _ ipvs.Key, rk ipvs.RealKey) error {
		if op == ipvs.OpUpdateReal && rk.Addr == netip.MustParseAddr("10.0.0.1") {
			return errors.New("boom")
		}
		return nil
	}
	logs := &syncBuffer{}
	w.wrap = func(o *Options) {
		o.Logger = hclog.New(&hclog.LoggerOptions{Output: logs, Level: level})
	}
	cfg := daemonCfg(svc("web", "192.0.2.1", 2))
	cfg.Daemon.ResyncInterval = time.Hour
	w.start(t, cfg)
	w.prober.set("10.0.0.1:80", health.Down)
	w.prober.set("10.0.0.2:80", health.Up)
	eventually(t, "10.0.0.2 at full weight", func() bool { return tunnels100(w.kernel) == 1 })
	w.prober.set("10.0.0.1:80", health.Up) // its weight change is refused
	eventually(t, "a health pass refused", func() bool { return strings.Contains(logs.String(), "boom") })
	for i := 0; i < flips; i++ {
		w.prober.set("10.0.0.2:80", health.Down)
		eventually(t, "10.0.0.2 drained by a health pass", func() bool { return tunnels100(w.kernel) == 0 })
		w.prober.set("10.0.0.2:80", health.Up)
		eventually(t, "10.0.0.2 at full weight again", func() bool { return tunnels100(w.kernel) == 1 })
	}
	return logs
}

// TestHealthPassesDoNotPushTheRetryBack: health passes that fail as the
// last pass did leave the retry armed as it is, rather than re-arm it later
// each time with a doubled backoff: a stream of verdicts would hold off the
// retry, the pass that reads the kernel again, for as long as it lasts.
func TestHealthPassesDoNotPushTheRetryBack(t *testing.T) {
	logs := refusedWeightPasses(t, hclog.Debug, 4)
	// Each line of a failed pass says when the retry comes ("in"). A
	// health pass leaves it as the pass before it left it; only a retry
	// (kind=pass) doubles it.
	in, health := "", 0
	for _, line := range strings.Split(logs.String(), "\n") {
		_, rest, ok := strings.Cut(line, "reconcile incomplete; retrying: kind=")
		if !ok {
			continue
		}
		kind, rest, _ := strings.Cut(rest, " ")
		got, _, _ := strings.Cut(strings.TrimPrefix(rest, "in="), " ")
		if kind == "health" && in != "" && got != in {
			t.Errorf("a health pass moved the retry from %s to %s:\n%s", in, got, logs)
			break
		}
		if kind == "health" {
			health++
		}
		in = got
	}
	if health < 8 {
		t.Errorf("%d failed health passes logged, want at least 8:\n%s", health, logs)
	}
}

// TestPendingBGPBlockNotTriedByHealthPasses: while the speaker refuses the
// bgp block, the health passes, which come at the verdicts' rate, do not
// hand it again (each try reads every password file); the retries do.
func TestPendingBGPBlockNotTriedByHealthPasses(t *testing.T) {
	w, ann, r := startRefusedBGP(t)
	eventually(t, "the first pass refused", func() bool { return ann.failed.Load() >= 1 })
	tries := ann.failed.Load()
	for i := 0; i < 3; i++ {
		w.prober.set("10.0.0.1:80", health.Up)
		eventually(t, "web announced by a health pass", func() bool { return w.ann.prefixes() == "192.0.2.1/32" })
		w.prober.set("10.0.0.1:80", health.Down)
		eventually(t, "web withdrawn by a health pass", func() bool { return w.ann.prefixes() == "" })
	}
	// Six health passes; the retries, 1 s then 2 s apart, try the block
	// once or twice in the time they take on a busy machine.
	if n := ann.failed.Load() - tries; n > 2 {
		t.Errorf("the bgp block was tried %d times during 6 health passes, want only by the retries", n)
	}
	if _, err := r.e.Status(); err == nil || !strings.Contains(err.Error(), "configure bgp: ") {
		t.Errorf("status after health passes with the bgp block still refused: %v, want the refusal", err)
	}
	eventually(t, "the block tried again by a retry", func() bool { return ann.failed.Load() > tries })
}

// fwmarkOn makes s an fwmark service (mark) that still announces its VIP.
func fwmarkOn(mark uint32) func(*config.Service) {
	return func(s *config.Service) {
		s.Port, s.Protocol, s.FWMark = 0, "", mark
		for i := range s.Reals {
			s.Reals[i].Port = 0
		}
		for i := range s.Checks {
			s.Checks[i].Port = 80
		}
	}
}

// startWithFWMark runs an engine with an address service a and an fwmark
// service b (mark 20) that announces its VIP, both up and announced.
func startWithFWMark(t *testing.T) (*world, *running, *config.Service) {
	t.Helper()
	w := newWorld(t)
	b := svc("b", "192.0.2.2", 1, fwmarkOn(20), func(s *config.Service) {
		s.Reals[0].Addr = netip.MustParseAddr("10.0.0.2")
	})
	r := w.start(t, daemonCfg(svc("a", "192.0.2.1", 1), b))
	w.prober.set("10.0.0.1:80", health.Up)
	w.prober.set("10.0.0.2:0", health.Up)
	eventually(t, "both announced", func() bool { return w.ann.prefixes() == "192.0.2.1/32,192.0.2.2/32" })
	return w, r, b
}

// TestEngineRemovedFWMarkVIPHeld: an fwmark service with a VIP that leaves
// the configuration is withdrawn first, and its IPVS service stays with the
// VIP for the hold time, as an address service's does: connections the
// routers still send meanwhile are served, not reset.
func TestEngineRemovedFWMarkVIPHeld(t *testing.T) {
	w, r, _ := startWithFWMark(t)
	if !strings.Contains(w.kernel.String(), "FWM  20 ") {
		t.Fatalf("no fwmark service:\n%s", w.kernel.String())
	}

	cfg := daemonCfg(svc("a", "192.0.2.1", 1))
	cfg.Daemon.StopHold = time.Hour // hold long enough to look at it
	r.configs <- cfg
	eventually(t, "b withdrawn", func() bool { return w.ann.prefixes() == "192.0.2.1/32" })
	if !strings.Contains(w.links.String(), "192.0.2.2") {
		t.Errorf("VIP of b removed before its hold time:\n%s", w.links.String())
	}
	if !strings.Contains(w.kernel.String(), "FWM  20 ") {
		t.Errorf("fwmark service of b removed before its hold time, while its VIP is held:\n%s", w.kernel.String())
	}
}

// TestEngineFWMarkKeptWithoutVIP: an fwmark service that keeps its mark
// but drops its VIP is withdrawn and its VIP held, and its IPVS service is
// the configured one only: the held copy does not stand beside it.
func TestEngineFWMarkKeptWithoutVIP(t *testing.T) {
	w, r, b := startWithFWMark(t)

	b2 := *b
	b2.VIP = netip.Addr{}
	b2.Announce.Enabled = false
	b2.Reals = append([]config.Real(nil), b.Reals...)
	b2.Reals[0].Weight = 7 // the configured service is the one in the kernel
	cfg := daemonCfg(svc("a", "192.0.2.1", 1), &b2)
	cfg.Daemon.StopHold = time.Hour
	r.configs <- cfg
	eventually(t, "b withdrawn", func() bool { return w.ann.prefixes() == "192.0.2.1/32" })
	r.configs <- cfg // taken once Run is done with the first
	k := w.kernel.String()
	if n := strings.Count(k, "FWM  20 "); n != 1 || !strings.Contains(k, "Tunnel  7 ") {
		t.Errorf("want one fwmark 20 service, the configured one (weight 7):\n%s", k)
	}
	if _, err := r.e.Status(); err != nil {
		t.Errorf("pass: %v", err)
	}
}

// TestEngineTunnelMarkRangeFollowsReload: a reload that moves
// tunnel_mark_base moves the tunnelled checks' fwmark services into the new
// range. The configuration is validated against the new range only, so a
// service may now use a mark of the old one: left there, the two would share
// one IPVS key.
func TestEngineTunnelMarkRangeFollowsReload(t *testing.T) {
	w := newWorld(t)
	tunnelled := func(s *config.Service) { s.Checks[0].Tunnel = true }
	r := w.start(t, daemonCfg(svc("a", "192.0.2.1", 1, tunnelled)))
	eventually(t, "tunnel service at 1000", func() bool { return strings.Contains(w.kernel.String(), "FWM  1000 ") })

	// The same reload gives mark 1000, now outside the range, to a service.
	u := svc("u", "192.0.2.9", 1, fwmarkOn(1000), func(s *config.Service) {
		s.Reals[0].Addr = netip.MustParseAddr("10.0.0.9")
	})
	cfg := daemonCfg(svc("a", "192.0.2.1", 1, tunnelled), u)
	cfg.Daemon.TunnelMarkBase = 5000
	// kglb plan keeps no mark outside the new range either.
	if rv, err := r.e.PlanConfig(context.Background(), cfg); err != nil || len(rv.Errors) > 0 {
		t.Errorf("plan of the reload: %v %v", err, rv.Errors)
	}
	r.configs <- cfg
	r.configs <- cfg // taken once Run is done with the first
	k := w.kernel.String()
	if !strings.Contains(k, "FWM  5000 IPv4 rr\n  -> 10.0.0.1:0 ") || !strings.Contains(k, "FWM  1000 IPv4 wrr\n  -> 10.0.0.9:0 ") {
		t.Errorf("after tunnel_mark_base = 5000, want the tunnelled check's service at 5000 and service u at 1000:\n%s", k)
	}
	if _, err := r.e.Status(); err != nil {
		t.Errorf("pass: %v", err)
	}
	if ts := r.e.Plan().Targets("a", netip.MustParseAddrPort("10.0.0.1:80")); len(ts) != 1 || ts[0].Spec.Mark != 5000 {
		t.Errorf("targets after the reload: %+v, want one with mark 5000", ts)
	}
}

// markRecorder is a prober that records every tunnel mark it is handed.
type markRecorder struct {
	*fakeProber
	mu    sync.Mutex
	marks map[uint32]bool
}

func (m *markRecorder) Update(ts []health.Target) error {
	m.mu.Lock()
	for _, t := range ts {
		m.marks[t.Spec.Mark] = true
	}
	m.mu.Unlock()
	return m.fakeProber.Update(ts)
}

// TestTunnelMarkRangeMoveAvoidsForeignService: a reload that moves the
// tunnel mark range onto a foreign fwmark service already known never
// hands its mark to a real, not even until the pass finds it again.
func TestTunnelMarkRangeMoveAvoidsForeignService(t *testing.T) {
	w := newWorld(t)
	fk := ipvs.MarkKey(ipvs.IPv4, 5000)
	if err := w.kernel.AddService(ipvs.Service{Key: fk, Scheduler: "rr"}); err != nil {
		t.Fatal(err)
	}
	rec := &markRecorder{fakeProber: w.prober, marks: map[uint32]bool{}}
	w.wrap = func(o *Options) { o.Prober = rec }
	tunnelled := func(s *config.Service) { s.Checks[0].Tunnel = true }
	r := w.start(t, daemonCfg(svc("a", "192.0.2.1", 1, tunnelled)))
	eventually(t, "tunnel service at 1000", func() bool { return strings.Contains(w.kernel.String(), "FWM  1000 ") })

	cfg := daemonCfg(svc("a", "192.0.2.1", 1, tunnelled))
	cfg.Daemon.TunnelMarkBase = 5000
	r.configs <- cfg
	eventually(t, "the tunnelled check's service at 5001", func() bool {
		return strings.Contains(w.kernel.String(), "FWM  5001 IPv4 rr\n  -> 10.0.0.1:0 ")
	})
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.marks[5000] {
		t.Errorf("the prober was handed mark 5000, the foreign service's:\n%s", w.kernel.String())
	}
}

// TestEngineTunnelMarkAvoidsForeignService: an fwmark service someone else
// made inside the tunnel range (ipvsadm -A -f 1000) is foreign: kglb must
// not give its mark to a real, or the real's tunnelled probes go to the
// foreign service's reals and judge it by their health.
func TestEngineTunnelMarkAvoidsForeignService(t *testing.T) {
	w := newWorld(t)
	fk := ipvs.MarkKey(ipvs.IPv4, 1000)
	if err := w.kernel.AddService(ipvs.Service{Key: fk, Scheduler: "rr"}); err != nil {
		t.Fatal(err)
	}
	if err := w.kernel.AddReal(fk, ipvs.Real{Addr: netip.MustParseAddr("10.9.9.9"), Weight: 1, Forward: ipvs.ForwardTunnel}); err != nil {
		t.Fatal(err)
	}
	tunnelled := func(s *config.Service) { s.Checks[0].Tunnel = true }
	r := w.start(t, daemonCfg(svc("a", "192.0.2.1", 1, tunnelled)))
	// The first pass fails on the foreign service; its retry (a second
	// later) uses a mark of kglb's own.
	eventually(t, "the tunnelled check's service at a mark of its own", func() bool {
		return strings.Contains(w.kernel.String(), "FWM  1001 IPv4 rr\n  -> 10.0.0.1:0 ")
	})
	r.stop(t)
	ts := r.e.Plan().Targets("a", netip.MustParseAddrPort("10.0.0.1:80"))
	if len(ts) != 1 || ts[0].Spec.Mark != 1001 {
		t.Errorf("tunnelled targets %v, want one with mark 1001:\n%s", ts, w.kernel.String())
	}
	if !strings.Contains(w.kernel.String(), "FWM  1000 IPv4 rr mask /0\n  -> 10.9.9.9:0 ") {
		t.Errorf("the foreign service changed:\n%s", w.kernel.String())
	}
	if _, err := r.e.Status(); err != nil {
		t.Errorf("last pass: %v", err)
	}
}
