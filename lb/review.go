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
	// So does one whose mark is outside cfg's range (a reload gives it
	// another: see moveMarks).
	var marks map[netip.Addr]uint32
	if e.plan != nil {
		marks = map[netip.Addr]uint32{}
		for _, a := range TunnelReals(cfg) {
			if m, ok := e.plan.marks[a]; ok && health.MarkInRange(cfg.Daemon.TunnelMarkBase, cfg.Daemon.TunnelMarkCount, m) {
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
	left := e.leavingAfter(d, now, false)
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
// state after; then the health each enabled service's reals keep.
//
// Its cost follows the services written to (and, for health, those that
// only(i) selects; nil selects every one), not the whole table, so that a
// reload can describe itself (Engine.reload).
func serviceChanges(old, cfg *config.Config, plan *Plan, ipl ipvs.Planned, want ipvs.Desired, d Desired, kept func(health.Target) bool, only func(int) bool, now time.Time) []ServiceChange {
	tables := replayWrites(ipl)
	ix := realIndex{
		rewritten: tables.rewritten,
		draining:  drainingReals(ipl.Result.Draining),
		wanted:    wantedReals(tables.after, want),
		states:    realStates(tables.after, cfg, d),
		now:       now,
	}
	names := serviceNames(tables.after, old, cfg)
	var out []ServiceChange
	byKey := map[ipvs.Key]int{}
	for k, a := range tables.after {
		if sc, ok := ix.serviceChange(k, names[k], tables.before[k], a); ok {
			byKey[k] = len(out)
			out = append(out, sc)
		}
	}
	out = withHealth(out, byKey, cfg, plan, kept, only)
	slices.SortFunc(out, func(a, b ServiceChange) int {
		return cmp.Or(cmp.Compare(a.VIP, b.VIP), cmp.Compare(a.Endpoint, b.Endpoint))
	})
	return out
}

// svcState is one IPVS service as a point of the planned writes leaves it.
type svcState struct {
	svc   ipvs.Service
	reals map[ipvs.RealKey]ipvs.Real
	there bool // false: deleted (or never added)
}

func newSvcState(s ipvs.Service) *svcState {
	st := &svcState{svc: s, reals: make(map[ipvs.RealKey]ipvs.Real, len(s.Reals)), there: true}
	for _, r := range s.Reals {
		st.reals[r.Key()] = r
	}
	return st
}

// replayed is the IPVS table the planned writes touch, before and after
// them, and which reals of each service the writes touch.
type replayed struct {
	before, after map[ipvs.Key]*svcState
	rewritten     map[ipvs.Key]map[ipvs.RealKey]bool
}

// replayWrites plays ipl's writes, in order, over the services they touch.
func replayWrites(ipl ipvs.Planned) replayed {
	t := replayed{
		before:    map[ipvs.Key]*svcState{},
		after:     map[ipvs.Key]*svcState{},
		rewritten: map[ipvs.Key]map[ipvs.RealKey]bool{},
	}
	for _, s := range ipl.Before {
		t.before[s.Key] = newSvcState(s)
		t.after[s.Key] = newSvcState(s)
	}
	for _, w := range ipl.Writes {
		t.play(w)
	}
	return t
}

// play applies one write to the after table.
func (t replayed) play(w ipvs.Write) {
	st := t.after[w.Service]
	if st == nil {
		st = &svcState{reals: map[ipvs.RealKey]ipvs.Real{}}
		t.after[w.Service] = st
	}
	if t.rewritten[w.Service] == nil {
		t.rewritten[w.Service] = map[ipvs.RealKey]bool{}
	}
	switch w.Op {
	case ipvs.OpAddService, ipvs.OpUpdateService:
		st.svc, st.there = *w.Svc, true
	case ipvs.OpDeleteService:
		st.there = false
	case ipvs.OpAddReal, ipvs.OpUpdateReal:
		st.reals[w.RealKey] = *w.Real
		t.rewritten[w.Service][w.RealKey] = true
	case ipvs.OpDeleteReal:
		delete(st.reals, w.RealKey)
		t.rewritten[w.Service][w.RealKey] = true
	}
}

// serviceNames are the configured services (of old, then cfg) of the
// services written to.
func serviceNames(after map[ipvs.Key]*svcState, old, cfg *config.Config) map[ipvs.Key]*config.Service {
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
	return names
}

// realIndex says, per service and real, what a real's change needs beyond
// its state before and after: whether the writes touched it, when it
// drains, whether the desired state keeps it and the verdict it follows.
type realIndex struct {
	rewritten map[ipvs.Key]map[ipvs.RealKey]bool
	draining  map[ipvs.Key]map[ipvs.RealKey]time.Time
	wanted    map[ipvs.Key]map[ipvs.RealKey]bool
	states    map[ipvs.Key]map[ipvs.RealKey]health.State
	now       time.Time
}

func drainingReals(ds []ipvs.Draining) map[ipvs.Key]map[ipvs.RealKey]time.Time {
	draining := map[ipvs.Key]map[ipvs.RealKey]time.Time{}
	for _, dr := range ds {
		if draining[dr.Service] == nil {
			draining[dr.Service] = map[ipvs.RealKey]time.Time{}
		}
		draining[dr.Service][dr.Real] = dr.Deadline
	}
	return draining
}

// wantedReals are the reals want keeps, of the services written to.
func wantedReals(after map[ipvs.Key]*svcState, want ipvs.Desired) map[ipvs.Key]map[ipvs.RealKey]bool {
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
	return wanted
}

// realStates are the verdicts of the reals of the services written to.
func realStates(after map[ipvs.Key]*svcState, cfg *config.Config, d Desired) map[ipvs.Key]map[ipvs.RealKey]health.State {
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
	return states
}

// serviceChange is the change of service k (configured as s, nil if
// not) from b to a; false when there is none to list.
func (ix realIndex) serviceChange(k ipvs.Key, s *config.Service, b, a *svcState) (ServiceChange, bool) {
	sc := ServiceChange{Endpoint: k.String(), Action: ActChange}
	if s != nil {
		sc.Name, sc.Endpoint = s.Name, s.Endpoint()
	}
	if k.Addr.IsValid() {
		sc.VIP = k.Addr.String()
	}
	var before, after map[ipvs.RealKey]ipvs.Real // nil: none
	switch {
	case (b == nil || !b.there) && a.there:
		sc.Action = ActAdd
		after = a.reals
	case b != nil && b.there && !a.there:
		sc.Action = ActRemove
		before = b.reals
	case b == nil || !a.there:
		return ServiceChange{}, false // added and deleted by the same writes
	default:
		sc.Fields = serviceFields(b.svc, a.svc)
		before, after = b.reals, a.reals
	}
	sc.Reals = ix.realChanges(k, sc.Action, before, after)
	if sc.Action == ActChange && len(sc.Fields) == 0 && len(sc.Reals) == 0 {
		return ServiceChange{}, false
	}
	return sc, true
}

// realChanges are the changes of service k's reals, sorted by real.
func (ix realIndex) realChanges(k ipvs.Key, svcAction string, before, after map[ipvs.RealKey]ipvs.Real) []RealChange {
	keys := map[ipvs.RealKey]bool{}
	for rk := range before {
		keys[rk] = true
	}
	for rk := range after {
		keys[rk] = true
	}
	var out []RealChange
	for rk := range keys {
		if rc, ok := ix.realChange(k, rk, svcAction, before, after); ok {
			out = append(out, rc)
		}
	}
	slices.SortFunc(out, func(x, y RealChange) int { return cmp.Compare(x.Real, y.Real) })
	return out
}

// realChange is the change of real rk of service k; false when there is
// none to list.
func (ix realIndex) realChange(k ipvs.Key, rk ipvs.RealKey, svcAction string, before, after map[ipvs.RealKey]ipvs.Real) (RealChange, bool) {
	rb, inB := before[rk]
	ra, inA := after[rk]
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
		if dl, ok := ix.draining[k][rk]; ok && !ix.wanted[k][rk] {
			rc.Drain = dl.Sub(ix.now).Round(time.Second).String()
		} else if len(rc.Fields) == 0 {
			// Unchanged, unless the writes deleted and re-added it.
			if svcAction != ActChange || !ix.rewritten[k][rk] {
				return RealChange{}, false
			}
			rc.Fields = []Field{{Name: "position", From: "", To: "re-added for mh order"}}
		}
	}
	if st, ok := ix.states[k][rk]; ok && rc.Action != ActRemove && rc.Drain == "" {
		rc.Health = st.String()
	}
	return rc, true
}

// withHealth sets, on each enabled service listed or selected by only,
// which reals keep their verdict, listing (ActKeep) a service that no
// write touches but has reals starting unknown.
func withHealth(out []ServiceChange, byKey map[ipvs.Key]int, cfg *config.Config, plan *Plan, kept func(health.Target) bool, only func(int) bool) []ServiceChange {
	for i, s := range cfg.Services {
		if !s.Enabled || i >= len(plan.services) {
			continue
		}
		j, listed := byKey[serviceKey(s)]
		if !listed && only != nil && !only(i) {
			continue
		}
		nkept, unknown := realHealth(plan, i, s, kept)
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
	return out
}

// realHealth counts the enabled reals of service i (s) that keep their
// verdict, those each of whose targets has one, and lists the others.
func realHealth(plan *Plan, i int, s *config.Service, kept func(health.Target) bool) (nkept int, unknown []string) {
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
	return nkept, unknown
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
