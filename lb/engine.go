package lb

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/kglb/kglb/config"
	"github.com/kglb/kglb/health"
	"github.com/kglb/kglb/ipvs"
	"github.com/kglb/kglb/vip"
)

// IPVS is the part of the ipvs reconciler the engine drives. Apply diffs
// against the reconciler's cache; Resync reads the kernel first.
type IPVS interface {
	Read(ctx context.Context) (ipvs.Snapshot, error)
	Apply(ctx context.Context, d ipvs.Desired) (ipvs.Result, error)
	Resync(ctx context.Context, d ipvs.Desired) (ipvs.Result, error)
}

// VIPs is the part of the vip reconciler the engine drives. Apply trusts
// what the last Apply reached; Resync reads the link first.
type VIPs interface {
	Apply(ctx context.Context, desired []netip.Addr) (vip.Result, error)
	Resync(ctx context.Context, desired []netip.Addr) (vip.Result, error)
}

// Announcer announces routes (the bgp speaker, adapted by the daemon).
// Apply takes the full set each time; WithdrawAll withdraws everything.
type Announcer interface {
	Apply(ctx context.Context, routes []Route) error
	WithdrawAll(ctx context.Context) error
}

// Prober runs health checks (the health scheduler).
type Prober interface {
	Update(targets []health.Target) error
	Changes() <-chan []health.Change // batches of changes, in order
	Lookup(t health.Target) (health.Status, bool)
}

// Options configure an Engine. IPVS, VIPs and Prober are required;
// Announcer may be nil (no bgp block: nothing is announced).
type Options struct {
	IPVS      IPVS
	VIPs      VIPs
	Announcer Announcer
	Prober    Prober
	Logger    hclog.Logger
	Metrics   *Metrics // nil: none
	Now       func() time.Time
	// FullFirstRound holds the announcer's first Apply until no VIP is in
	// its initial health round. The daemon sets it after a planned
	// restart: its speaker connects at the first Apply (bgp.Options.
	// Restarting), and the End-of-RIB it then sends ends the routers'
	// stale period, so that set must lack no VIP still being checked.
	FullFirstRound bool
	// BGPPending says the announcer (a BGPPlanner) did not take the
	// initial config's bgp block in full: the daemon's speaker started but
	// refused a neighbor (an unreadable password file). The first pass
	// then hands it the block again, and its retries do while that fails,
	// as after a reload.
	BGPPending bool
	// FirstPass, if set, is called once the first pass has written the
	// data plane; the daemon holds work that would compete with that pass
	// for the CPU (the record of the applied config) until then.
	FirstPass func()
	// Guard is the reload's delete guard; a plan and the plan a reload
	// logs carry its verdict ("pass", or its refusal: a reload applied
	// past one was forced). Nil: no verdict.
	Guard func(old, new *config.Config) error
}

// Engine keeps the world in step with the configuration and health. All
// decisions happen on the Run goroutine; Status may be read from any.
type Engine struct {
	opts  Options
	log   hclog.Logger
	now   func() time.Time
	marks *health.Marks

	// Owned by the Run goroutine.
	cfg      *config.Config
	plan     *Plan
	marksErr error // of the last marks.Sync, logged again with its plan
	// avoided is the foreign fwmarks marks was last told to avoid, all of
	// them (Avoid keeps those of its range): an allocator of another range
	// (moveMarks) avoids its own from the start.
	avoided   []uint32
	remark    bool // a real holds a mark to avoid: make the plan again
	adopted   map[ipvs.Key]map[ipvs.RealKey]uint16
	qualified map[string]bool
	decided   decisions // per service of cfg, where in desired, while still valid
	desired   Desired
	// announced is what the announcer holds after its last Apply that
	// succeeded: the withdrawal step keeps its routes that stay, Stop
	// withdraws when it is not empty, and a reload's plan compares with it.
	announced []Route
	leaving   map[netip.Addr]leaving // VIPs withdrawn, held in the data plane
	nextDrain time.Time

	// Each reconciler diffs what it is handed against its own cache; the
	// engine keeps only what it needs to decide: the IPVS services last
	// handed (those of a VIP that leaves are held), the services with reals
	// draining (to wake for them), whether the prober holds the plan's
	// targets, and whether the announcer has been handed routes yet.
	ipvsWant   ipvs.Desired
	draining   []ipvs.Key // services with reals draining, as of the last ipvs result
	proberOK   bool
	holdProbes bool // the first pass has not run: the prober waits
	// healthAt is when the engine takes verdicts again: a health pass
	// rests as long as it ran (see Run).
	healthAt time.Time
	// retryAt is when a pass runs again after one that did not complete
	// (a kernel write, a VIP or an announce failed), retryIn the wait
	// before it: doubled from retryFirst at each failure in a row, up to
	// the resync interval. Zero once a pass completes.
	retryAt time.Time
	retryIn time.Duration
	// The announcer (a BGPPlanner) has not taken cfg's bgp block: a
	// reload set it (or Options.BGPPending at start, or a failed first
	// Apply: see announce), or its Configure failed. Each pass hands it
	// the block until it does, so a failure makes that pass incomplete
	// and the pass's retry (retryAt) configures the speaker again,
	// instead of it waiting for the next edit.
	bgpPending bool
	// bgpReload: a reload set bgpPending and its pass has not handed the
	// block yet. That hand-off has the speaker read the password files;
	// the later ones are retries, which keep the passwords read then and
	// read only the files that failed, so a key an operator writes ahead
	// of the reload that goes with the router's change waits for it. At
	// start the speaker read them (bgp.New, or its first Apply after a
	// planned restart): every hand-off then is a retry.
	bgpReload bool
	// The announcer has been handed routes at least once, so
	// Options.FullFirstRound holds no more.
	announceStarted bool
	// The last Apply of the announcer failed: it may hold routes that
	// announced lacks (the speaker carries on past a route that fails),
	// so a stop withdraws even when announced is empty.
	announceFailed bool
	// The routes of the pass whose announce step the announcer last took
	// in full, and the VIPs that were in place then (vip.Result.Held): a
	// pass with the same two slices has nothing to withdraw or announce,
	// and no VIP announced outside its configuration (see settled).
	routesIn []Route
	heldIn   []netip.Addr

	plans      chan planReq // PlanConfig's requests, served by Run
	lastWrites ipvs.Writes  // of the last applyIPVS, for the reload's log line
	lastDrain  []ipvs.Draining
	lastVIPs   vip.Result // of the last VIPs.Apply, for the reload's plan
	// A reload is describing itself (reload): keptBefore holds whether
	// each target of the services whose probes changed had a verdict
	// before the prober was given the new ones.
	recording     bool
	keptBefore    map[health.Target]bool
	probesChanged map[int]bool // nil: every service
	passNow       time.Time    // the clock of the last pass
	lastReload    Review       // what the last reload did, as it logged it

	mu     sync.Mutex
	status Desired
	errs   error // of the last reconcile
}

// leaving is a VIP whose route was withdrawn: its services and address stay
// until the hold time has passed, so connections routed here meanwhile are
// served.
type leaving struct {
	until    time.Time
	services []ipvs.Service
}

// NewEngine returns an engine for the initial configuration. Run starts it.
func NewEngine(opts Options, cfg *config.Config) (*Engine, error) {
	if opts.IPVS == nil || opts.VIPs == nil || opts.Prober == nil {
		return nil, errors.New("lb: IPVS, VIPs and Prober are required")
	}
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	marks, err := health.NewMarks(cfg.Daemon.TunnelMarkBase, cfg.Daemon.TunnelMarkCount)
	if err != nil {
		return nil, fmt.Errorf("lb: %w", err)
	}
	e := &Engine{
		opts: opts, log: opts.Logger, now: opts.Now, marks: marks,
		cfg: cfg, qualified: map[string]bool{}, leaving: map[netip.Addr]leaving{},
		plans: make(chan planReq), bgpPending: opts.BGPPending,
	}
	if opts.Metrics != nil {
		opts.Metrics.watch(e.viewStatus)
	}
	return e, nil
}

// Status returns the last computed state with its reasons. It is a copy:
// a health pass decides its services again in place (redecide).
func (e *Engine) Status() (Desired, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	d := e.status
	d.Services = slices.Clone(d.Services)
	d.IPVS.Services = slices.Clone(d.IPVS.Services)
	d.VIPStatus = slices.Clone(d.VIPStatus)
	d.Qualified = maps.Clone(d.Qualified)
	return d, e.errs
}

// viewStatus calls f with the last computed state, which f must not keep
// or change: the metrics read it at scrape time.
func (e *Engine) viewStatus(f func(*Desired)) {
	e.mu.Lock()
	defer e.mu.Unlock()
	f(&e.status)
}

// Config returns the configuration in force.
func (e *Engine) Config() *config.Config {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.cfg
}

// Plan returns the probe plan in force, to look up each real's checks.
func (e *Engine) Plan() *Plan {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.plan
}

// Run adopts the kernel state, then reconciles on every configuration
// from configs, every health change, every resync interval and every drain
// deadline, until ctx ends. Errors of one pass are logged and counted; a
// pass runs again soon after (see finish).
func (e *Engine) Run(ctx context.Context, configs <-chan *config.Config) error {
	if err := e.adopt(ctx); err != nil {
		return err
	}
	// The first pass writes every service and VIP before the first probe
	// runs: at a cold start of thousands of reals the probes would take the
	// CPU the pass needs, while every real starts at weight 0 (unknown)
	// whatever they find. Probing starts right after it.
	e.holdProbes = true
	e.setConfig(e.cfg)
	start := e.now()
	e.reconcile(ctx, kindPass)
	e.holdProbes = false
	e.updateProber()
	if e.opts.FirstPass != nil {
		e.opts.FirstPass()
	}
	e.log.Info("first pass applied", "services", len(e.cfg.Services), "took", e.now().Sub(start).Round(time.Millisecond).String())

	resync := time.NewTicker(e.cfg.Daemon.ResyncInterval)
	defer resync.Stop()
	drain := time.NewTimer(time.Hour)
	defer drain.Stop()
	// After a health pass the engine takes no verdicts for as long as the
	// pass ran, so a stream of verdicts comes in fewer, larger passes and
	// takes at most half of a CPU: at a cold start of 10,000 reals the
	// verdicts came 2 or 3 to a pass, 4,176 passes whose fixed cost (a
	// netlink round trip, a log line, the status) took the CPU the probes
	// needed. A verdict after a quiet spell is applied at once; configs,
	// resyncs and drains never wait.
	rest := time.NewTimer(time.Hour)
	defer rest.Stop()
	for {
		e.armDrain(drain)
		changes := e.opts.Prober.Changes()
		if wait := time.Until(e.healthAt); wait > 0 {
			changes = nil // the scheduler batches what comes meanwhile
			rest.Reset(wait)
		}
		select {
		case <-ctx.Done():
			return nil
		case cfg := <-configs:
			if cfg.Daemon.ResyncInterval != e.cfg.Daemon.ResyncInterval {
				resync.Reset(cfg.Daemon.ResyncInterval)
			}
			e.reload(ctx, cfg)
		case chs := <-changes:
			start := time.Now()
			e.verdicts(ctx, e.collect(chs))
			end := time.Now()
			e.healthAt = end.Add(end.Sub(start))
		case <-rest.C:
		case <-resync.C:
			e.reconcile(ctx, kindResync)
		case <-drain.C:
			e.reconcile(ctx, kindPass)
		case req := <-e.plans:
			r, err := e.review(ctx, req.cfg)
			req.reply <- planRes{r, err}
		}
	}
}

// drainPoll is how often services with reals draining are looked at
// between their deadlines: a drained real goes as soon as its last
// connection has, not only when its drain time is over.
const drainPoll = time.Second

func (e *Engine) armDrain(t *time.Timer) {
	next := e.nextWake()
	if next.IsZero() {
		t.Stop()
		return
	}
	t.Reset(max(next.Sub(e.now()), 0))
}

// nextWake is when the next drain or hold ends, the next drain poll is
// due or a pass that did not complete is retried; zero when nothing is
// draining, held or to retry.
func (e *Engine) nextWake() time.Time {
	next := e.nextDrain
	if len(e.draining) > 0 {
		if poll := e.now().Add(drainPoll); next.IsZero() || poll.Before(next) {
			next = poll
		}
	}
	for _, l := range e.leaving {
		if next.IsZero() || l.until.Before(next) {
			next = l.until
		}
	}
	if !e.retryAt.IsZero() && (next.IsZero() || e.retryAt.Before(next)) {
		next = e.retryAt
	}
	return next
}

// adopt reads the kernel once at start: reals kglb left behind keep their
// weights until their first verdict, and fwmarks of tunnelled checks are
// claimed again, so a restart with an unchanged config writes nothing.
func (e *Engine) adopt(ctx context.Context) error {
	snap, err := e.opts.IPVS.Read(ctx)
	if err != nil {
		return fmt.Errorf("read ipvs state: %w", err)
	}
	e.adopted = map[ipvs.Key]map[ipvs.RealKey]uint16{}
	for _, s := range snap.Services {
		ws := make(map[ipvs.RealKey]uint16, len(s.Reals))
		for _, r := range s.Reals {
			ws[r.Key()] = r.Weight
		}
		e.adopted[s.Key] = ws
		if s.Key.FWMark != 0 && len(s.Reals) == 1 {
			if err := e.marks.Restore(s.Reals[0].Addr, s.Key.FWMark); err != nil {
				e.log.Debug("fwmark service not adopted for tunnelled checks", "service", s.Key.String(), "err", err)
			}
		}
	}
	e.log.Info("adopted kernel state", "services", len(snap.Services))
	return nil
}

// setConfig makes cfg current: marks, probe plan, the prober's targets.
// What a reload leaves alone is carried over from the configuration in
// force: the specs of every service with the same probes, the whole plan
// (and with it the marks and the prober's targets) when no probe changed,
// and the decision of every service that is the same in every field.
func (e *Engine) setConfig(cfg *config.Config) {
	var c carried
	if e.plan != nil {
		c = carry(e.cfg.Services, cfg.Services)
		if moved := e.moveMarks(cfg); moved || e.remark {
			e.remark = false
			c.spellOut(len(cfg.Services))
		}
	}
	var plan *Plan
	var err error
	if c.unchanged {
		plan, err = e.plan.withConfig(cfg), e.plan.err
	} else {
		var marks map[netip.Addr]uint32
		marks, e.marksErr = e.marks.Sync(TunnelReals(cfg))
		plan, err = newPlan(cfg, marks, e.plan, c.plan)
	}
	if e.marksErr != nil {
		e.log.Error("tunnelled checks", "err", e.marksErr)
	}
	if err != nil {
		e.log.Error("health check plan", "err", err)
	}
	if e.recording {
		e.keptBefore, e.probesChanged = e.keptTargets(plan, c)
	}
	if !c.unchanged {
		e.proberOK = false
	}

	if c.unchanged {
		// One for one: forget only the services that changed.
		for _, i := range c.forget {
			e.decided[i] = decision{}
		}
	} else {
		decided := make(decisions, len(cfg.Services))
		for i, j := range c.decision {
			if j >= 0 && sameMarks(e.plan, plan, i) {
				decided[i] = e.decided[j]
			}
		}
		e.decided = decided
	}
	e.mu.Lock()
	e.cfg, e.plan = cfg, plan
	e.mu.Unlock()
	if !e.holdProbes {
		e.updateProber()
	}
	if m := e.opts.Metrics; m != nil {
		m.setConfig(cfg)
	}
}

// moveMarks gives the engine an allocator of cfg's tunnel mark range when
// it differs from the one in use, and reports whether it did. config.Load
// checks the services' fwmarks against the new range only, so a service may
// take a mark of the old one at the same reload: the tunnelled checks must
// leave it. A real keeps its mark when it lies in the new range; the others
// get new ones, and their tunnelled targets start again, as after any edit
// of a check.
func (e *Engine) moveMarks(cfg *config.Config) bool {
	base, count := cfg.Daemon.TunnelMarkBase, cfg.Daemon.TunnelMarkCount
	if b, n := e.marks.Range(); b == base && n == count {
		return false
	}
	m, err := health.NewMarks(base, count)
	if err != nil { // config.Load accepts no such range
		e.log.Error("tunnelled checks keep their marks", "err", err)
		return false
	}
	for a, mk := range e.plan.marks {
		_ = m.Restore(a, mk) // outside the new range: a new mark
	}
	// Before the plan of this reload hands the prober its targets: a
	// foreign fwmark service of the new range is known already.
	m.Avoid(e.avoided)
	e.marks = m
	return true
}

// updateProber hands the prober the plan's targets unless it has them.
func (e *Engine) updateProber() {
	if e.proberOK {
		return
	}
	err := e.opts.Prober.Update(e.plan.All())
	if err != nil {
		e.log.Error("health checks", "err", err)
	}
	e.proberOK = err == nil
}

// sameMarks reports whether the reals of service i of next have the marks
// in next that they had in prev: a real's mark is part of its tunnelled
// targets, and a real that waited for a mark gets one when another leaves.
func sameMarks(prev, next *Plan, i int) bool {
	if !next.services[i].tunnel {
		return true
	}
	for _, r := range next.cfg.Services[i].Reals {
		a, okA := prev.marks[r.Addr]
		b, okB := next.marks[r.Addr]
		if a != b || okA != okB {
			return false
		}
	}
	return true
}

func (e *Engine) input() Input {
	return Input{
		Config:    e.cfg,
		Plan:      e.plan,
		Health:    e.health,
		Adopted:   e.adopted,
		Qualified: e.qualified,
	}
}

func (e *Engine) health(t health.Target) health.State {
	st, _ := e.opts.Prober.Lookup(t)
	return st.State
}

// passKind says what started a pass: a health change, a resync, or
// anything else (start, reload, drain deadline). It labels the pass's
// metrics, and a resync decides every service again.
type passKind int

const (
	kindPass passKind = iota
	kindHealth
	kindResync
)

// String is the kind's metric label: a health change, or a full pass.
func (k passKind) String() string {
	if k == kindHealth {
		return "health"
	}
	return "full"
}

// reconcile computes the whole desired state and hands it to each
// reconciler: withdraw first, then the data plane, then announce what the
// data plane now holds. A resync decides every service again from live
// verdicts and has the ipvs and vip reconcilers re-read the kernel; any
// other pass takes over the decisions still valid. Each reconciler diffs
// against its own cache, so a pass that changes one service writes one
// service.
func (e *Engine) reconcile(ctx context.Context, kind passKind) {
	start := e.now()
	if kind == kindResync {
		clear(e.decided)
	}
	e.apply(ctx, e.input().compute(e.decided, &e.desired), nil, kind, start)
}

// apply is reconcile's pass for d. changed, when not nil, lists the
// indexes of d.IPVS.Services that may differ from the last pass's (a
// health pass's, see redecide): the ipvs reconciler looks at those only.
func (e *Engine) apply(ctx context.Context, d Desired, changed []int, kind passKind, start time.Time) {
	e.qualified = d.Qualified
	now := e.now()
	e.passNow = now

	settled := e.settled(d)
	e.leaving = e.leavingAfter(d, now, settled)
	want, vips := e.withHeld(d)
	if len(e.leaving) == 0 {
		// want is d.IPVS, which the last pass handed too when it held no
		// VIP either (a different length otherwise: not in step).
		want.Changed = changed
	}

	var errs []error
	// 0. A reload's bgp block, before any route: the routes then go out
	// over the sessions it sets up. Not in health passes, which come at
	// the verdicts' rate: while the speaker refuses the block, each try
	// reads the password files that failed again. The retries try it
	// (finish keeps one armed), and so do reloads and resyncs.
	if kind != kindHealth {
		if err := e.configureBGP(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	// 1. Withdraw what must go, keeping what stays, before the data plane
	// changes under it; a pass where no route goes or changes has no such
	// step (the announcer gets every route in step 3 anyway).
	if !settled {
		if keep := routesWithin(e.announced, d.Routes); !sameRoutes(keep, e.announced) {
			if err := e.announce(ctx, keep, d.VIPStatus); err != nil {
				errs = append(errs, err)
			}
		}
	}
	// 2. The data plane.
	if err := e.applyIPVS(ctx, want, kind == kindResync); err != nil {
		errs = append(errs, err)
	}
	// The retry of a pass that failed reads the VIPs' link again too: the
	// vip reconciler keeps its cache over a failure that lasts (an address
	// not usable, a clean-up that keeps failing), which the health passes
	// meanwhile take, and only a read sees it end.
	applyVIPs := e.opts.VIPs.Apply
	if kind == kindResync || (!e.retryAt.IsZero() && !now.Before(e.retryAt)) {
		applyVIPs = e.opts.VIPs.Resync
	}
	vr, err := applyVIPs(ctx, vips)
	if err != nil {
		errs = append(errs, err)
	}
	e.lastVIPs = vr
	// 3. Announce only VIPs whose address is in place. The announcer gets
	// every route on every pass and diffs them itself; with the routes and
	// the VIPs in place that it took last, they are the routes it took.
	routes := e.announced
	if !settled || !sameSlice(vr.Held, e.heldIn) {
		routes = nil
		for _, r := range d.Routes {
			if vr.Holds(r.Prefix.Addr()) {
				if routes == nil {
					routes = make([]Route, 0, len(d.Routes))
				}
				routes = append(routes, r)
			}
		}
	}
	e.routesIn, e.heldIn = nil, nil
	if err := e.announce(ctx, routes, d.VIPStatus); err != nil {
		errs = append(errs, err)
	} else if e.announceStarted {
		e.routesIn, e.heldIn = d.Routes, vr.Held
	}
	e.finish(d, errors.Join(errs...), kind.String(), start)
	if e.remark {
		// A real's tunnel mark is a foreign service's (avoidForeignMarks):
		// its plan is made again, for the next pass.
		e.setConfig(e.cfg)
	}
}

// settled reports whether d's routes are those of the last pass whose
// routes the announcer took in full (the same slice: a health pass that
// changes no route hands them on as they are, and a compute makes a new
// one). Then announced is every route of d whose VIP was in place, with
// nothing to withdraw, and no route outside d's configuration: a health
// pass costs its services, not a walk of every route.
func (e *Engine) settled(d Desired) bool {
	return !e.announceFailed && sameSlice(d.Routes, e.routesIn)
}

// sameSlice reports whether a and b are the same non-empty slice.
func sameSlice[T any](a, b []T) bool { return len(a) > 0 && len(a) == len(b) && &a[0] == &b[0] }

// leavingAfter is e.leaving as a pass for d at now leaves it: a VIP no
// longer configured that was announced is withdrawn now and its data plane
// removed after the hold time; when the announcer is settled on d's routes
// (settled) none is. It does not change e.
func (e *Engine) leavingAfter(d Desired, now time.Time, settled bool) map[netip.Addr]leaving {
	out := maps.Clone(e.leaving)
	if out == nil {
		out = map[netip.Addr]leaving{}
	}
	inConfig := func(v netip.Addr) bool {
		_, ok := slices.BinarySearchFunc(d.VIPs, v, netip.Addr.Compare)
		return ok
	}
	announced := e.announced
	if settled {
		announced = nil
	}
	for _, r := range announced {
		v := r.Prefix.Addr()
		if _, held := out[v]; !held && !inConfig(v) {
			var svcs []ipvs.Service
			for _, s := range e.ipvsWant.Services {
				if s.Key.Addr == v {
					svcs = append(svcs, s)
				}
			}
			svcs = append(svcs, e.markServicesOn(v)...)
			out[v] = leaving{until: now.Add(e.cfg.Daemon.StopHold), services: svcs}
		}
	}
	for v, l := range out {
		if inConfig(v) || !now.Before(l.until) {
			delete(out, v)
		}
	}
	return out
}

// markServicesOn is the IPVS services of the fwmark services that announced
// VIP v in the last pass. Their keys carry a mark, not v, so they are found
// by name among the services of v's status; without them a withdrawn fwmark
// service would go at once while its VIP is held, and the connections the
// routers still send during the hold would be reset.
func (e *Engine) markServicesOn(v netip.Addr) []ipvs.Service {
	prev := &e.desired
	k, ok := slices.BinarySearchFunc(prev.VIPStatus, v, func(vs VIPStatus, a netip.Addr) int { return vs.VIP.Compare(a) })
	if !ok {
		return nil
	}
	var out []ipvs.Service
	for _, name := range prev.VIPStatus[k].Services {
		j, ok := slices.BinarySearchFunc(prev.Services, name, func(s ServiceStatus, n string) int { return cmp.Compare(s.Name, n) })
		if !ok || j >= len(prev.IPVS.Services) {
			continue
		}
		if s := prev.IPVS.Services[j]; s.Key.FWMark != 0 && s.Name == name {
			out = append(out, s)
		}
	}
	return out
}

// withHeld is d's IPVS services and VIPs with those of the VIPs withdrawn
// and held (leaving), in VIP order. With none held it is d's own slices:
// nothing writes to them in place.
func (e *Engine) withHeld(d Desired) (ipvs.Desired, []netip.Addr) {
	return withHeld(d, e.leaving)
}

func withHeld(d Desired, leaving map[netip.Addr]leaving) (ipvs.Desired, []netip.Addr) {
	if len(leaving) == 0 {
		return d.IPVS, d.VIPs
	}
	held := slices.SortedFunc(maps.Keys(leaving), netip.Addr.Compare)
	want := ipvs.Desired{Services: slices.Clone(d.IPVS.Services)}
	for _, v := range held {
		for _, s := range leaving[v].services {
			// A held fwmark service whose mark d uses again (the service
			// kept without its VIP, or the mark given to another) is d's:
			// one key, one service.
			if s.Key.FWMark != 0 && slices.ContainsFunc(d.IPVS.Services, func(x ipvs.Service) bool { return x.Key == s.Key }) {
				continue
			}
			want.Services = append(want.Services, s)
		}
	}
	vips := slices.Concat(d.VIPs, held)
	slices.SortFunc(vips, netip.Addr.Compare)
	return want, vips
}

// applyIPVS hands want to the ipvs reconciler, which writes only what
// differs from its cache; a full pass is a Resync (the kernel is read
// again).
func (e *Engine) applyIPVS(ctx context.Context, want ipvs.Desired, full bool) error {
	apply := e.opts.IPVS.Apply
	if full {
		apply = e.opts.IPVS.Resync
	}
	res, err := apply(ctx, want)
	if err == nil || len(res.Foreign) > 0 { // a pass whose read failed knows none
		e.avoidForeignMarks(res.Foreign)
	}
	want.Changed = nil
	e.ipvsWant = want
	e.lastWrites, e.lastDrain = res.Writes, res.Draining
	e.nextDrain = res.NextDrain
	e.draining = e.draining[:0]
	for _, d := range res.Draining {
		if n := len(e.draining); n == 0 || e.draining[n-1] != d.Service {
			e.draining = append(e.draining, d.Service)
		}
	}
	return err
}

// avoidForeignMarks keeps the tunnelled checks off the marks of fwmark
// services kglb did not create (foreign, as the ipvs reconciler last read
// them): the reconciler does not touch such a service, so a real given its
// mark would be probed through it, to its reals. A real holding one has its
// plan made again after the pass (remark); the pass failed on the foreign
// service, and its retry carries the real's probes on a mark of its own.
func (e *Engine) avoidForeignMarks(foreign []ipvs.Key) {
	var marks []uint32
	for _, k := range foreign {
		if k.FWMark != 0 {
			marks = append(marks, k.FWMark)
		}
	}
	if len(marks) == 0 && len(e.avoided) == 0 {
		return
	}
	e.avoided = marks
	if e.marks.Avoid(marks) {
		e.remark = true
	}
}

// verdicts applies verdict changes: the services they touch are decided
// again (redecide), and the result goes through reconcile's pass.
func (e *Engine) verdicts(ctx context.Context, changes []health.Change) {
	start := e.now()
	if d, changed, ok := e.redecide(changes); ok {
		e.apply(ctx, d, changed, kindHealth, start)
	}
}

// redecide is the desired state after verdict changes: the services that
// use the changed targets are decided again, and the VIPs of those
// services, every other decision is kept from the last pass as it is, so
// a verdict among 100k reals costs the decisions of its services rather
// than a compute of every service (at 10,000 services BenchmarkHealthChange's
// p50 is several times its 10 ms target with a whole compute). It costs
// the services it touches, not the number of services
// (BenchmarkVerdictScale): the last pass's Desired is changed in place,
// under the lock that Status and the metrics read it with; its routes,
// which the announcer may keep, are copied when one changes. changed is
// the indexes of the IPVS services decided again, for the ipvs
// reconciler. The pass that applies it is reconcile's. It reports false
// when no service uses the targets.
func (e *Engine) redecide(changes []health.Change) (d Desired, changed []int, ok bool) {
	var affected []int
	for _, c := range changes {
		affected = e.plan.servicesOf(c.Key, affected)
		if e.log.IsDebug() { // the health scheduler logs each change once
			e.log.Debug("real health changed", "real", c.Key.Real.String(), "check", c.Key.Spec.Type.String(), "state", c.State.String(), "reason", c.Reason)
		}
	}
	if len(affected) == 0 {
		return Desired{}, nil, false
	}
	slices.Sort(affected)
	affected = slices.Compact(affected)
	in := e.input()
	d = e.desired
	type redecided struct {
		pos int
		st  ServiceStatus
		is  ipvs.Service
	}
	// Decide first, then write under the lock: deciding asks the prober.
	news := make([]redecided, 0, len(affected))
	var vips []netip.Addr
	for _, i := range affected {
		svc := e.cfg.Services[i]
		if !svc.Enabled {
			continue
		}
		e.decided[i] = decision{}
		j, found := slices.BinarySearchFunc(d.Services, svc.Name, func(s ServiceStatus, n string) int { return cmp.Compare(s.Name, n) })
		if !found {
			continue
		}
		st, is := in.service(i, svc)
		if len(e.adopted) > 0 {
			e.forgetAdopted(is.Key, st.Reals)
		}
		news = append(news, redecided{j, st, is})
		e.decided[i] = decision{ok: true, qualified: in.Qualified[svc.Name], pos: int32(j)}
		if svc.VIP.IsValid() {
			vips = append(vips, svc.VIP)
		}
	}
	slices.SortFunc(vips, netip.Addr.Compare)
	vips = slices.Compact(vips)
	e.mu.Lock()
	for _, n := range news {
		d.Services[n.pos], d.IPVS.Services[n.pos] = n.st, n.is
		d.Qualified[n.st.Name] = n.st.Qualified
		changed = append(changed, n.pos)
	}
	d.Routes = redecideVIPs(e.cfg, &d, vips)
	e.mu.Unlock()
	return d, changed, true
}

// forgetAdopted ends the adoption of the reals of service k that have a
// verdict (reals, as just decided): an adopted weight holds only until a
// real's first verdict. Kept after it, a real that later starts unknown
// again (removed and added back, or given a new check) would get the weight
// the kernel had when the daemon started, even when it was last seen down,
// instead of 0 until it passes. Verdicts reach the engine here, so this
// costs the services they touch; deciding no real leaves the map alone, and
// the decision memo stays valid (a decided real never used its adoption).
func (e *Engine) forgetAdopted(k ipvs.Key, reals []RealStatus) {
	ws := e.adopted[k]
	if len(ws) == 0 {
		return
	}
	for _, r := range reals {
		if r.State != health.Unknown {
			delete(ws, ipvs.RealKey{Addr: r.Addr.Addr(), Port: r.Addr.Port()})
		}
	}
	if len(ws) == 0 {
		delete(e.adopted, k)
	}
}

// collect takes the first batch and any others already waiting, so a burst
// of verdicts is one pass.
func (e *Engine) collect(first []health.Change) []health.Change {
	out := first
	for {
		select {
		case cs := <-e.opts.Prober.Changes():
			out = append(out, cs...)
		default:
			return out
		}
	}
}

// announce hands the announcer routes, on every pass: the announcer diffs
// them against what it holds, and routes it already holds cost it a
// comparison and send nothing. With Options.FullFirstRound the first call
// waits until no VIP (vips) is in its initial health round.
func (e *Engine) announce(ctx context.Context, routes []Route, vips []VIPStatus) error {
	if e.opts.Announcer == nil {
		return nil
	}
	if e.opts.FullFirstRound && !e.announceStarted &&
		slices.ContainsFunc(vips, func(v VIPStatus) bool { return v.Reason == ReasonInitialRound }) {
		return nil
	}
	first := !e.announceStarted
	e.announceStarted = true
	if err := e.opts.Announcer.Apply(ctx, routes); err != nil {
		e.announceFailed = true
		if first {
			// After a planned restart the speaker takes its bgp block at
			// its first Apply (bgp.Options.Restarting), and a neighbor it
			// refuses there fails that Apply; a retried Apply, with the
			// routes in, succeeds and would leave the neighbor out until
			// the next edit. The retries hand the block again instead.
			e.bgpPending = true
		}
		return fmt.Errorf("announce routes: %w", err)
	}
	e.announced, e.announceFailed = routes, false
	return nil
}

// configureBGP hands the announcer cfg's bgp block while it has not taken
// it (bgpPending). The speaker carries on past a neighbor that fails (an
// unreadable password file) and diffs what it is handed, so handing the
// same block again, as a retry, sets up what failed and touches nothing
// else. A resync with no block pending does not hand it: the password
// files are read at a reload or a start only.
func (e *Engine) configureBGP(ctx context.Context) error {
	if !e.bgpPending {
		return nil
	}
	b, ok := e.opts.Announcer.(BGPPlanner)
	if !ok {
		e.bgpPending = false
		return nil
	}
	retry := !e.bgpReload
	e.bgpReload = false
	if err := b.Configure(ctx, e.cfg, retry); err != nil {
		return fmt.Errorf("configure bgp: %w", err)
	}
	e.bgpPending = false
	return nil
}

// retryFirst is the wait before the first retry of a pass that did not
// complete: a write that failed for a passing reason (ENOMEM, a busy
// netlink socket, a router that dropped a session) is put right within a
// second or so, instead of at the next config, verdict or resync.
const retryFirst = time.Second

func (e *Engine) finish(d Desired, err error, kind string, start time.Time) {
	e.desired = d
	if err != nil {
		// Each pass hands the reconcilers all of the desired state, so
		// any pass that completes, a retry or another, puts right what
		// this one left; one that keeps failing is retried ever less
		// often, at most once a resync interval. A health pass arms one
		// only when none is: health passes come at the verdicts' rate, and
		// each would push the retry back (and double its backoff), where
		// the retry is what reads the kernel again (a lasting VIP failure
		// is the vip reconciler's cached answer until a Resync).
		if kind != kindHealth.String() || e.retryAt.IsZero() {
			e.retryIn = min(max(2*e.retryIn, retryFirst), max(e.cfg.Daemon.ResyncInterval, retryFirst))
			e.retryAt = e.now().Add(e.retryIn)
		}
		// A failure that lasts (an unreadable password file, an address
		// that failed duplicate address detection) fails every pass, and
		// health passes come at the verdicts' rate: those repeat it at
		// Debug. The others, the retries among them, say it at Error, at
		// most once a resync interval once the backoff is full.
		log := e.log.Error
		if kind == kindHealth.String() && e.errs != nil && e.errs.Error() == err.Error() {
			log = e.log.Debug
		}
		log("reconcile incomplete; retrying", "kind", kind, "in", e.retryIn.String(), "err", err)
	} else if !e.bgpPending {
		// A health pass completes with the bgp block still pending (it
		// does not try it): the retry armed stays.
		e.retryAt, e.retryIn = time.Time{}, 0
	}
	if m := e.opts.Metrics; m != nil {
		m.observe(kind, err, e.now().Sub(start))
	}
	e.mu.Lock()
	e.status = d
	if err != nil || !e.bgpPending {
		// A health pass, which does not try a pending bgp block, leaves
		// the refusal that is still there in the status.
		e.errs = err
	}
	e.mu.Unlock()
}

// Stop withdraws every route, waits hold, and with cleanup removes kglb's
// own IPVS services and VIPs; without, the data plane stays for a hitless
// restart. With nothing announced (and no failed Apply that may have left
// some routes out) there is nothing to withdraw and no hold. Call it after
// Run has returned.
func (e *Engine) Stop(ctx context.Context, cleanup bool) error {
	var errs []error
	if e.opts.Announcer != nil && (len(e.announced) > 0 || e.announceFailed) {
		if err := e.opts.Announcer.WithdrawAll(ctx); err != nil {
			errs = append(errs, fmt.Errorf("withdraw routes: %w", err))
		}
		e.announced, e.announceFailed = nil, false
		e.log.Info("routes withdrawn; holding before touching the data plane", "hold", e.cfg.Daemon.StopHold.String())
		select {
		case <-time.After(e.cfg.Daemon.StopHold):
		case <-ctx.Done():
		}
	}
	if cleanup {
		if _, err := e.opts.IPVS.Apply(ctx, ipvs.Desired{}); err != nil {
			errs = append(errs, err)
		}
		if _, err := e.opts.VIPs.Apply(ctx, nil); err != nil {
			errs = append(errs, err)
		}
		e.log.Info("removed kglb's IPVS services and VIPs")
	}
	return errors.Join(errs...)
}

// routesWithin returns the routes of want whose prefix is already in have:
// the withdrawal step (attribute changes included, additions left out).
// Routes come sorted by prefix from Compute, and a walk in step finds them.
func routesWithin(have, want []Route) []Route {
	byPrefix := func(a, b Route) int { return a.Prefix.Compare(b.Prefix) }
	out := make([]Route, 0, min(len(have), len(want)))
	if !slices.IsSortedFunc(have, byPrefix) || !slices.IsSortedFunc(want, byPrefix) {
		in := make(map[netip.Prefix]bool, len(have))
		for _, r := range have {
			in[r.Prefix] = true
		}
		for _, r := range want {
			if in[r.Prefix] {
				out = append(out, r)
			}
		}
		return out
	}
	i := 0
	for _, r := range want {
		for i < len(have) && have[i].Prefix.Compare(r.Prefix) < 0 {
			i++
		}
		if i < len(have) && have[i].Prefix == r.Prefix {
			out = append(out, r)
		}
	}
	return out
}

func sameRoutes(a, b []Route) bool { return slices.EqualFunc(a, b, sameRoute) }

func sameRoute(x, y Route) bool {
	return x.Prefix == y.Prefix && x.NextHop == y.NextHop && x.MED == y.MED && x.HasMED == y.HasMED &&
		x.LocalPref == y.LocalPref && x.HasLocalPref == y.HasLocalPref && x.Prepend == y.Prepend &&
		x.Degraded == y.Degraded && slices.Equal(x.Communities, y.Communities) &&
		slices.Equal(x.LargeCommunities, y.LargeCommunities)
}
