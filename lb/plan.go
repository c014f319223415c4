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
type Plan struct {
	// byService holds, per service name, the targets of each real, in the
	// order of the service's Reals (nil for a disabled real).
	byService map[string][][]health.Target
	targets   []health.Target // distinct, in config order
	tunnels   []ipvs.Service
}

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

func hasTunnelCheck(svc config.Service) bool {
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
	p := &Plan{byService: make(map[string][][]health.Target, len(cfg.Services))}
	seen := map[health.Target]bool{}
	tunnels := map[ipvs.Key]ipvs.Service{}
	var errs []error
	for _, svc := range cfg.Services {
		if !svc.Enabled {
			continue
		}
		// One spec per check, shared by every real of the service: the
		// costly canonical forms and checks are made once.
		specs := make([]health.Spec, 0, len(svc.Checks))
		for _, c := range svc.Checks {
			spec, err := specOf(svc, c)
			if err == nil {
				probe := spec
				if probe.Tunnel {
					probe.Mark = 1 // validated with a stand-in; each real gets its own
				}
				err = probe.Validate()
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("service %q check %s: %w", svc.Name, c.Type, err))
				continue
			}
			specs = append(specs, spec)
		}
		perReal := make([][]health.Target, len(svc.Reals))
		for j, r := range svc.Reals {
			if !r.Enabled || len(specs) == 0 {
				continue
			}
			ts := make([]health.Target, 0, len(specs))
			for _, spec := range specs {
				if spec.Tunnel {
					mark, ok := marks[r.Addr]
					if !ok {
						errs = append(errs, fmt.Errorf("service %q real %s: no fwmark for its tunnelled check", svc.Name, r.AddrPort()))
						continue
					}
					spec.Mark = mark
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
				t := health.Target{Real: r.AddrPort(), Spec: spec}
				ts = append(ts, t)
				if !seen[t] {
					seen[t] = true
					p.targets = append(p.targets, t)
				}
			}
			perReal[j] = ts
		}
		p.byService[svc.Name] = perReal
	}
	for _, s := range tunnels {
		p.tunnels = append(p.tunnels, s)
	}
	slices.SortFunc(p.tunnels, func(a, b ipvs.Service) int { return cmp.Compare(a.Key.FWMark, b.Key.FWMark) })
	return p, errors.Join(errs...)
}

// Targets returns the health targets deciding one real of one service.
func (p *Plan) Targets(service string, real netip.AddrPort) []health.Target {
	for _, ts := range p.byService[service] {
		if len(ts) > 0 && ts[0].Real == real {
			return ts
		}
	}
	return nil
}

// reals returns the targets of each real of a service, aligned with the
// service's Reals.
func (p *Plan) reals(service string) [][]health.Target { return p.byService[service] }

// All returns every distinct target, for the health scheduler.
func (p *Plan) All() []health.Target { return p.targets }

func (p *Plan) tunnelServices() []ipvs.Service { return slices.Clone(p.tunnels) }

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
		status := make([]string, len(h.Status))
		for i, r := range h.Status {
			status[i] = fmt.Sprintf("%d-%d", r.Min, r.Max)
		}
		st, err := health.CanonicalStatus(status)
		if err != nil {
			return s, err
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
		s.Syslog = health.SyslogParams{TCP: c.Syslog.Transport == config.TransportTCP}
	}
	return s, nil
}

func ipvsFamily(a netip.Addr) ipvs.Family {
	if a.Is4() {
		return ipvs.IPv4
	}
	return ipvs.IPv6
}
