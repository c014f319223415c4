package lb

import (
	"maps"
	"slices"

	"github.com/kglb/kglb/config"
)

// A reload hands the engine a whole new configuration, usually with one
// service changed. The comparisons here let the engine carry over what it
// made for every service that did not change: its probe specs, its decision,
// and its kernel state. Each compares field by field, by hand, so that an
// edit costs a walk over the services, not a rebuild of them; a slice that
// two configurations share (config.Loader keeps the services of unchanged
// files) is equal without a look at its elements. Source positions are
// never compared: they say where a value was written, and move when a line
// above them does, which changes no decision.

// carried says, for each service of the next configuration, what can be
// taken over from the service of the same name in the previous one.
type carried struct {
	// plan[i] is the index in prev of the service whose probes equal those
	// of next.Services[i] (samePlan), else -1. Nil when unchanged.
	plan []int32
	// decision[i] is the index in prev of the service equal to
	// next.Services[i] in every field a decision reads (sameDecision),
	// else -1. Nil when unchanged.
	decision []int32
	// unchanged: both list the same services in the same order, each with
	// the same probes, so the previous plan serves as it is; forget lists
	// the services whose decision cannot be carried over.
	unchanged bool
	forget    []int32
}

// carry compares the services of two configurations, each sorted by name.
func carry(prev, next []*config.Service) carried {
	c := carried{
		plan:      make([]int32, len(next)),
		decision:  make([]int32, len(next)),
		unchanged: len(prev) == len(next),
	}
	j := 0
	for i := range next {
		n := next[i]
		c.plan[i], c.decision[i] = -1, -1
		for j < len(prev) && prev[j].Name < n.Name {
			j++
		}
		if j == len(prev) || prev[j].Name != n.Name {
			c.unchanged = false
			continue
		}
		p := prev[j]
		// Services a Loader kept from an unchanged file are the same
		// values: no need to compare them field by field.
		if p == n || samePlan(p, n) {
			c.plan[i] = int32(j)
			if p == n || sameDecision(p, n) {
				c.decision[i] = int32(j)
			}
		}
		if j != i || c.plan[i] < 0 {
			c.unchanged = false
		}
		j++
	}
	if c.unchanged {
		for i, j := range c.decision {
			if j < 0 {
				c.forget = append(c.forget, int32(i))
			}
		}
		c.plan, c.decision = nil, nil
	}
	return c
}

// spellOut turns an unchanged c (the same services, one for one) into the
// index form, for a pass that builds its plan anew all the same (the tunnel
// marks moved).
func (c *carried) spellOut(n int) {
	if !c.unchanged {
		return
	}
	c.unchanged = false
	c.plan, c.decision = make([]int32, n), make([]int32, n)
	for i := range n {
		c.plan[i], c.decision[i] = int32(i), int32(i)
	}
	for _, i := range c.forget {
		c.decision[i] = -1
	}
	c.forget = nil
}

// samePlan reports whether two services of the same name probe the same
// targets: what NewPlan reads of a service.
func samePlan(a, b *config.Service) bool {
	return a.Name == b.Name && a.Enabled == b.Enabled && a.VIP == b.VIP && a.Port == b.Port &&
		a.Forward == b.Forward && sameReals(a.Reals, b.Reals, false) && sameChecks(a.Checks, b.Checks)
}

// sameDecision reports whether two services with the same plan (samePlan)
// decide the same for the same health: every field but Source and
// Description.
func sameDecision(a, b *config.Service) bool {
	return a.Protocol == b.Protocol && a.FWMark == b.FWMark && a.Family == b.Family &&
		a.Scheduler == b.Scheduler && slices.Equal(a.Flags, b.Flags) && a.Persistence == b.Persistence &&
		a.OnePacket == b.OnePacket && a.Drain == b.Drain && a.WhenAllDown == b.WhenAllDown &&
		sameReals(a.Reals, b.Reals, true) && sameAnnounce(&a.Announce, &b.Announce)
}

// sameReals compares the reals' identities and enabled flags, and with
// settings their weights and thresholds too.
func sameReals(a, b []config.Real, settings bool) bool {
	if len(a) != len(b) {
		return false
	}
	if len(a) == 0 || &a[0] == &b[0] {
		return true
	}
	for i := range a {
		x, y := &a[i], &b[i]
		if x.Addr != y.Addr || x.Port != y.Port || x.Enabled != y.Enabled {
			return false
		}
		if settings && (x.Weight != y.Weight || x.UpperThreshold != y.UpperThreshold || x.LowerThreshold != y.LowerThreshold) {
			return false
		}
	}
	return true
}

func sameChecks(a, b []config.Check) bool {
	if len(a) != len(b) {
		return false
	}
	if len(a) == 0 || &a[0] == &b[0] {
		return true
	}
	for i := range a {
		x, y := &a[i], &b[i]
		if x.Type != y.Type || x.Interval != y.Interval || x.Timeout != y.Timeout || x.Rise != y.Rise ||
			x.Fall != y.Fall || x.Port != y.Port || x.Tunnel != y.Tunnel || x.DNS != y.DNS ||
			x.Syslog != y.Syslog || !sameHTTP(&x.HTTP, &y.HTTP) {
			return false
		}
	}
	return true
}

func sameHTTP(a, b *config.HTTPCheck) bool {
	return a.Method == b.Method && a.Path == b.Path && a.Host == b.Host && a.SNI == b.SNI &&
		maps.Equal(a.Headers, b.Headers) && slices.Equal(a.Status, b.Status) && a.Body == b.Body &&
		a.FollowRedirects == b.FollowRedirects && a.CAFile == b.CAFile && a.Insecure == b.Insecure &&
		a.MaxBody == b.MaxBody && a.ProxyURL == b.ProxyURL
}

func sameAnnounce(a, b *config.Announce) bool {
	return a.Enabled == b.Enabled && a.MinHealthy == b.MinHealthy && a.RestoreHealthy == b.RestoreHealthy &&
		a.Degraded == b.Degraded && a.NextHop == b.NextHop && slices.Equal(a.Communities, b.Communities) &&
		slices.Equal(a.LargeCommunities, b.LargeCommunities) && a.MED == b.MED && a.HasMED == b.HasMED &&
		a.LocalPref == b.LocalPref && a.HasLocalPref == b.HasLocalPref && a.Prepend == b.Prepend
}
