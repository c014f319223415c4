package lb

import (
	"context"
	"fmt"
	"strings"

	"github.com/kglb/kglb/config"
	"github.com/kglb/kglb/health"
	"github.com/kglb/kglb/ipvs"
	"github.com/kglb/kglb/vip"
)

// IPVSRecorder is an IPVS whose passes can record what they write, and the
// state they write over (*ipvs.Reconciler): a reload describes itself with
// it, at the cost of what it writes.
type IPVSRecorder interface {
	StartRecord()
	StopRecord() ipvs.Planned
}

// BGPPlanner is an Announcer that can say what a configuration's bgp
// block and a set of routes would change, per neighbor, and that applies
// the bgp block at a reload (the daemon's adapter of the speaker). The
// engine plans with it (PlanConfig), and at a reload calls PlanBGP just
// before the pass that calls Configure, so the reload logs what it
// changes; a pass whose Configure fails is incomplete, and retried. The
// reload's Configure reads every neighbor's password file; one with retry
// set hands the block again after a refusal (bgp.Speaker.RetryConfig),
// and reads only the files that could not be read before.
type BGPPlanner interface {
	PlanBGP(cfg *config.Config, routes []Route) (BGPPlan, error)
	Configure(ctx context.Context, cfg *config.Config, retry bool) error
}

// BGPPlan is what a bgp block and routes change: the sessions added,
// removed or reset, and per neighbor the routes it is sent.
type BGPPlan struct {
	Sessions  []SessionChange
	Neighbors []NeighborChange
}

// reload makes cfg current and applies it, and describes what the pass did
// as the Review `kglb plan` shows (PlanConfig just before would have
// returned the same, TestReloadLogsItsPlan): the IPVS writes the pass
// recorded over the state they went over, the VIPs it added and removed,
// the routes it handed the announcer and, per neighbor, what the speaker
// was told, the health of the services whose probes changed. It logs that
// at Info, compact (Review.Compact). The description costs what the pass
// wrote, not a plan's copy of the reconcilers' state
// (BenchmarkEngineEdit).
func (e *Engine) reload(ctx context.Context, cfg *config.Config) {
	start := e.now()
	old, announced, leavingBefore := e.cfg, e.announced, e.leaving
	rec, _ := e.opts.IPVS.(IPVSRecorder)
	if rec != nil {
		rec.StartRecord()
	}
	e.recording = true
	e.setConfig(cfg)
	e.recording = false
	kept, changed := e.keptBefore, e.probesChanged
	e.keptBefore, e.probesChanged = nil, nil

	d := e.input().compute(e.decided, &e.desired)
	var bp BGPPlan
	var bgpErr error
	if b, ok := e.opts.Announcer.(BGPPlanner); ok {
		bp, bgpErr = b.PlanBGP(cfg, d.Routes)
		// The pass below configures the speaker (configureBGP), and
		// its retries do again while that fails.
		e.bgpPending, e.bgpReload = true, true
	}
	e.lastWrites, e.lastDrain, e.lastVIPs = ipvs.Writes{}, nil, vip.Result{}
	e.apply(ctx, d, nil, kindPass, start)
	var ipl ipvs.Planned
	if rec != nil {
		ipl = rec.StopRecord()
	}
	ipl.Result.Draining = e.lastDrain

	lookup := func(t health.Target) bool {
		if v, ok := kept[t]; ok {
			return v
		}
		_, ok := e.opts.Prober.Lookup(t)
		return ok
	}
	var vw []vip.Write
	for _, a := range e.lastVIPs.Added {
		vw = append(vw, vip.Write{Op: "add", VIP: a})
	}
	for _, a := range e.lastVIPs.Removed {
		vw = append(vw, vip.Write{Op: "del", VIP: a})
	}
	rv := Review{IPVSWrites: ipl.Writes, VIPWrites: vw, Writes: kernelWrites(ipl.Writes, vw)}
	rv.Services = serviceChanges(old, cfg, e.plan, ipl, e.ipvsWant, d, lookup, func(i int) bool { return changed == nil || changed[i] }, e.passNow)
	rv.VIPs = vipChanges(vw, leavingBefore, e.leaving, e.passNow)
	if e.opts.Announcer != nil {
		rv.Routes = routeChanges(announced, e.announced)
	}
	rv.Sessions, rv.Neighbors = bp.Sessions, bp.Neighbors
	rv.Guard = e.guard(old, cfg)
	if bgpErr != nil {
		rv.Errors = append(rv.Errors, bgpErr.Error())
	}
	if _, err := e.Status(); err != nil {
		rv.Errors = append(rv.Errors, err.Error())
	}
	e.lastReload = rv
	if e.log.IsInfo() {
		kv := []any{"summary", rv.Summary(), "ipvs_writes", e.lastWrites.String()}
		if rv.Guard != "" {
			kv = append(kv, "guard", rv.Guard)
		}
		e.log.Info("reload applied", append(kv, "plan", rv.Compact(MaxLoggedPlan))...)
	}
}

// keptTargets is, for the services of plan whose probes are not carried
// over from the plan in force (c), whether each of their targets has a
// verdict now, before the prober is given the new targets; and which
// services those are (nil: every one, as at the first configuration).
func (e *Engine) keptTargets(plan *Plan, c carried) (map[health.Target]bool, map[int]bool) {
	kept := map[health.Target]bool{}
	if c.unchanged {
		return kept, map[int]bool{}
	}
	var changed map[int]bool
	if e.plan != nil {
		changed = map[int]bool{}
	}
	for i, s := range plan.cfg.Services {
		if !s.Enabled || i >= len(plan.services) {
			continue
		}
		if e.plan != nil {
			if c.plan[i] >= 0 && sameMarks(e.plan, plan, i) {
				continue
			}
			changed[i] = true
		}
		for j := range s.Reals {
			r := &s.Reals[j]
			if !r.Enabled {
				continue
			}
			for n := range plan.services[i].specs {
				if t, ok := plan.target(i, n, r); ok {
					_, known := e.opts.Prober.Lookup(t)
					kept[t] = known
				}
			}
		}
	}
	return kept, changed
}

// MaxLoggedPlan bounds the plan a reload logs, in bytes: past it the line
// ends with the number of changes left out (`kglb plan` shows them all).
const MaxLoggedPlan = 4096

// Compact renders the plan on one line of at most max bytes (plus the
// count of what was left out), for the log: groups separated by " | ",
// each a service, the VIPs, a neighbor's routes, with its changes in
// brackets, each written as `kglb plan` writes it.
func (r Review) Compact(max int) string {
	if r.Empty() {
		return "no changes"
	}
	type group struct {
		head  string
		items []string
	}
	var gs []group
	for _, s := range r.Services {
		g := group{head: s.Text()}
		for _, f := range s.Fields {
			g.items = append(g.items, f.Text())
		}
		for _, rl := range s.Reals {
			g.items = append(g.items, rl.Text())
		}
		if len(s.HealthUnknown) > 0 {
			g.items = append(g.items, s.HealthText())
		}
		gs = append(gs, g)
	}
	if len(r.VIPs) > 0 {
		g := group{head: "vips"}
		for _, v := range r.VIPs {
			g.items = append(g.items, v.Text())
		}
		gs = append(gs, g)
	}
	if len(r.Neighbors) > 0 {
		for _, n := range r.Neighbors {
			g := group{head: n.Text()}
			for _, rt := range n.Routes {
				g.items = append(g.items, rt.Text())
			}
			gs = append(gs, g)
		}
	} else if len(r.Routes) > 0 {
		g := group{head: "bgp routes"}
		for _, rt := range r.Routes {
			g.items = append(g.items, rt.Text())
		}
		gs = append(gs, g)
	}
	for _, x := range r.Errors {
		gs = append(gs, group{head: "failed: " + x})
	}
	var b strings.Builder
	left := 0
	for _, g := range gs {
		left += 1 + len(g.items)
	}
	for _, g := range gs {
		sep := ""
		if b.Len() > 0 {
			sep = " | "
		}
		if b.Len()+len(sep)+len(g.head) > max {
			break
		}
		b.WriteString(sep + g.head)
		left--
		n := 0
		for _, it := range g.items {
			open := "; "
			if n == 0 {
				open = " ["
			}
			if b.Len()+len(open)+len(it)+1 > max {
				break
			}
			b.WriteString(open + it)
			n++
			left--
		}
		if n > 0 {
			b.WriteString("]")
		}
		if n < len(g.items) {
			break
		}
	}
	if left > 0 {
		fmt.Fprintf(&b, " ... %d more changes not logged (kglb plan shows them all)", left)
	}
	return b.String()
}
