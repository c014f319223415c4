package lb

import (
	"cmp"
	"context"
	"errors"
	"fmt"
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
	Changes() <-chan health.Change
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
	byTarget  map[health.Target][]int // target -> indexes into cfg.Services
	adopted   map[ipvs.Key]map[ipvs.RealKey]uint16
	qualified map[string]bool
	desired   Desired
	ipvsWant  ipvs.Desired // what was last handed to the ipvs reconciler
	announced []Route
	leaving   map[netip.Addr]leaving // VIPs withdrawn, held in the data plane
	nextDrain time.Time

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
	e.setConfig(e.cfg)
	e.reconcile(ctx, false)

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
			e.setConfig(cfg)
			e.reconcile(ctx, false)
		case ch := <-e.opts.Prober.Changes():
			e.healthChanged(ctx, e.collect(ch))
		case <-resync.C:
			e.reconcile(ctx, true)
		case <-drain.C:
			e.reconcile(ctx, false)
		}
	}
}

func (e *Engine) armDrain(t *time.Timer) {
	next := e.nextDrain
	for _, l := range e.leaving {
		if next.IsZero() || l.until.Before(next) {
			next = l.until
		}
	}
	if next.IsZero() {
		t.Stop()
		return
	}
	t.Reset(max(next.Sub(e.now()), 0))
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
func (e *Engine) setConfig(cfg *config.Config) {
	marks, err := e.marks.Sync(TunnelReals(cfg))
	if err != nil {
		e.log.Error("tunnelled checks", "err", err)
	}
	plan, err := NewPlan(cfg, marks)
	if err != nil {
		e.log.Error("health check plan", "err", err)
	}
	byTarget := make(map[health.Target][]int)
	for i, svc := range cfg.Services {
		for _, ts := range plan.reals(svc.Name) {
			for _, t := range ts {
				if idx := byTarget[t]; len(idx) == 0 || idx[len(idx)-1] != i {
					byTarget[t] = append(byTarget[t], i)
				}
			}
		}
	}
	if err := e.opts.Prober.Update(plan.All()); err != nil {
		e.log.Error("health checks", "err", err)
	}
	e.mu.Lock()
	e.cfg, e.plan, e.byTarget = cfg, plan, byTarget
	e.mu.Unlock()
	if m := e.opts.Metrics; m != nil {
		m.setConfig(cfg)
	}
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
// then the data plane, then announce what the data plane now holds.
func (e *Engine) reconcile(ctx context.Context, full bool) {
	start := e.now()
	d := Compute(e.input())
	e.qualified = d.Qualified
	now := e.now()

	// A VIP no longer configured was announced: withdraw now, remove its
	// data plane after the hold time.
	inConfig := make(map[netip.Addr]bool, len(d.VIPs))
	for _, v := range d.VIPs {
		inConfig[v] = true
	}
	for _, r := range e.announced {
		v := r.Prefix.Addr()
		if _, held := e.leaving[v]; !inConfig[v] && !held {
			var svcs []ipvs.Service
			for _, s := range e.ipvsWant.Services {
				if s.Key.Addr == v {
					svcs = append(svcs, s)
				}
			}
			e.leaving[v] = leaving{until: now.Add(e.cfg.Daemon.StopHold), services: svcs}
		}
	}
	want := d.IPVS
	vips := slices.Clone(d.VIPs)
	for v, l := range e.leaving {
		if inConfig[v] || !now.Before(l.until) {
			delete(e.leaving, v)
			continue
		}
		want.Services = append(want.Services, l.services...)
		vips = append(vips, v)
	}
	slices.SortFunc(vips, netip.Addr.Compare)

	var errs []error
	// 1. Withdraw what must go, keeping what stays.
	keep := routesWithin(e.announced, d.Routes)
	if !sameRoutes(keep, e.announced) {
		if err := e.announce(ctx, keep); err != nil {
			errs = append(errs, err)
		}
	}
	// 2. The data plane.
	var res ipvs.Result
	var err error
	if full {
		res, err = e.opts.IPVS.Resync(ctx, want)
	} else {
		res, err = e.opts.IPVS.Apply(ctx, want)
	}
	if err != nil {
		errs = append(errs, err)
	}
	e.ipvsWant = want
	e.nextDrain = res.NextDrain
	vr, err := e.opts.VIPs.Apply(ctx, vips)
	if err != nil {
		errs = append(errs, err)
	}
	// 3. Announce only VIPs whose address is in place.
	var routes []Route
	for _, r := range d.Routes {
		if vr.Holds(r.Prefix.Addr()) {
			routes = append(routes, r)
		}
	}
	if err := e.announce(ctx, routes); err != nil {
		errs = append(errs, err)
	}
	e.finish(d, errors.Join(errs...), "full", start)
}

// healthChanged applies verdict changes: only the services that use the
// changed targets are recomputed and written, so one change among 100k reals
// costs one service's diff, not the whole table's.
func (e *Engine) healthChanged(ctx context.Context, changes []health.Change) {
	start := e.now()
	affected := map[int]bool{}
	for _, c := range changes {
		for _, i := range e.byTarget[c.Key] {
			affected[i] = true
		}
		e.log.Info("real health changed", "real", c.Key.Real.String(), "check", c.Key.Spec.Type.String(), "state", c.State.String(), "reason", c.Reason)
	}
	if len(affected) == 0 {
		return
	}
	in := e.input()
	d := e.desired
	d.Services = slices.Clone(d.Services)
	d.IPVS.Services = slices.Clone(d.IPVS.Services)
	d.Qualified = make(map[string]bool, len(e.qualified))
	for k, v := range e.qualified {
		d.Qualified[k] = v
	}
	var errs []error
	for i := range affected {
		svc := e.cfg.Services[i]
		if !svc.Enabled {
			continue
		}
		st, is := in.service(svc)
		d.Qualified[svc.Name] = st.Qualified
		for j := range d.Services {
			if d.Services[j].Name == svc.Name {
				d.Services[j] = st
				d.IPVS.Services[j] = is
			}
		}
		if _, err := e.opts.IPVS.ApplyService(ctx, is); err != nil {
			errs = append(errs, err)
		}
		for j := range e.ipvsWant.Services {
			if e.ipvsWant.Services[j].Key == is.Key {
				e.ipvsWant.Services[j] = is
			}
		}
	}
	e.qualified = d.Qualified
	d.VIPStatus, d.Routes = decideAll(e.cfg, d.Services)

	// Routes: withdraw at once; announce only VIPs already announced or
	// whose data plane the last full pass put in place.
	if err := e.announce(ctx, routesWithinVIPs(d.Routes, e.desired.VIPs)); err != nil {
		errs = append(errs, err)
	}
	e.finish(d, errors.Join(errs...), "health", start)
}

// collect takes the first change and any others already waiting, so a burst
// of verdicts is one pass.
func (e *Engine) collect(first health.Change) []health.Change {
	out := []health.Change{first}
	for {
		select {
		case c := <-e.opts.Prober.Changes():
			out = append(out, c)
		default:
			return out
		}
	}
}

func (e *Engine) announce(ctx context.Context, routes []Route) error {
	if e.opts.Announcer == nil {
		return nil
	}
	if err := e.opts.Announcer.Apply(ctx, routes); err != nil {
		return fmt.Errorf("announce routes: %w", err)
	}
	e.announced = routes
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
// restart. Call it after Run has returned.
func (e *Engine) Stop(ctx context.Context, cleanup bool) error {
	var errs []error
	if e.opts.Announcer != nil && len(e.announced) > 0 {
		if err := e.opts.Announcer.WithdrawAll(ctx); err != nil {
			errs = append(errs, fmt.Errorf("withdraw routes: %w", err))
		}
		e.announced = nil
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

// decideAll recomputes every VIP's decision from service statuses.
func decideAll(cfg *config.Config, sts []ServiceStatus) ([]VIPStatus, []Route) {
	byVIP := map[netip.Addr][]int{}
	var vips []netip.Addr
	for i, st := range sts {
		svc, ok := serviceByName(cfg, st.Name)
		if !ok || !svc.VIP.IsValid() {
			continue
		}
		if _, seen := byVIP[svc.VIP]; !seen {
			vips = append(vips, svc.VIP)
		}
		byVIP[svc.VIP] = append(byVIP[svc.VIP], i)
	}
	slices.SortFunc(vips, netip.Addr.Compare)
	var out []VIPStatus
	var routes []Route
	for _, v := range vips {
		vs, r := decideVIP(cfg, v, byVIP[v], sts)
		out = append(out, vs)
		if vs.Announced {
			routes = append(routes, r)
		}
	}
	return out, routes
}

func serviceByName(cfg *config.Config, name string) (config.Service, bool) {
	i, ok := slices.BinarySearchFunc(cfg.Services, name, func(s config.Service, n string) int { return cmp.Compare(s.Name, n) })
	if !ok {
		return config.Service{}, false
	}
	return cfg.Services[i], true
}

// routesWithin returns the routes of want whose prefix is already in have:
// the withdrawal step (attribute changes included, additions left out).
func routesWithin(have, want []Route) []Route {
	in := make(map[netip.Prefix]bool, len(have))
	for _, r := range have {
		in[r.Prefix] = true
	}
	var out []Route
	for _, r := range want {
		if in[r.Prefix] {
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

func sameRoutes(a, b []Route) bool {
	return slices.EqualFunc(a, b, func(x, y Route) bool {
		return x.Prefix == y.Prefix && x.NextHop == y.NextHop && x.MED == y.MED && x.HasMED == y.HasMED &&
			x.LocalPref == y.LocalPref && x.HasLocalPref == y.HasLocalPref && x.Prepend == y.Prepend &&
			x.Degraded == y.Degraded && slices.Equal(x.Communities, y.Communities) &&
			slices.Equal(x.LargeCommunities, y.LargeCommunities)
	})
}
