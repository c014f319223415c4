package lb

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/kglb/kglb/config"
	"github.com/kglb/kglb/health"
	"github.com/kglb/kglb/ipvs"
	"github.com/miekg/dns"
)

// Plan is the probe plan of one configuration: which health targets decide
// each (service, real), and the one-real fwmark services that carry
// tunnelled probes. It changes only when the configuration does.
//
// A target is one real with one check of its service. The plan keeps each
// service's checks once, as probe specs, and makes a real's targets when
// they are asked for: no per-real copy of a spec (a few hundred bytes, with
// strings the garbage collector scans) is kept for 100k reals.
type Plan struct {
	cfg      *config.Config
	services []planService // aligned with cfg.Services
	marks    map[netip.Addr]uint32
	tunnels  []ipvs.Service
	// byReal and uses index the probed (service, real) pairs by the real's
	// address and port, to find the services a verdict touches: byReal
	// holds the last pair of each real in uses, chained through next.
	byReal map[realKey]int32
	uses   []planUse
	err    error
}

// planService is one service's share of a plan.
type planService struct {
	specs  []health.Spec // of the valid checks; a tunnelled one has no Mark yet
	clean  bool          // every check made a spec
	tunnel bool          // some spec is tunnelled
}

// planUse is a real of a service with at least one target.
type planUse struct{ svc, real, next int32 }

// realKey is a real's address and port as a map key without pointers,
// which the garbage collector need not scan. Distinct reals may share one
// (an IPv4 address and its IPv6-mapped form): users compare the real itself.
type realKey struct {
	addr [16]byte
	port uint16
}

func keyOf(ap netip.AddrPort) realKey { return realKey{ap.Addr().As16(), ap.Port()} }

// TunnelReals lists the real addresses that need an fwmark for tunnelled
// checks, sorted: feed it to health.Marks.Sync and pass the result to
// NewPlan.
func TunnelReals(cfg *config.Config) []netip.Addr {
	var out []netip.Addr
	for _, svc := range cfg.Services {
		if !svc.Enabled || !hasTunnelCheck(svc) {
			continue
		}
		for _, r := range svc.Reals {
			out = append(out, r.Addr)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

func hasTunnelCheck(svc *config.Service) bool {
	for _, c := range svc.Checks {
		if c.Tunnel {
			return true
		}
	}
	return false
}

// NewPlan builds the probe plan. marks holds the fwmark of every real in
// TunnelReals; a real without one is an error (its tunnelled checks could
// not be steered), reported once per real while the rest of the plan stands.
func NewPlan(cfg *config.Config, marks map[netip.Addr]uint32) (*Plan, error) {
	return newPlan(cfg, marks, nil, nil)
}

// newPlan is NewPlan taking the specs of service i from prev.services[from[i]]
// when from[i] >= 0 (a service with the same probes, see carry) and that
// service's checks all made specs: specs are the costly part (canonical
// forms, validation), and a reload leaves most services as they were.
func newPlan(cfg *config.Config, marks map[netip.Addr]uint32, prev *Plan, from []int32) (*Plan, error) {
	p := &Plan{cfg: cfg, services: make([]planService, len(cfg.Services)), marks: marks}
	tunnels := map[ipvs.Key]ipvs.Service{}
	var errs []error
	var last []health.Spec
	nuses := 0
	for i := range cfg.Services {
		svc := cfg.Services[i]
		if !svc.Enabled {
			continue
		}
		if prev != nil && from[i] >= 0 && prev.services[from[i]].clean {
			p.services[i] = prev.services[from[i]]
		} else {
			p.services[i] = makeSpecs(svc, &errs)
		}
		ps := &p.services[i]
		if len(ps.specs) == 0 {
			continue
		}
		// Services written from one template check alike: one copy of
		// their specs serves them all (nothing writes to it).
		if slices.Equal(ps.specs, last) {
			ps.specs = last
		}
		last = ps.specs
		for _, r := range svc.Reals {
			if !r.Enabled {
				continue
			}
			nuses++
			if !ps.tunnel {
				continue
			}
			for _, spec := range ps.specs {
				if !spec.Tunnel {
					continue
				}
				mark, ok := marks[r.Addr]
				if !ok {
					errs = append(errs, fmt.Errorf("service %q real %s: no fwmark for its tunnelled check", svc.Name, r.AddrPort()))
					continue
				}
				k := ipvs.MarkKey(ipvsFamily(r.Addr), mark)
				if _, ok := tunnels[k]; !ok {
					// One real at port 0 (IPVS keeps the probe's
					// destination port); its weight is never 0, or
					// IPVS would drop the probes themselves.
					tunnels[k] = ipvs.Service{
						Key:       k,
						Name:      "tunnel-check " + r.Addr.String(),
						Scheduler: "rr",
						Reals:     []ipvs.Real{{Addr: r.Addr, Weight: 1, Forward: forward(svc.Forward)}},
					}
				}
			}
		}
	}
	for _, s := range tunnels {
		p.tunnels = append(p.tunnels, s)
	}
	slices.SortFunc(p.tunnels, func(a, b ipvs.Service) int { return cmp.Compare(a.Key.FWMark, b.Key.FWMark) })
	p.index(nuses)
	p.err = errors.Join(errs...)
	return p, p.err
}

// makeSpecs makes one spec per check, shared by every real of the service:
// the costly canonical forms and checks are made once.
func makeSpecs(svc *config.Service, errs *[]error) planService {
	ps := planService{specs: make([]health.Spec, 0, len(svc.Checks)), clean: true}
	for _, c := range svc.Checks {
		spec, err := specOf(*svc, c)
		if err == nil {
			probe := spec
			if probe.Tunnel {
				probe.Mark = 1 // validated with a stand-in; each real gets its own
			}
			err = probe.Validate()
		}
		if err != nil {
			*errs = append(*errs, fmt.Errorf("service %q check %s: %w", svc.Name, c.Type, err))
			ps.clean = false
			continue
		}
		ps.specs = append(ps.specs, spec)
		ps.tunnel = ps.tunnel || spec.Tunnel
	}
	return ps
}

// index builds byReal and uses.
func (p *Plan) index(nuses int) {
	p.byReal = make(map[realKey]int32, nuses)
	p.uses = make([]planUse, 0, nuses)
	for i := range p.cfg.Services {
		svc := p.cfg.Services[i]
		for j := range svc.Reals {
			r := &svc.Reals[j]
			if !r.Enabled || !p.probed(i, r) {
				continue
			}
			k := keyOf(r.AddrPort())
			next, ok := p.byReal[k]
			if !ok {
				next = -1
			}
			p.byReal[k] = int32(len(p.uses))
			p.uses = append(p.uses, planUse{svc: int32(i), real: int32(j), next: next})
		}
	}
}

// probed reports whether an enabled real of service i has a target: a
// check, and a mark if every check is tunnelled.
func (p *Plan) probed(i int, r *config.Real) bool {
	ps := &p.services[i]
	if len(ps.specs) == 0 {
		return false
	}
	if _, ok := p.marks[r.Addr]; ok || !ps.tunnel {
		return true
	}
	for k := range ps.specs {
		if !ps.specs[k].Tunnel {
			return true
		}
	}
	return false
}

// withConfig is the plan for cfg, a configuration whose services have the
// probes of p's, one for one (carried.unchanged).
func (p *Plan) withConfig(cfg *config.Config) *Plan {
	q := *p
	q.cfg = cfg
	return &q
}

// target is check k of service i on real r, and false when r has no mark
// for a tunnelled check.
func (p *Plan) target(i, k int, r *config.Real) (health.Target, bool) {
	t := health.Target{Real: r.AddrPort(), Spec: p.services[i].specs[k]}
	if t.Spec.Tunnel {
		mark, ok := p.marks[r.Addr]
		if !ok {
			return health.Target{}, false
		}
		t.Spec.Mark = mark
	}
	return t, true
}

// serviceIndex finds a service by name: at hint when it is there, else
// by a search of the (sorted) services.
func (p *Plan) serviceIndex(hint int, name string) (int, bool) {
	if hint >= 0 && hint < len(p.cfg.Services) && p.cfg.Services[hint].Name == name {
		return hint, true
	}
	return serviceIndex(p.cfg, name)
}

// Targets returns the health targets deciding one real of one service.
func (p *Plan) Targets(service string, real netip.AddrPort) []health.Target {
	i, ok := p.serviceIndex(-1, service)
	if !ok {
		return nil
	}
	svc := p.cfg.Services[i]
	for j := range svc.Reals {
		r := &svc.Reals[j]
		if !r.Enabled || r.AddrPort() != real {
			continue
		}
		var out []health.Target
		for k := range p.services[i].specs {
			if t, ok := p.target(i, k, r); ok {
				out = append(out, t)
			}
		}
		return out
	}
	return nil
}

// servicesOf appends the indexes of the services that t decides.
func (p *Plan) servicesOf(t health.Target, out []int) []int {
	u, ok := p.byReal[keyOf(t.Real)]
	for ; ok && u >= 0; u = p.uses[u].next {
		use := p.uses[u]
		r := &p.cfg.Services[use.svc].Reals[use.real]
		for k := range p.services[use.svc].specs {
			if tk, ok := p.target(int(use.svc), k, r); ok && tk == t {
				out = append(out, int(use.svc))
				break
			}
		}
	}
	return out
}

// All returns every distinct target, in config order, for the health
// scheduler. It makes the list on each call.
func (p *Plan) All() []health.Target {
	var out []health.Target
	var next []int32            // next[n]: the target before out[n] of the same real, or -1
	last := map[realKey]int32{} // the last target of each real in out
	for i := range p.cfg.Services {
		svc := p.cfg.Services[i]
		for j := range svc.Reals {
			r := &svc.Reals[j]
			if !r.Enabled {
				continue
			}
			for k := range p.services[i].specs {
				t, ok := p.target(i, k, r)
				if !ok {
					continue
				}
				key := keyOf(t.Real)
				head, ok := last[key]
				if !ok {
					head = -1
				}
				n := head
				for n >= 0 && out[n] != t {
					n = next[n]
				}
				if n >= 0 { // shared with an earlier service
					continue
				}
				last[key] = int32(len(out))
				next = append(next, head)
				out = append(out, t)
			}
		}
	}
	return out
}

// specOf maps a configured check onto the health package's probe spec.
func specOf(svc config.Service, c config.Check) (health.Spec, error) {
	s := health.Spec{
		Port:     c.Port,
		Interval: c.Interval,
		Timeout:  c.Timeout,
		Rise:     c.Rise,
		Fall:     c.Fall,
		Tunnel:   c.Tunnel,
	}
	var err error
	if s.Type, err = health.ParseType(string(c.Type)); err != nil {
		return s, err
	}
	if c.Tunnel {
		// The probe goes to the VIP, at the port clients use.
		s.VIP = svc.VIP
		if s.Port == 0 {
			s.Port = svc.Port
		}
	}
	switch c.Type {
	case config.CheckHTTP, config.CheckHTTPS:
		h := c.HTTP
		var st health.StatusSet
		for _, r := range h.Status {
			st = st.With(r.Min, r.Max)
		}
		s.HTTP = health.HTTPParams{
			Method:          h.Method,
			Path:            h.Path,
			Host:            h.Host,
			SNI:             h.SNI,
			Headers:         health.CanonicalHeaders(h.Headers),
			Status:          st,
			Body:            h.Body,
			MaxBody:         int64(h.MaxBody),
			FollowRedirects: h.FollowRedirects,
			CAFile:          h.CAFile,
			Insecure:        h.Insecure,
			ProxyURL:        h.ProxyURL,
		}
	case config.CheckDNS:
		d := c.DNS
		qt, err := health.ParseQType(d.Type)
		if err != nil {
			return s, err
		}
		rcode, ok := dns.StringToRcode[strings.ToUpper(d.Rcode)]
		if !ok {
			return s, fmt.Errorf("unknown rcode %q", d.Rcode)
		}
		var answers []string
		if d.Answer != "" {
			answers = []string{d.Answer}
		}
		s.DNS = health.DNSParams{Name: d.Name, QType: qt, TCP: d.Transport == config.TransportTCP, Rcode: rcode, Answers: health.CanonicalList(answers)}
	case config.CheckSyslog:
		s.Syslog = health.SyslogParams{TCP: c.Syslog.Transport == config.TransportTCP, Message: c.Syslog.Message}
	}
	return s, nil
}

func ipvsFamily(a netip.Addr) ipvs.Family {
	if a.Is4() {
		return ipvs.IPv4
	}
	return ipvs.IPv6
}
