// Package lb is kglb's engine. From the current configuration and the
// health verdicts it computes one Desired value: the IPVS services with their
// reals and weights, the VIP addresses, and per VIP whether it is announced
// and why (or why not). The reconcilers (ipvs, vip, bgp) take that value and
// make the world match; lb never talks to the kernel itself.
//
// Compute is a pure function of its Input, so every decision is a table
// test. The Engine (engine.go) owns the loop that feeds it: config updates,
// health changes, resync and drain timers.
package lb

import (
	"cmp"
	"net/netip"
	"slices"

	"github.com/kglb/kglb/config"
	"github.com/kglb/kglb/health"
	"github.com/kglb/kglb/ipvs"
)

// Reasons say why a VIP is or is not announced. They are metric label
// values, so the set is fixed.
const (
	ReasonHealthy        = "healthy"            // enough healthy reals
	ReasonDegraded       = "degraded"           // announced with worse attributes
	ReasonFailOpen       = "all_down_fail_open" // every real down; announced anyway by policy
	ReasonInitialRound   = "initial_round"      // the first full health round is not over
	ReasonBelowThreshold = "below_threshold"    // fewer healthy reals than min_healthy (or restore_healthy)
	ReasonAllDown        = "all_down"           // every real down, when_all_down = withdraw
	ReasonNoReals        = "no_reals"           // no enabled reals
	ReasonDisabled       = "disabled"           // announce { enabled = false }
	ReasonNoBGP          = "no_bgp"             // no bgp block: nothing is announced
	ReasonSharedVIP      = "shared_vip_peer"    // another service on the same VIP does not qualify
)

// Reasons lists every reason, for metrics that must show each one.
var Reasons = []string{ReasonHealthy, ReasonDegraded, ReasonFailOpen, ReasonInitialRound,
	ReasonBelowThreshold, ReasonAllDown, ReasonNoReals, ReasonDisabled, ReasonNoBGP, ReasonSharedVIP}

// Input is everything a decision depends on.
type Input struct {
	Config *config.Config
	// Plan is the probe plan of Config (Targets of the same config).
	Plan *Plan
	// Health returns the verdict of one probe target; Unknown when it has
	// never been decided.
	Health func(health.Target) health.State
	// Adopted holds the weights the kernel had for kglb's reals when the
	// daemon started: a real adopted at start keeps its weight until its
	// first verdict, so a restart moves no traffic.
	Adopted map[ipvs.Key]map[ipvs.RealKey]uint16
	// Qualified is the previous decision per service name (announce
	// hysteresis: a service that qualified keeps qualifying down to
	// min_healthy; one that did not needs restore_healthy).
	Qualified map[string]bool
}

// Desired is the whole state kglb wants, with the reason for each decision.
type Desired struct {
	IPVS   ipvs.Desired
	VIPs   []netip.Addr // sorted, distinct
	Routes []Route      // announced routes, sorted by prefix
	// Services and VIPStatus explain the decisions (for /status and metrics).
	Services  []ServiceStatus
	VIPStatus []VIPStatus
	// Qualified is the per-service decision to feed back as the next
	// Input.Qualified.
	Qualified map[string]bool
}

// Route is one VIP announcement with its attributes.
type Route struct {
	Prefix           netip.Prefix
	NextHop          netip.Addr // invalid: self
	Communities      []config.Community
	LargeCommunities []config.LargeCommunity
	MED              uint32
	HasMED           bool
	LocalPref        uint32
	HasLocalPref     bool
	Prepend          int
	Degraded         bool
}

// ServiceStatus is one service's computed state.
type ServiceStatus struct {
	Name      string
	Endpoint  string
	Healthy   int // enabled reals that are up
	Down      int // enabled reals that are down
	Total     int // enabled reals (up, down or not yet judged)
	Qualified bool
	Degraded  bool
	Reason    string
	Reals     []RealStatus
}

// RealStatus is one real's computed state.
type RealStatus struct {
	Addr    netip.AddrPort
	Enabled bool
	State   health.State
	Weight  uint16
}

// VIPStatus says whether one VIP is announced and why.
type VIPStatus struct {
	VIP       netip.Addr
	Announced bool
	Degraded  bool
	Reason    string
	Services  []string
}

// Compute turns config and health into the desired state. It is pure: the
// same Input always gives the same Desired.
func Compute(in Input) Desired { return in.compute(nil, nil) }

// decision says where the decision of one service is in the engine's last
// Desired, to be reused by its next pass while the inputs stay the same:
// the service's configuration and plan (the engine checks those when the
// configuration changes), the verdicts of its targets (every change of one
// reaches the engine, which decides the service again), the adopted weights
// (fixed at start) and its previous qualification, recorded here.
type decision struct {
	ok        bool  // holds a decision
	qualified bool  // Input.Qualified of the service when decided
	pos       int32 // in Desired.Services and Desired.IPVS.Services
}

// decisions are those of the services of one configuration, by index.
type decisions []decision

// compute is Compute. With memo (aligned with Config.Services) it takes the
// decision of a service from prev, the Desired memo points into, when the
// service's previous qualification is the one it was made with, and it
// records where each decision is in the result.
func (in Input) compute(memo decisions, prev *Desired) Desired {
	cfg := in.Config
	n := 0
	for i := range cfg.Services {
		if cfg.Services[i].Enabled {
			n++
		}
	}
	out := Desired{Qualified: make(map[string]bool, n)}
	if n > 0 {
		out.Services = make([]ServiceStatus, 0, n)
	}
	if n+len(in.Plan.tunnels) > 0 {
		out.IPVS.Services = make([]ipvs.Service, 0, n+len(in.Plan.tunnels))
	}
	for i := range cfg.Services {
		svc := cfg.Services[i]
		if !svc.Enabled {
			continue
		}
		q := in.Qualified[svc.Name]
		var st ServiceStatus
		var is ipvs.Service
		if dc := memo.at(i); dc.ok && dc.qualified == q && prev.holds(dc.pos, svc.Name) {
			st, is = prev.Services[dc.pos], prev.IPVS.Services[dc.pos]
		} else {
			st, is = in.service(i, svc)
		}
		if memo != nil {
			memo[i] = decision{ok: true, qualified: q, pos: int32(len(out.Services))}
		}
		out.Qualified[svc.Name] = st.Qualified
		out.Services = append(out.Services, st)
		out.IPVS.Services = append(out.IPVS.Services, is)
	}
	out.IPVS.Services = append(out.IPVS.Services, in.Plan.tunnels...)
	out.VIPStatus, out.Routes = decideAll(cfg, out.Services)
	// Every enabled service with a VIP has a VIPStatus, in VIP order.
	for _, vs := range out.VIPStatus {
		if out.VIPs == nil {
			out.VIPs = make([]netip.Addr, 0, len(out.VIPStatus))
		}
		out.VIPs = append(out.VIPs, vs.VIP)
	}
	return out
}

func (m decisions) at(i int) decision {
	if m == nil {
		return decision{}
	}
	return m[i]
}

// holds reports whether d has the decision of the named service at pos.
func (d *Desired) holds(pos int32, name string) bool {
	return d != nil && int(pos) < len(d.Services) && d.Services[pos].Name == name
}

// service computes the reals, weights and qualification of service i.
func (in Input) service(i int, svc *config.Service) (ServiceStatus, ipvs.Service) {
	key := serviceKey(svc)
	st := ServiceStatus{Name: svc.Name, Endpoint: svc.Endpoint()}
	is := ipvs.Service{
		Key:       key,
		Name:      svc.Name,
		Scheduler: string(svc.Scheduler),
		Flags:     serviceFlags(svc),
		Drain:     svc.Drain,
	}
	if len(svc.Reals) > 0 {
		st.Reals = make([]RealStatus, len(svc.Reals))
		is.Reals = make([]ipvs.Real, len(svc.Reals))
	}
	if svc.Persistence.Enabled {
		is.Timeout = svc.Persistence.Timeout
		is.Netmask = uint8(svc.Persistence.PrefixLen)
	}

	// A service missing from the plan trusts its reals.
	plan := in.Plan
	pi, planned := plan.serviceIndex(i, svc.Name)
	decided := true
	for j := range svc.Reals {
		r := &svc.Reals[j]
		rs := &st.Reals[j]
		rs.Addr, rs.Enabled = r.AddrPort(), r.Enabled
		if !r.Enabled {
			continue
		}
		st.Total++
		rs.State = health.Up
		if planned {
			rs.State = in.realState(plan, pi, r)
		}
		switch rs.State {
		case health.Up:
			st.Healthy++
		case health.Down:
			st.Down++
		case health.Unknown:
			decided = false
		}
	}
	failOpen := st.Total > 0 && st.Healthy == 0 && decided && svc.WhenAllDown == config.FailOpen

	adopted := in.Adopted[key]
	fwd := forward(svc.Forward)
	for j := range svc.Reals {
		r := &svc.Reals[j]
		rs := &st.Reals[j]
		w := uint16(0)
		switch {
		case !r.Enabled:
		case failOpen || rs.State == health.Up:
			w = uint16(r.Weight)
		case rs.State == health.Unknown:
			// Adopted at start and not yet judged: keep what the kernel
			// has, so a restart moves no traffic.
			w = adopted[ipvs.RealKey{Addr: r.Addr, Port: r.Port}]
		}
		rs.Weight = w
		is.Reals[j] = ipvs.Real{
			Addr:           r.Addr,
			Port:           r.Port,
			Weight:         w,
			Forward:        fwd,
			UpperThreshold: r.UpperThreshold,
			LowerThreshold: r.LowerThreshold,
		}
	}

	st.Qualified, st.Degraded, st.Reason = in.qualify(svc, st, decided, failOpen)
	return st, is
}

// qualify decides whether a service, on its own, wants its VIP announced.
func (in Input) qualify(svc *config.Service, st ServiceStatus, decided, failOpen bool) (ok, degraded bool, reason string) {
	a := svc.Announce
	switch {
	case !a.Enabled:
		return false, false, ReasonDisabled
	case st.Total == 0:
		return false, false, ReasonNoReals
	case !decided && !in.Qualified[svc.Name]:
		// Nothing is announced before every real has a verdict.
		return false, false, ReasonInitialRound
	case failOpen:
		return true, false, ReasonFailOpen
	case st.Healthy == 0 && decided:
		return false, false, ReasonAllDown
	}
	// A service already announced judges only its decided reals while new
	// ones are being checked: adding reals must not withdraw the route.
	total := st.Total
	if !decided {
		total = st.Healthy + st.Down
	}
	need := a.RestoreHealthy.Need(total)
	if in.Qualified[svc.Name] {
		need = a.MinHealthy.Need(total)
	}
	if st.Healthy < need || st.Healthy == 0 {
		return false, false, ReasonBelowThreshold
	}
	if a.Degraded.Enabled && st.Healthy < a.Degraded.Below.Need(total) {
		return true, true, ReasonDegraded
	}
	return true, false, ReasonHealthy
}

// realState combines the checks of real r of service i: up when all pass,
// down when any fails, unknown otherwise. A service without checks trusts
// its reals.
func (in Input) realState(p *Plan, i int, r *config.Real) health.State {
	state := health.Up
	for k := range p.services[i].specs {
		t, ok := p.target(i, k, r)
		if !ok {
			continue
		}
		switch in.Health(t) {
		case health.Down:
			return health.Down
		case health.Unknown:
			state = health.Unknown
		}
	}
	return state
}

// decideAll decides every VIP from the service statuses (in config order).
func decideAll(cfg *config.Config, sts []ServiceStatus) ([]VIPStatus, []Route) {
	// The VIP of each status, found by walking the services alongside.
	refs := make([]vipRef, 0, len(sts))
	next := 0
	for i := range sts {
		j, ok := findService(cfg, next, sts[i].Name)
		if !ok {
			continue
		}
		next = j + 1
		if vip := cfg.Services[j].VIP; vip.IsValid() {
			refs = append(refs, vipRef{vip: vip, st: int32(i), svc: int32(j)})
		}
	}
	// Stable: the services of one VIP stay in config order.
	slices.SortStableFunc(refs, func(a, b vipRef) int { return a.vip.Compare(b.vip) })
	names := make([]string, len(refs))
	for k, r := range refs {
		names[k] = sts[r.st].Name
	}
	var out []VIPStatus
	var routes []Route
	for lo := 0; lo < len(refs); {
		hi := lo + 1
		for hi < len(refs) && refs[hi].vip == refs[lo].vip {
			hi++
		}
		vs, r := decideVIP(cfg, refs[lo:hi], sts, names[lo:hi:hi])
		if out == nil {
			out = make([]VIPStatus, 0, len(refs)-lo)
		}
		out = append(out, vs)
		if vs.Announced {
			if routes == nil {
				routes = make([]Route, 0, len(refs)-lo)
			}
			routes = append(routes, r)
		}
		lo = hi
	}
	return out, routes
}

// redecideVIPs decides again the VIPs vips (sorted, distinct) of d, whose
// services' statuses changed, in place, and returns d's routes: the same
// slice when no route changed, else a copy with the changes (the announcer
// may hold the old one). Each VIP costs its own services.
func redecideVIPs(cfg *config.Config, d *Desired, vips []netip.Addr) []Route {
	routes, copied := d.Routes, false
	byName := func(s ServiceStatus, n string) int { return cmp.Compare(s.Name, n) }
	for _, v := range vips {
		k, ok := slices.BinarySearchFunc(d.VIPStatus, v, func(vs VIPStatus, a netip.Addr) int { return vs.VIP.Compare(a) })
		if !ok {
			continue
		}
		names := d.VIPStatus[k].Services
		refs := make([]vipRef, 0, len(names))
		for _, n := range names {
			st, ok1 := slices.BinarySearchFunc(d.Services, n, byName)
			svc, ok2 := serviceIndex(cfg, n)
			if ok1 && ok2 {
				refs = append(refs, vipRef{vip: v, st: int32(st), svc: int32(svc)})
			}
		}
		if len(refs) != len(names) {
			continue // not d's configuration: left as it is
		}
		vs, r := decideVIP(cfg, refs, d.Services, names)
		d.VIPStatus[k] = vs
		// Routes are host prefixes, sorted: in the order of their VIPs.
		at, had := slices.BinarySearchFunc(routes, v, func(x Route, a netip.Addr) int { return x.Prefix.Addr().Compare(a) })
		if vs.Announced == had && (!had || sameRoute(routes[at], r)) {
			continue
		}
		if !copied {
			routes, copied = slices.Clone(routes), true
		}
		switch {
		case !vs.Announced:
			routes = slices.Delete(routes, at, at+1)
		case had:
			routes[at] = r
		default:
			routes = slices.Insert(routes, at, r)
		}
	}
	return routes
}

// vipRef is one service on a VIP: its index in the statuses and in the
// configuration.
type vipRef struct {
	vip     netip.Addr
	st, svc int32
}

// decideVIP announces a VIP while every enabled service on it qualifies.
// Attributes come from the first service by name; the route is degraded if
// any service is.
func decideVIP(cfg *config.Config, refs []vipRef, sts []ServiceStatus, names []string) (VIPStatus, Route) {
	vip := refs[0].vip
	vs := VIPStatus{VIP: vip, Announced: true, Reason: ReasonHealthy, Services: names}
	for _, ref := range refs {
		s := &sts[ref.st]
		if !s.Qualified && vs.Announced {
			vs.Announced, vs.Reason = false, s.Reason
			if len(refs) > 1 {
				vs.Reason = ReasonSharedVIP
				if s.Reason == ReasonDisabled || s.Reason == ReasonInitialRound {
					vs.Reason = s.Reason
				}
			}
		}
		if s.Degraded {
			vs.Degraded = true
		}
		if s.Reason == ReasonFailOpen && vs.Announced && vs.Reason == ReasonHealthy {
			vs.Reason = ReasonFailOpen
		}
	}
	if vs.Announced && vs.Degraded && vs.Reason == ReasonHealthy {
		vs.Reason = ReasonDegraded
	}
	if !cfg.BGP.Enabled {
		if vs.Announced {
			vs.Reason = ReasonNoBGP
		}
		vs.Announced = false
	}
	if !vs.Announced {
		vs.Degraded = false
		return vs, Route{}
	}
	a := &cfg.Services[refs[0].svc].Announce
	bits := 32
	if vip.Is6() {
		bits = 128
	}
	r := Route{
		Prefix:           netip.PrefixFrom(vip, bits),
		NextHop:          a.NextHop,
		Communities:      a.Communities,
		LargeCommunities: a.LargeCommunities,
		MED:              a.MED,
		HasMED:           a.HasMED,
		LocalPref:        a.LocalPref,
		HasLocalPref:     a.HasLocalPref,
		Prepend:          a.Prepend,
		Degraded:         vs.Degraded,
	}
	if vs.Degraded {
		d := a.Degraded
		if d.HasMED {
			r.MED, r.HasMED = d.MED, true
		}
		r.Prepend += d.Prepend
	}
	return vs, r
}

// findService finds a service by name, looking first from hint on: callers
// walk the services in order.
func findService(cfg *config.Config, hint int, name string) (int, bool) {
	j := hint
	for j < len(cfg.Services) && cfg.Services[j].Name < name {
		j++
	}
	if j < len(cfg.Services) && cfg.Services[j].Name == name {
		return j, true
	}
	return serviceIndex(cfg, name)
}

// serviceIndex finds a service by name in the sorted services.
func serviceIndex(cfg *config.Config, name string) (int, bool) {
	return slices.BinarySearchFunc(cfg.Services, name, func(s *config.Service, n string) int { return cmp.Compare(s.Name, n) })
}

func serviceKey(svc *config.Service) ipvs.Key {
	fam := ipvs.IPv4
	if svc.Family == config.IPv6 {
		fam = ipvs.IPv6
	}
	if svc.FWMark != 0 {
		return ipvs.MarkKey(fam, svc.FWMark)
	}
	return ipvs.AddrKey(protocol(svc.Protocol), svc.VIP, svc.Port)
}

func protocol(p config.Protocol) ipvs.Protocol {
	switch p {
	case config.UDP:
		return ipvs.UDP
	case config.SCTP:
		return ipvs.SCTP
	}
	return ipvs.TCP
}

func forward(f config.Forward) ipvs.Forward {
	switch f {
	case config.ForwardTunnel:
		return ipvs.ForwardTunnel
	case config.ForwardDR:
		return ipvs.ForwardDR
	}
	return ipvs.ForwardNAT
}

func serviceFlags(svc *config.Service) ipvs.Flags {
	var f ipvs.Flags
	if svc.Persistence.Enabled {
		f |= ipvs.FlagPersistent
	}
	if svc.OnePacket {
		f |= ipvs.FlagOnePacket
	}
	for _, fl := range svc.Flags {
		switch fl {
		case config.FlagSHFallback, config.FlagMHFallback:
			f |= ipvs.FlagSched1
		case config.FlagSHPort, config.FlagMHPort:
			f |= ipvs.FlagSched2
		}
	}
	return f
}
