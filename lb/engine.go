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

// IPVS is the part of the ipvs reconciler the engine drives.
type IPVS interface {
	Read(ctx context.Context) (ipvs.Snapshot, error)
	Apply(ctx context.Context, d ipvs.Desired) (ipvs.Result, error)
	Resync(ctx context.Context, d ipvs.Desired) (ipvs.Result, error)
	ApplyService(ctx context.Context, s ipvs.Service) (ipvs.Result, error)
}

// VIPs is the part of the vip reconciler the engine drives.
type VIPs interface {
	Apply(ctx context.Context, desired []netip.Addr) (vip.Result, error)
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
	cfg       *config.Config
	plan      *Plan
	marksErr  error // of the last marks.Sync, logged again with its plan
	adopted   map[ipvs.Key]map[ipvs.RealKey]uint16
	qualified map[string]bool
	decided   decisions // per service of cfg, where in desired, while still valid
	desired   Desired
	announced []Route
	leaving   map[netip.Addr]leaving // VIPs withdrawn, held in the data plane
	nextDrain time.Time

	// What was last handed to each reconciler and prober, and whether that
	// was reached in full: only then may a pass hand over only what
	// differs (or nothing). A failure anywhere makes the next pass whole.
	ipvsWant   ipvs.Desired
	ipvsOK     bool
	draining   []ipvs.Key // services with reals draining, as of the last ipvs result
	vipsWant   []netip.Addr
	vipsRes    vip.Result
	vipsOK     bool
	announceOK bool
	proberOK   bool
	holdProbes bool // the first pass has not run: the prober waits
	// The last Apply of the announcer failed: it may hold routes that
	// announced lacks (the speaker carries on past a route that fails),
	// so a stop withdraws even when announced is empty.
	announceFailed bool

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
	return &Engine{
		opts: opts, log: opts.Logger, now: opts.Now, marks: marks,
		cfg: cfg, qualified: map[string]bool{}, leaving: map[netip.Addr]leaving{},
		plans: make(chan planReq),
	}, nil
}

// Status returns the last computed state with its reasons.
func (e *Engine) Status() (Desired, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.status, e.errs
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
// deadline, until ctx ends. Errors of one pass are logged and counted; the
// next pass retries.
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
	e.reconcile(ctx, false)
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
	for {
		e.armDrain(drain)
		select {
		case <-ctx.Done():
			return nil
		case cfg := <-configs:
			if cfg.Daemon.ResyncInterval != e.cfg.Daemon.ResyncInterval {
				resync.Reset(cfg.Daemon.ResyncInterval)
			}
			e.reload(ctx, cfg)
		case chs := <-e.opts.Prober.Changes():
			e.healthChanged(ctx, e.collect(chs))
		case <-resync.C:
			e.reconcile(ctx, true)
		case <-drain.C:
			e.reconcile(ctx, false)
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

// nextWake is when the next drain or hold ends, or the next drain poll is
// due; zero when nothing is draining or held.
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

// reconcile computes the whole desired state and applies it: withdraw first,
// then the data plane, then announce what the data plane now holds. A full
// pass (resync) decides every service again from live verdicts and re-reads
// the kernel; any other takes over the decisions still valid and, when the
// last pass reached everything, writes only the services that differ.
func (e *Engine) reconcile(ctx context.Context, full bool) {
	start := e.now()
	if full {
		clear(e.decided)
	}
	e.apply(ctx, e.input().compute(e.decided, &e.desired), full, start)
}

// apply is reconcile's pass for d.
func (e *Engine) apply(ctx context.Context, d Desired, full bool, start time.Time) {
	e.qualified = d.Qualified
	now := e.now()
	e.passNow = now

	e.leaving = e.leavingAfter(d, now)
	want, vips := e.withHeld(d)

	var errs []error
	// 1. Withdraw what must go, keeping what stays.
	keep := routesWithin(e.announced, d.Routes)
	if !sameRoutes(keep, e.announced) {
		if err := e.announce(ctx, keep, d.VIPStatus); err != nil {
			errs = append(errs, err)
		}
	}
	// 2. The data plane.
	if err := e.applyIPVS(ctx, want, full); err != nil {
		errs = append(errs, err)
	}
	vr := e.vipsRes
	if full || !e.vipsOK || !slices.Equal(vips, e.vipsWant) {
		var err error
		vr, err = e.opts.VIPs.Apply(ctx, vips)
		if err != nil {
			errs = append(errs, err)
		}
		e.vipsWant, e.vipsRes, e.vipsOK = vips, vr, err == nil
		e.lastVIPs = vr
	}
	// 3. Announce only VIPs whose address is in place.
	var routes []Route
	for _, r := range d.Routes {
		if vr.Holds(r.Prefix.Addr()) {
			if routes == nil {
				routes = make([]Route, 0, len(d.Routes))
			}
			routes = append(routes, r)
		}
	}
	if err := e.announce(ctx, routes, d.VIPStatus); err != nil {
		errs = append(errs, err)
	}
	e.finish(d, errors.Join(errs...), "full", start)
}

// leavingAfter is e.leaving as a pass for d at now leaves it: a VIP no
// longer configured that was announced is withdrawn now and its data plane
// removed after the hold time. It does not change e.
func (e *Engine) leavingAfter(d Desired, now time.Time) map[netip.Addr]leaving {
	out := maps.Clone(e.leaving)
	if out == nil {
		out = map[netip.Addr]leaving{}
	}
	inConfig := func(v netip.Addr) bool {
		_, ok := slices.BinarySearchFunc(d.VIPs, v, netip.Addr.Compare)
		return ok
	}
	for _, r := range e.announced {
		v := r.Prefix.Addr()
		if _, held := out[v]; !held && !inConfig(v) {
			var svcs []ipvs.Service
			for _, s := range e.ipvsWant.Services {
				if s.Key.Addr == v {
					svcs = append(svcs, s)
				}
			}
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
		want.Services = append(want.Services, leaving[v].services...)
	}
	vips := slices.Concat(d.VIPs, held)
	slices.SortFunc(vips, netip.Addr.Compare)
	return want, vips
}

// Bounds of a pass that writes service by service (ApplyService) rather
// than handing the reconciler the whole table (Apply): each new service
// records ownership on its own, and past a few dozen changes one diff of
// the whole table is as cheap.
const (
	maxScoped      = 64
	maxScopedAdds  = 4
	maxScopedDrain = 16
)

// applyIPVS hands want to the ipvs reconciler. A full pass is a Resync.
// Otherwise, when the last pass reached the kernel in full, the services
// that differ from it are written one by one with ApplyService, along with
// those that have reals draining (each ApplyService of one deletes the reals
// whose drain is over, as Apply would); with nothing to write, nothing is
// called. Only Apply removes services, so a pass that removes one, or
// follows a failure, is a whole Apply.
func (e *Engine) applyIPVS(ctx context.Context, want ipvs.Desired, full bool) error {
	var res ipvs.Result
	var err error
	switch changed, ok := e.scopedChanges(want, full); {
	case full:
		res, err = e.opts.IPVS.Resync(ctx, want)
	case !ok:
		res, err = e.opts.IPVS.Apply(ctx, want)
	case len(changed) == 0:
		e.ipvsWant, e.lastWrites = want, ipvs.Writes{}
		return nil
	default:
		var errs []error
		reread := false
		for _, s := range changed {
			r, err := e.opts.IPVS.ApplyService(ctx, s)
			if err != nil {
				errs = append(errs, err)
			}
			for k := range r.Writes {
				res.Writes[k] += r.Writes[k]
			}
			// Draining covers every service: the last result has it all.
			res.NextDrain, res.Draining = r.NextDrain, r.Draining
			reread = reread || r.FullRead
		}
		err = errors.Join(errs...)
		if reread {
			// The reconciler found its cache wrong and read the kernel
			// again: someone changed it, maybe elsewhere too.
			var aerr error
			res, aerr = e.opts.IPVS.Apply(ctx, want)
			err = errors.Join(err, aerr)
		}
	}
	e.ipvsWant, e.ipvsOK = want, err == nil
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

// scopedChanges returns the services to write one by one, and false when
// the pass must be a whole Apply.
func (e *Engine) scopedChanges(want ipvs.Desired, full bool) ([]ipvs.Service, bool) {
	if full || !e.ipvsOK || len(e.draining) > maxScopedDrain {
		return nil, false
	}
	changed, added, ok := ipvsChanges(e.ipvsWant.Services, want.Services)
	if !ok || added > maxScopedAdds {
		return nil, false
	}
	for _, k := range e.draining {
		if slices.ContainsFunc(changed, func(s ipvs.Service) bool { return s.Key == k }) {
			continue
		}
		i := slices.IndexFunc(want.Services, func(s ipvs.Service) bool { return s.Key == k })
		if i < 0 {
			return nil, false
		}
		changed = append(changed, want.Services[i])
	}
	if len(changed) > maxScoped {
		return nil, false
	}
	return changed, true
}

// healthChanged applies verdict changes: only the services that use the
// changed targets are recomputed and written, so one change among 100k reals
// costs one service's diff, not the whole table's.
func (e *Engine) healthChanged(ctx context.Context, changes []health.Change) {
	start := e.now()
	var affected []int
	for _, c := range changes {
		affected = e.plan.servicesOf(c.Key, affected)
		if e.log.IsDebug() { // the health scheduler logs each change once
			e.log.Debug("real health changed", "real", c.Key.Real.String(), "check", c.Key.Spec.Type.String(), "state", c.State.String(), "reason", c.Reason)
		}
	}
	if len(affected) == 0 {
		return
	}
	slices.Sort(affected)
	affected = slices.Compact(affected)
	in := e.input()
	d := e.desired
	d.Services = slices.Clone(d.Services)
	d.IPVS.Services = slices.Clone(d.IPVS.Services)
	d.Qualified = maps.Clone(e.qualified)
	var errs []error
	for _, i := range affected {
		svc := e.cfg.Services[i]
		if !svc.Enabled {
			continue
		}
		st, is := in.service(i, svc)
		d.Qualified[svc.Name] = st.Qualified
		e.decided[i] = decision{}
		if j, ok := slices.BinarySearchFunc(d.Services, svc.Name, func(s ServiceStatus, n string) int { return cmp.Compare(s.Name, n) }); ok {
			d.Services[j] = st
			d.IPVS.Services[j] = is
			e.decided[i] = decision{ok: true, qualified: in.Qualified[svc.Name], pos: int32(j)}
		}
		res, err := e.opts.IPVS.ApplyService(ctx, is)
		if err != nil || res.FullRead {
			e.ipvsOK = false
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	e.ipvsWant, _ = e.withHeld(d)
	e.qualified = d.Qualified
	d.VIPStatus, d.Routes = decideAll(e.cfg, d.Services)

	// Routes: withdraw at once; announce only VIPs already announced or
	// whose data plane the last full pass put in place.
	if err := e.announce(ctx, routesWithinVIPs(d.Routes, e.desired.VIPs), d.VIPStatus); err != nil {
		errs = append(errs, err)
	}
	e.finish(d, errors.Join(errs...), "health", start)
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

// announce hands the announcer routes, unless it already holds exactly
// those from the last call. With Options.FullFirstRound the first call
// waits until no VIP (vips) is in its initial health round.
func (e *Engine) announce(ctx context.Context, routes []Route, vips []VIPStatus) error {
	if e.opts.Announcer == nil || e.announceOK && sameRoutes(routes, e.announced) {
		return nil
	}
	if e.opts.FullFirstRound && !e.announceOK && !e.announceFailed &&
		slices.ContainsFunc(vips, func(v VIPStatus) bool { return v.Reason == ReasonInitialRound }) {
		return nil
	}
	if err := e.opts.Announcer.Apply(ctx, routes); err != nil {
		e.announceOK, e.announceFailed = false, true
		return fmt.Errorf("announce routes: %w", err)
	}
	e.announced, e.announceOK, e.announceFailed = routes, true, false
	return nil
}

func (e *Engine) finish(d Desired, err error, kind string, start time.Time) {
	e.desired = d
	if err != nil {
		e.log.Error("reconcile incomplete; retrying on the next pass", "kind", kind, "err", err)
	}
	if m := e.opts.Metrics; m != nil {
		m.observe(d, kind, err, e.now().Sub(start))
	}
	e.mu.Lock()
	e.status, e.errs = d, err
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

// routesWithinVIPs keeps the routes whose VIP is in vips (sorted).
func routesWithinVIPs(routes []Route, vips []netip.Addr) []Route {
	var out []Route
	for _, r := range routes {
		if _, ok := slices.BinarySearchFunc(vips, r.Prefix.Addr(), netip.Addr.Compare); ok {
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
