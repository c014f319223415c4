package lb

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kglb/kglb/config"
	"github.com/kglb/kglb/health"
	"github.com/kglb/kglb/ipvs"
	"github.com/kglb/kglb/vip"
)

// IPVSPlanner is an IPVS that can say what an Apply would write
// (*ipvs.Reconciler).
type IPVSPlanner interface {
	Plan(ctx context.Context, d ipvs.Desired) (ipvs.Planned, error)
}

// VIPPlanner is a VIPs that can say what an Apply would write
// (*vip.Reconciler).
type VIPPlanner interface {
	Plan(ctx context.Context, desired []netip.Addr) ([]vip.Write, vip.Result, error)
}

// Review is what applying a configuration now would do, as `kglb plan`
// prints it. docs/plan.md documents its JSON form.
type Review struct {
	// Services that change, grouped by VIP (sorted by VIP, then endpoint).
	Services []ServiceChange `json:"services"`
	VIPs     []VIPChange     `json:"vips"`
	// Routes is what the announcer is handed (the speaker then sends each
	// neighbor its share: Neighbors).
	Routes []RouteChange `json:"routes"`
	// Sessions are the BGP neighbor sessions added, removed or reset.
	Sessions []SessionChange `json:"sessions,omitempty"`
	// Neighbors say, per BGP neighbor, what it is sent: routes announced,
	// withdrawn or sent again with other attributes, as the speaker's
	// export makes them for that neighbor (bgp.Speaker.Plan).
	Neighbors []NeighborChange `json:"neighbors,omitempty"`
	// Writes are the kernel writes a reload would issue, IPVS in order,
	// then VIPs in order.
	Writes []KernelWrite `json:"writes"`
	// IPVSWrites and VIPWrites are the same writes as the reconcilers
	// record them (not sent: Writes is their portable form).
	IPVSWrites []ipvs.Write `json:"-"`
	VIPWrites  []vip.Write  `json:"-"`
	// Guard is the delete guard's verdict on the change: "pass", or its
	// refusal (Options.Guard; empty without one).
	Guard string `json:"guard,omitempty"`
	// Notes say what the plan leaves out (offline: no health, no BGP).
	Notes []string `json:"notes,omitempty"`
	// Errors are what the reconcilers would fail on.
	Errors []string `json:"errors,omitempty"`
}

// KernelWrite is one kernel write: op is add_service, update_service,
// delete_service, add_real, update_real, delete_real (IPVS), add_vip or
// del_vip.
type KernelWrite struct {
	Op      string `json:"op"`
	Service string `json:"service,omitempty"` // ipvs: the service key
	Real    string `json:"real,omitempty"`    // ipvs: the real, for a real's write
	Weight  *int   `json:"weight,omitempty"`  // add_real, update_real
	VIP     string `json:"vip,omitempty"`     // add_vip, del_vip
}

func kernelWrites(iw []ipvs.Write, vw []vip.Write) []KernelWrite {
	out := make([]KernelWrite, 0, len(iw)+len(vw))
	for _, w := range iw {
		k := KernelWrite{Op: w.Op.String(), Service: w.Service.String()}
		switch w.Op {
		case ipvs.OpAddReal, ipvs.OpUpdateReal:
			k.Real = w.RealKey.String()
			n := int(w.Real.Weight)
			k.Weight = &n
		case ipvs.OpDeleteReal:
			k.Real = w.RealKey.String()
		}
		out = append(out, k)
	}
	for _, w := range vw {
		out = append(out, KernelWrite{Op: w.Op + "_vip", VIP: w.VIP.String()})
	}
	return out
}

// Field is one setting that changes.
type Field struct {
	Name string `json:"name"`
	From string `json:"from"`
	To   string `json:"to"`
}

// Actions of a change.
const (
	ActAdd    = "+"
	ActRemove = "-"
	ActChange = "~"
	ActKeep   = " " // no kernel change (listed for its health)
)

// ServiceChange is one IPVS service that a reload writes, or whose reals
// start their health afresh.
type ServiceChange struct {
	Name     string       `json:"name"`
	Endpoint string       `json:"endpoint"`
	VIP      string       `json:"vip"`
	Action   string       `json:"action"`
	Fields   []Field      `json:"fields,omitempty"`
	Reals    []RealChange `json:"reals,omitempty"`
	// HealthKept counts the enabled reals whose checks keep their verdict;
	// HealthUnknown lists those that start unknown: not counted for the
	// announcement until a first verdict (a new real gets weight 0, one
	// adopted at start keeps its weight).
	HealthKept    int      `json:"health_kept"`
	HealthUnknown []string `json:"health_unknown,omitempty"`
}

// RealChange is one real that a reload writes.
type RealChange struct {
	Real   string  `json:"real"`
	Action string  `json:"action"`
	Fields []Field `json:"fields,omitempty"`
	// Drain is set for a removed real kept at weight 0 until it has no
	// connections or this time has passed.
	Drain string `json:"drain,omitempty"`
	// Health is the verdict its weight follows: up, down or unknown.
	Health string `json:"health,omitempty"`
}

// VIPChange is a VIP made local (+) or removed (-).
type VIPChange struct {
	VIP    string `json:"vip"`
	Action string `json:"action"`
	// Hold is set for a VIP that leaves the configuration: its route is
	// withdrawn now, its address and services go after the hold time.
	Hold string `json:"hold,omitempty"`
}

// RouteChange is a route announced (+), withdrawn (-) or announced again
// with other attributes (~).
type RouteChange struct {
	Prefix string  `json:"prefix"`
	Action string  `json:"action"`
	Fields []Field `json:"fields,omitempty"`
}

// SessionChange is a BGP neighbor session added (+), removed (-) or reset
// (~, with the settings that changed).
type SessionChange struct {
	Neighbor string `json:"neighbor"`
	Address  string `json:"address"`
	Action   string `json:"action"`
	Changed  string `json:"changed,omitempty"`
}

// NeighborChange is what one BGP neighbor is sent after the change: its
// session (added, removed, reset or kept: " ") and the routes it gets
// announced (+), withdrawn (-) or again with other attributes (~); Fields
// are the attributes as that neighbor receives them (next_hop, as_path,
// med, local_pref, communities, large_communities).
type NeighborChange struct {
	Neighbor string        `json:"neighbor"`
	Address  string        `json:"address"`
	Type     string        `json:"type"` // "ebgp" or "ibgp"
	Session  string        `json:"session"`
	Changed  string        `json:"changed,omitempty"`
	Routes   []RouteChange `json:"routes,omitempty"`
}

// Empty reports whether the plan changes nothing.
func (r Review) Empty() bool {
	return len(r.Writes) == 0 && len(r.Routes) == 0 && len(r.Sessions) == 0 &&
		!slices.ContainsFunc(r.Neighbors, func(n NeighborChange) bool { return len(n.Routes) > 0 }) &&
		!slices.ContainsFunc(r.Services, func(s ServiceChange) bool { return len(s.HealthUnknown) > 0 })
}

// Text of each change, as `kglb plan` prints it (daemon.WritePlan) and a
// reload logs it (Compact).

// Text is the service's line.
func (s ServiceChange) Text() string {
	return fmt.Sprintf("%s service %s (%s)", s.Action, s.Name, s.Endpoint)
}

// HealthText says which reals keep their health and which start unknown.
func (s ServiceChange) HealthText() string {
	return fmt.Sprintf("health: %d kept, %d starting unknown (not counted for the announcement until a first verdict): %s",
		s.HealthKept, len(s.HealthUnknown), strings.Join(s.HealthUnknown, " "))
}

// Text is a service's field: "name: from -> to".
func (f Field) Text() string { return fmt.Sprintf("%s: %s -> %s", f.Name, f.From, f.To) }

// Text is the real's line.
func (rl RealChange) Text() string {
	line := fmt.Sprintf("%s real %s", rl.Action, rl.Real)
	var parts []string
	for _, f := range rl.Fields {
		if f.Name == "weight" && rl.Drain != "" {
			continue
		}
		if rl.Action == ActAdd {
			parts = append(parts, f.Name+" "+f.To)
		} else {
			parts = append(parts, fmt.Sprintf("%s %s -> %s", f.Name, f.From, f.To))
		}
	}
	if rl.Drain != "" {
		parts = append(parts, "drained first: weight 0, deleted when idle or after "+rl.Drain)
	}
	if rl.Health != "" {
		parts = append(parts, "health "+rl.Health)
	}
	if len(parts) > 0 {
		line += ": " + strings.Join(parts, ", ")
	}
	return line
}

// Text is the VIP's line.
func (v VIPChange) Text() string {
	line := fmt.Sprintf("%s %s", v.Action, v.VIP)
	if v.Hold != "" {
		line += " (route withdrawn now; address and services removed after the hold, " + v.Hold + ")"
	} else if v.Action == ActAdd {
		line += " (made local)"
	}
	return line
}

// Text is the route's line.
func (rt RouteChange) Text() string {
	line := fmt.Sprintf("%s %s", rt.Action, rt.Prefix)
	var parts []string
	for _, f := range rt.Fields {
		if rt.Action == ActAdd {
			parts = append(parts, f.Name+" "+f.To)
		} else {
			parts = append(parts, fmt.Sprintf("%s %q -> %q", f.Name, f.From, f.To))
		}
	}
	if len(parts) > 0 {
		line += ": " + strings.Join(parts, ", ")
	}
	return line
}

// Text is the session's line.
func (x SessionChange) Text() string {
	line := fmt.Sprintf("%s %s (%s)", x.Action, x.Neighbor, x.Address)
	if x.Changed != "" {
		line += ": reset, changed " + x.Changed
	}
	return line
}

// Text is the neighbor's heading, with what happens to its session.
func (n NeighborChange) Text() string {
	line := fmt.Sprintf("%s neighbor %s (%s, %s)", n.Session, n.Neighbor, n.Address, n.Type)
	switch n.Session {
	case ActAdd:
		line += ": session added, sent every route"
	case ActRemove:
		line += ": session removed, its routes go with it"
	case ActChange:
		line += ": session reset, changed " + n.Changed
	}
	return strings.TrimLeft(line, " ")
}

// Summary is the plan in one line.
func (r Review) Summary() string {
	if r.Empty() {
		return "no changes"
	}
	var n [3]int // services added, changed, removed
	var rn [3]int
	for _, s := range r.Services {
		switch s.Action {
		case ActAdd:
			n[0]++
		case ActChange:
			n[1]++
		case ActRemove:
			n[2]++
		}
		for _, rl := range s.Reals {
			switch {
			case rl.Action == ActAdd:
				rn[0]++
			case rl.Action == ActRemove || rl.Drain != "":
				rn[2]++
			default:
				rn[1]++
			}
		}
	}
	var va, vr, ra, rc, rw int
	for _, v := range r.VIPs {
		if v.Action == ActAdd {
			va++
		} else {
			vr++
		}
	}
	for _, rt := range r.Routes {
		switch rt.Action {
		case ActAdd:
			ra++
		case ActRemove:
			rw++
		default:
			rc++
		}
	}
	var sn [3]int
	for _, x := range r.Sessions {
		sn[strings.Index("+~-", x.Action)]++
	}
	return fmt.Sprintf("services %d to add, %d to change, %d to remove; reals %d to add, %d to change, %d to remove; vips %d to add, %d to remove; routes %d to announce, %d to change, %d to withdraw; bgp sessions %d to add, %d to reset, %d to remove; %d kernel writes",
		n[0], n[1], n[2], rn[0], rn[1], rn[2], va, vr, ra, rc, rw, sn[0], sn[1], sn[2], len(r.Writes))
}

// planReq asks the Run goroutine for the plan of a configuration.
type planReq struct {
	cfg   *config.Config
	reply chan planRes
}

type planRes struct {
	r   Review
	err error
}

// PlanConfig returns what making cfg current would do now, with the
// current health and announcements, without changing anything. It runs on
// the Run goroutine, so it waits for the pass in progress; it needs Run.
func (e *Engine) PlanConfig(ctx context.Context, cfg *config.Config) (Review, error) {
	req := planReq{cfg: cfg, reply: make(chan planRes, 1)}
	select {
	case e.plans <- req:
	case <-ctx.Done():
		return Review{}, ctx.Err()
	}
	select {
	case res := <-req.reply:
		return res.r, res.err
	case <-ctx.Done():
		return Review{}, ctx.Err()
	}
}

// review computes the plan of cfg on the Run goroutine: the desired state
// of cfg with the current verdicts (a real keeps the verdict of each
// target it keeps), handed to the reconcilers' Plan, which run the diff of
// Apply on a copy of their state.
func (e *Engine) review(ctx context.Context, cfg *config.Config) (Review, error) {
	ip, ok := e.opts.IPVS.(IPVSPlanner)
	if !ok {
		return Review{}, errors.New("plan: the ipvs reconciler cannot plan")
	}
	vp, ok := e.opts.VIPs.(VIPPlanner)
	if !ok {
		return Review{}, errors.New("plan: the vip reconciler cannot plan")
	}
	// Marks stay as they are: a tunnelled real without one starts unknown.
	var marks map[netip.Addr]uint32
	if e.plan != nil {
		marks = map[netip.Addr]uint32{}
		for _, a := range TunnelReals(cfg) {
			if m, ok := e.plan.marks[a]; ok {
				marks[a] = m
			}
		}
	}
	plan, _ := NewPlan(cfg, marks)
	kept := func(t health.Target) bool {
		_, ok := e.opts.Prober.Lookup(t)
		return ok
	}
	in := Input{Config: cfg, Plan: plan, Health: e.health, Adopted: e.adopted, Qualified: e.qualified}
	d := Compute(in)
	now := e.now()
	left := e.leavingAfter(d, now)
	want, vips := withHeld(d, left)
	var errs []string
	ipl, err := ip.Plan(ctx, want)
	if err != nil {
		errs = append(errs, err.Error())
	}
	vw, vres, err := vp.Plan(ctx, vips)
	if err != nil {
		errs = append(errs, err.Error())
	}
	var routes []Route
	for _, r := range d.Routes {
		if vres.Holds(r.Prefix.Addr()) {
			routes = append(routes, r)
		}
	}
	if e.opts.Announcer == nil {
		routes = nil
	}
	rv := Review{IPVSWrites: ipl.Writes, VIPWrites: vw, Writes: kernelWrites(ipl.Writes, vw), Errors: errs}
	rv.Services = serviceChanges(e.cfg, cfg, plan, ipl, want, d, kept, nil, now)
	rv.VIPs = vipChanges(vw, e.leaving, left, now)
	rv.Routes = routeChanges(e.announced, routes)
	rv.Guard = e.guard(e.cfg, cfg)
	if b, ok := e.opts.Announcer.(BGPPlanner); ok {
		bp, err := b.PlanBGP(cfg, routes)
		if err != nil {
			rv.Errors = append(rv.Errors, err.Error())
		}
		rv.Sessions, rv.Neighbors = bp.Sessions, bp.Neighbors
	}
	return rv, nil
}

// guard is the delete guard's verdict on going from old to cfg.
func (e *Engine) guard(old, cfg *config.Config) string {
	if e.opts.Guard == nil || old == nil {
		return ""
	}
	if err := e.opts.Guard(old, cfg); err != nil {
		return err.Error()
	}
	return "pass"
}

// vipChanges are the VIPs written (vw) and those a pass starts to hold
// after their route is withdrawn (in after, not in before).
func vipChanges(vw []vip.Write, before, after map[netip.Addr]leaving, now time.Time) []VIPChange {
	var out []VIPChange
	for _, w := range vw {
		c := VIPChange{VIP: w.VIP.String(), Action: ActAdd}
		if w.Op == "del" {
			c.Action = ActRemove
		}
		out = append(out, c)
	}
	for v, l := range after {
		if _, was := before[v]; !was {
			out = append(out, VIPChange{VIP: v.String(), Action: ActRemove, Hold: l.until.Sub(now).String()})
		}
	}
	slices.SortFunc(out, func(a, b VIPChange) int {
		return netip.MustParseAddr(a.VIP).Compare(netip.MustParseAddr(b.VIP))
	})
	return out
}

// serviceChanges turns the planned IPVS writes into changes per service:
// the state before, with the writes played over it in order, against the
// state after.
//
// Its cost follows the services written to (and, for health, those that
// only(i) selects; nil selects every one), not the whole table, so that a
// reload can describe itself (Engine.reload).
func serviceChanges(old, cfg *config.Config, plan *Plan, ipl ipvs.Planned, want ipvs.Desired, d Desired, kept func(health.Target) bool, only func(int) bool, now time.Time) []ServiceChange {
	type svcState struct {
		svc   ipvs.Service
		reals map[ipvs.RealKey]ipvs.Real
		there bool
	}
	mk := func(s ipvs.Service) *svcState {
		st := &svcState{svc: s, reals: map[ipvs.RealKey]ipvs.Real{}, there: true}
		for _, r := range s.Reals {
			st.reals[r.Key()] = r
		}
		return st
	}
	before := map[ipvs.Key]*svcState{}
	after := map[ipvs.Key]*svcState{}
	for _, s := range ipl.Before {
		before[s.Key] = mk(s)
		after[s.Key] = mk(s)
	}
	rewritten := map[ipvs.Key]map[ipvs.RealKey]bool{}
	for _, w := range ipl.Writes {
		st := after[w.Service]
		if st == nil {
			st = &svcState{reals: map[ipvs.RealKey]ipvs.Real{}}
			after[w.Service] = st
		}
		if rewritten[w.Service] == nil {
			rewritten[w.Service] = map[ipvs.RealKey]bool{}
		}
		switch w.Op {
		case ipvs.OpAddService, ipvs.OpUpdateService:
			st.svc, st.there = *w.Svc, true
		case ipvs.OpDeleteService:
			st.there = false
		case ipvs.OpAddReal, ipvs.OpUpdateReal:
			st.reals[w.RealKey] = *w.Real
			rewritten[w.Service][w.RealKey] = true
		case ipvs.OpDeleteReal:
			delete(st.reals, w.RealKey)
			rewritten[w.Service][w.RealKey] = true
		}
	}
	names := map[ipvs.Key]*config.Service{}
	for _, c := range []*config.Config{old, cfg} {
		if c == nil {
			continue
		}
		for _, s := range c.Services {
			if k := serviceKey(s); after[k] != nil {
				names[k] = s
			}
		}
	}
	draining := map[ipvs.Key]map[ipvs.RealKey]time.Time{}
	for _, dr := range ipl.Result.Draining {
		if draining[dr.Service] == nil {
			draining[dr.Service] = map[ipvs.RealKey]time.Time{}
		}
		draining[dr.Service][dr.Real] = dr.Deadline
	}
	wanted := map[ipvs.Key]map[ipvs.RealKey]bool{}
	for _, s := range want.Services {
		if after[s.Key] == nil {
			continue
		}
		m := map[ipvs.RealKey]bool{}
		for _, r := range s.Reals {
			m[r.Key()] = true
		}
		wanted[s.Key] = m
	}
	states := map[ipvs.Key]map[ipvs.RealKey]health.State{}
	for i, st := range d.Services {
		if after[serviceKey(cfg.Services[i])] == nil {
			continue
		}
		m := map[ipvs.RealKey]health.State{}
		for _, r := range st.Reals {
			m[ipvs.RealKey{Addr: r.Addr.Addr(), Port: r.Addr.Port()}] = r.State
		}
		states[serviceKey(cfg.Services[i])] = m
	}

	var out []ServiceChange
	byKey := map[ipvs.Key]int{}
	for k, a := range after {
		b := before[k]
		sc := ServiceChange{Endpoint: k.String(), Action: ActChange}
		if s := names[k]; s != nil {
			sc.Name, sc.Endpoint = s.Name, s.Endpoint()
		}
		if k.Addr.IsValid() {
			sc.VIP = k.Addr.String()
		}
		switch {
		case (b == nil || !b.there) && a.there:
			sc.Action = ActAdd
			b = &svcState{reals: map[ipvs.RealKey]ipvs.Real{}}
		case b != nil && b.there && !a.there:
			sc.Action = ActRemove
			a = &svcState{reals: map[ipvs.RealKey]ipvs.Real{}}
		case b == nil || !a.there:
			continue
		default:
			sc.Fields = serviceFields(b.svc, a.svc)
		}
		keys := map[ipvs.RealKey]bool{}
		for rk := range b.reals {
			keys[rk] = true
		}
		for rk := range a.reals {
			keys[rk] = true
		}
		for rk := range keys {
			rb, inB := b.reals[rk]
			ra, inA := a.reals[rk]
			rc := RealChange{Real: rk.String()}
			switch {
			case !inB:
				rc.Action = ActAdd
				rc.Fields = []Field{{Name: "weight", To: strconv.Itoa(int(ra.Weight))}}
			case !inA:
				rc.Action = ActRemove
			default:
				rc.Action = ActChange
				rc.Fields = realFields(rb, ra)
				if dl, ok := draining[k][rk]; ok && !wanted[k][rk] {
					rc.Drain = dl.Sub(now).Round(time.Second).String()
				} else if len(rc.Fields) == 0 {
					if sc.Action != ActChange || !rewritten[k][rk] {
						continue
					}
					rc.Fields = []Field{{Name: "position", From: "", To: "re-added for mh order"}}
				}
			}
			if st, ok := states[k][rk]; ok && rc.Action != ActRemove && rc.Drain == "" {
				rc.Health = st.String()
			}
			sc.Reals = append(sc.Reals, rc)
		}
		slices.SortFunc(sc.Reals, func(x, y RealChange) int { return cmp.Compare(x.Real, y.Real) })
		if sc.Action == ActChange && len(sc.Fields) == 0 && len(sc.Reals) == 0 {
			continue
		}
		byKey[k] = len(out)
		out = append(out, sc)
	}
	// Health: a real keeps its verdict when each of its targets has one.
	for i, s := range cfg.Services {
		if !s.Enabled || i >= len(plan.services) {
			continue
		}
		k := serviceKey(s)
		if _, listed := byKey[k]; !listed && only != nil && !only(i) {
			continue
		}
		var nkept int
		var unknown []string
		for j := range s.Reals {
			r := &s.Reals[j]
			if !r.Enabled {
				continue
			}
			ok := true
			for n := range plan.services[i].specs {
				t, marked := plan.target(i, n, r)
				ok = ok && marked && kept(t)
			}
			if ok {
				nkept++
			} else {
				unknown = append(unknown, r.AddrPort().String())
			}
		}
		j, listed := byKey[k]
		if !listed {
			if len(unknown) == 0 {
				continue
			}
			sc := ServiceChange{Name: s.Name, Endpoint: s.Endpoint(), Action: ActKeep}
			if s.VIP.IsValid() {
				sc.VIP = s.VIP.String()
			}
			j = len(out)
			out = append(out, sc)
		}
		out[j].HealthKept, out[j].HealthUnknown = nkept, unknown
	}
	slices.SortFunc(out, func(a, b ServiceChange) int {
		return cmp.Or(cmp.Compare(a.VIP, b.VIP), cmp.Compare(a.Endpoint, b.Endpoint))
	})
	return out
}

func serviceFields(b, a ipvs.Service) []Field {
	var f []Field
	add := func(name, from, to string) {
		if from != to {
			f = append(f, Field{name, from, to})
		}
	}
	add("scheduler", b.Scheduler, a.Scheduler)
	add("flags", fmt.Sprintf("%#x", uint32(b.Flags&^ipvs.FlagHashed)), fmt.Sprintf("%#x", uint32(a.Flags&^ipvs.FlagHashed)))
	add("timeout", b.Timeout.String(), a.Timeout.String())
	add("netmask", strconv.Itoa(int(b.Netmask)), strconv.Itoa(int(a.Netmask)))
	return f
}

func realFields(b, a ipvs.Real) []Field {
	var f []Field
	add := func(name, from, to string) {
		if from != to {
			f = append(f, Field{name, from, to})
		}
	}
	add("weight", strconv.Itoa(int(b.Weight)), strconv.Itoa(int(a.Weight)))
	add("forward", b.Forward.String(), a.Forward.String())
	add("upper_threshold", strconv.Itoa(int(b.UpperThreshold)), strconv.Itoa(int(a.UpperThreshold)))
	add("lower_threshold", strconv.Itoa(int(b.LowerThreshold)), strconv.Itoa(int(a.LowerThreshold)))
	return f
}

// routeChanges compares the routes announced with those a reload would
// announce.
func routeChanges(have, want []Route) []RouteChange {
	if sameRoutes(have, want) { // a reload that leaves the routes alone pays no more
		return nil
	}
	idx := map[netip.Prefix]Route{}
	for _, r := range have {
		idx[r.Prefix] = r
	}
	var out []RouteChange
	seen := map[netip.Prefix]bool{}
	for _, r := range want {
		seen[r.Prefix] = true
		old, ok := idx[r.Prefix]
		if ok && sameRoute(old, r) {
			continue
		}
		if !ok {
			out = append(out, RouteChange{Prefix: r.Prefix.String(), Action: ActAdd, Fields: routeFields(Route{}, r)})
			continue
		}
		if f := routeFields(old, r); len(f) > 0 {
			out = append(out, RouteChange{Prefix: r.Prefix.String(), Action: ActChange, Fields: f})
		}
	}
	for _, r := range have {
		if !seen[r.Prefix] {
			out = append(out, RouteChange{Prefix: r.Prefix.String(), Action: ActRemove})
		}
	}
	slices.SortFunc(out, func(a, b RouteChange) int {
		return netip.MustParsePrefix(a.Prefix).Addr().Compare(netip.MustParsePrefix(b.Prefix).Addr())
	})
	return out
}

// routeFields lists b's attributes that differ from a's (from the zero
// Route: those that are set).
func routeFields(a, b Route) []Field {
	var f []Field
	add := func(name, from, to string) {
		if from != to {
			f = append(f, Field{name, from, to})
		}
	}
	nh := func(r Route) string {
		if r.NextHop.IsValid() {
			return r.NextHop.String()
		}
		return "self"
	}
	opt := func(v uint32, set bool) string {
		if set {
			return strconv.FormatUint(uint64(v), 10)
		}
		return ""
	}
	join := func(n int, at func(int) string) string {
		s := make([]string, n)
		for i := range s {
			s[i] = at(i)
		}
		return strings.Join(s, " ")
	}
	add("next_hop", nh(a), nh(b))
	add("communities", join(len(a.Communities), func(i int) string { return a.Communities[i].String() }), join(len(b.Communities), func(i int) string { return b.Communities[i].String() }))
	add("large_communities", join(len(a.LargeCommunities), func(i int) string { return a.LargeCommunities[i].String() }), join(len(b.LargeCommunities), func(i int) string { return b.LargeCommunities[i].String() }))
	add("med", opt(a.MED, a.HasMED), opt(b.MED, b.HasMED))
	add("local_pref", opt(a.LocalPref, a.HasLocalPref), opt(b.LocalPref, b.HasLocalPref))
	add("prepend", strconv.Itoa(a.Prepend), strconv.Itoa(b.Prepend))
	add("degraded", strconv.FormatBool(a.Degraded), strconv.FormatBool(b.Degraded))
	return f
}

// PlanStart returns what an engine started now with its configuration
// would write at its first pass: it adopts the kernel state kglb owns
// (reals keep their weights until a first verdict) and plans with no
// verdicts. `kglb plan --offline` uses it, with a prober that knows no
// target and no announcer. Call it instead of Run, not with it.
func (e *Engine) PlanStart(ctx context.Context) (Review, error) {
	if err := e.adopt(ctx); err != nil {
		return Review{}, err
	}
	return e.review(ctx, e.cfg)
}
