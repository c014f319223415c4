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
	"fmt"
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
func Compute(in Input) Desired {
	cfg := in.Config
	out := Desired{Qualified: make(map[string]bool, len(cfg.Services))}
	byVIP := map[netip.Addr]bool{}
	for _, svc := range cfg.Services {
		if !svc.Enabled {
			continue
		}
		st, is := in.service(svc)
		out.Qualified[svc.Name] = st.Qualified
		if svc.VIP.IsValid() {
			byVIP[svc.VIP] = true
		}
		out.Services = append(out.Services, st)
		out.IPVS.Services = append(out.IPVS.Services, is)
	}
	out.IPVS.Services = append(out.IPVS.Services, in.Plan.tunnelServices()...)

	for vip := range byVIP {
		out.VIPs = append(out.VIPs, vip)
	}
	slices.SortFunc(out.VIPs, netip.Addr.Compare)
	out.VIPStatus, out.Routes = decideAll(cfg, out.Services)
	return out
}

// service computes one service's reals, weights and qualification.
func (in Input) service(svc config.Service) (ServiceStatus, ipvs.Service) {
	key := serviceKey(svc)
	st := ServiceStatus{Name: svc.Name, Endpoint: svc.Endpoint()}
	is := ipvs.Service{
		Key:       key,
		Name:      svc.Name,
		Scheduler: string(svc.Scheduler),
		Flags:     serviceFlags(svc),
		Drain:     svc.Drain,
	}
	if svc.Persistence.Enabled {
		is.Timeout = svc.Persistence.Timeout
		is.Netmask = uint8(svc.Persistence.PrefixLen)
	}

	states := make([]health.State, len(svc.Reals))
	targets := in.Plan.reals(svc.Name)
	decided := true
	for i, r := range svc.Reals {
		if !r.Enabled {
			continue
		}
		st.Total++
		if i < len(targets) {
			states[i] = in.realState(targets[i])
		} else {
			states[i] = health.Up
		}
		switch states[i] {
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
	for i, r := range svc.Reals {
		w := uint16(0)
		switch {
		case !r.Enabled:
		case failOpen || states[i] == health.Up:
			w = uint16(r.Weight)
		case states[i] == health.Unknown:
			// Adopted at start and not yet judged: keep what the kernel
			// has, so a restart moves no traffic.
			w = adopted[ipvs.RealKey{Addr: r.Addr, Port: r.Port}]
		}
		st.Reals = append(st.Reals, RealStatus{Addr: r.AddrPort(), Enabled: r.Enabled, State: states[i], Weight: w})
		is.Reals = append(is.Reals, ipvs.Real{
			Addr:           r.Addr,
			Port:           r.Port,
			Weight:         w,
			Forward:        forward(svc.Forward),
			UpperThreshold: r.UpperThreshold,
			LowerThreshold: r.LowerThreshold,
		})
	}

	st.Qualified, st.Degraded, st.Reason = in.qualify(svc, st, decided, failOpen)
	return st, is
}

// qualify decides whether a service, on its own, wants its VIP announced.
func (in Input) qualify(svc config.Service, st ServiceStatus, decided, failOpen bool) (ok, degraded bool, reason string) {
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

// realState combines a real's checks: up when all pass, down when any
// fails, unknown otherwise. A service without checks trusts its reals.
func (in Input) realState(targets []health.Target) health.State {
	state := health.Up
	for _, t := range targets {
		switch in.Health(t) {
		case health.Down:
			return health.Down
		case health.Unknown:
			state = health.Unknown
		}
	}
	return state
}

// decideVIP announces a VIP while every enabled service on it qualifies.
// Attributes come from the first service by name; the route is degraded if
// any service is.
func decideVIP(cfg *config.Config, vip netip.Addr, idx []int, sts []ServiceStatus) (VIPStatus, Route) {
	vs := VIPStatus{VIP: vip, Announced: true, Reason: ReasonHealthy}
	for _, i := range idx {
		s := sts[i]
		vs.Services = append(vs.Services, s.Name)
		if !s.Qualified && vs.Announced {
			vs.Announced, vs.Reason = false, s.Reason
			if len(idx) > 1 {
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
	a := announceOf(cfg, idx[0], sts)
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

func announceOf(cfg *config.Config, i int, sts []ServiceStatus) config.Announce {
	name := sts[i].Name
	for _, s := range cfg.Services {
		if s.Name == name {
			return s.Announce
		}
	}
	panic(fmt.Sprintf("lb: service %q vanished from its own config", name))
}

func serviceKey(svc config.Service) ipvs.Key {
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

func serviceFlags(svc config.Service) ipvs.Flags {
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
