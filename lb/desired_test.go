package lb

import (
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kglb/kglb/config"
	"github.com/kglb/kglb/health"
	"github.com/kglb/kglb/ipvs"
)

// svc builds a tcp service on vip:80 with n reals 10.0.0.1.. and one tcp check.
func svc(name, vip string, n int, mod ...func(*config.Service)) *config.Service {
	s := config.Service{
		Name: name, VIP: netip.MustParseAddr(vip), Port: 80, Protocol: config.TCP, Family: config.IPv4,
		Scheduler: config.SchedWRR, Forward: config.ForwardTunnel, Drain: 30 * time.Second,
		WhenAllDown: config.Withdraw, Enabled: true,
		Checks: []config.Check{{Type: config.CheckTCP, Interval: 2 * time.Second, Timeout: time.Second, Rise: 2, Fall: 3}},
		Announce: config.Announce{
			Enabled:        true,
			MinHealthy:     config.Threshold{Value: 50, Percent: true},
			RestoreHealthy: config.Threshold{Value: 75, Percent: true},
		},
	}
	for i := range n {
		s.Reals = append(s.Reals, config.Real{Addr: netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}), Port: 80, Weight: 100, Enabled: true})
	}
	for _, m := range mod {
		m(&s)
	}
	return &s
}

func cfgOf(services ...*config.Service) *config.Config {
	return &config.Config{BGP: config.BGP{Enabled: true, ASN: 65010}, Services: services}
}

// states maps a real's last octet to its verdict; reals not listed are up.
type states map[byte]health.State

func (s states) health(t health.Target) health.State {
	if st, ok := s[t.Real.Addr().As16()[15]]; ok {
		return st
	}
	return health.Up
}

func compute(t *testing.T, cfg *config.Config, st states, qualified map[string]bool) Desired {
	t.Helper()
	plan, err := NewPlan(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return Compute(Input{Config: cfg, Plan: plan, Health: st.health, Qualified: qualified})
}

func weights(s ipvs.Service) string {
	var b strings.Builder
	for _, r := range s.Reals {
		b.WriteString(" ")
		b.WriteString(r.Addr.String()[len("10.0.0."):])
		b.WriteString("=")
		b.WriteString(strconv.Itoa(int(r.Weight)))
	}
	return strings.TrimSpace(b.String())
}

func TestDecisions(t *testing.T) {
	down, unknown := health.Down, health.Unknown
	tests := []struct {
		name      string
		cfg       *config.Config
		states    states
		qualified map[string]bool
		adopted   map[ipvs.Key]map[ipvs.RealKey]uint16
		announced bool
		reason    string
		weights   string // of the first service
	}{
		{name: "all up", cfg: cfgOf(svc("web", "192.0.2.1", 4)), announced: true, reason: ReasonHealthy, weights: "1=100 2=100 3=100 4=100"},
		{name: "one down: weight 0, still announced", cfg: cfgOf(svc("web", "192.0.2.1", 4)), states: states{2: down},
			announced: true, reason: ReasonHealthy, weights: "1=100 2=0 3=100 4=100"},
		{name: "below restore threshold while not announced", cfg: cfgOf(svc("web", "192.0.2.1", 4)), states: states{1: down, 2: down},
			announced: false, reason: ReasonBelowThreshold, weights: "1=0 2=0 3=100 4=100"},
		{name: "hysteresis: same health keeps an announced route", cfg: cfgOf(svc("web", "192.0.2.1", 4)), states: states{1: down, 2: down},
			qualified: map[string]bool{"web": true}, announced: true, reason: ReasonHealthy, weights: "1=0 2=0 3=100 4=100"},
		{name: "below min_healthy withdraws", cfg: cfgOf(svc("web", "192.0.2.1", 4)), states: states{1: down, 2: down, 3: down},
			qualified: map[string]bool{"web": true}, announced: false, reason: ReasonBelowThreshold, weights: "1=0 2=0 3=0 4=100"},
		{name: "all down, withdraw policy", cfg: cfgOf(svc("web", "192.0.2.1", 2)), states: states{1: down, 2: down},
			qualified: map[string]bool{"web": true}, announced: false, reason: ReasonAllDown, weights: "1=0 2=0"},
		{name: "all down, fail open keeps weights and route",
			cfg:    cfgOf(svc("web", "192.0.2.1", 2, func(s *config.Service) { s.WhenAllDown = config.FailOpen })),
			states: states{1: down, 2: down}, announced: true, reason: ReasonFailOpen, weights: "1=100 2=100"},
		{name: "initial round: nothing announced, new reals get no traffic", cfg: cfgOf(svc("web", "192.0.2.1", 2)),
			states: states{1: unknown}, announced: false, reason: ReasonInitialRound, weights: "1=0 2=100"},
		{name: "initial round: adopted real keeps its kernel weight", cfg: cfgOf(svc("web", "192.0.2.1", 2)),
			states: states{1: unknown, 2: unknown},
			adopted: map[ipvs.Key]map[ipvs.RealKey]uint16{
				ipvs.AddrKey(ipvs.TCP, netip.MustParseAddr("192.0.2.1"), 80): {{Addr: netip.MustParseAddr("10.0.0.1"), Port: 80}: 37},
			},
			announced: false, reason: ReasonInitialRound, weights: "1=37 2=0"},
		{name: "new real being checked does not withdraw an announced service", cfg: cfgOf(svc("web", "192.0.2.1", 4)),
			states: states{3: unknown, 4: unknown}, qualified: map[string]bool{"web": true}, announced: true, reason: ReasonHealthy,
			weights: "1=100 2=100 3=0 4=0"},
		{name: "announce disabled", cfg: cfgOf(svc("web", "192.0.2.1", 2, func(s *config.Service) { s.Announce.Enabled = false })),
			announced: false, reason: ReasonDisabled, weights: "1=100 2=100"},
		{name: "no bgp block", cfg: &config.Config{Services: []*config.Service{svc("web", "192.0.2.1", 2)}},
			announced: false, reason: ReasonNoBGP, weights: "1=100 2=100"},
		{name: "disabled real: weight 0, not counted", cfg: cfgOf(svc("web", "192.0.2.1", 2, func(s *config.Service) { s.Reals[1].Enabled = false })),
			announced: true, reason: ReasonHealthy, weights: "1=100 2=0"},
		{name: "no checks: reals trusted", cfg: cfgOf(svc("web", "192.0.2.1", 2, func(s *config.Service) { s.Checks = nil })),
			states: states{1: down}, announced: true, reason: ReasonHealthy, weights: "1=100 2=100"},
		{name: "count threshold", cfg: cfgOf(svc("web", "192.0.2.1", 3, func(s *config.Service) {
			s.Announce.MinHealthy = config.Threshold{Value: 2}
			s.Announce.RestoreHealthy = config.Threshold{Value: 2}
		})), states: states{1: down, 2: down}, qualified: map[string]bool{"web": true}, announced: false, reason: ReasonBelowThreshold, weights: "1=0 2=0 3=100"},
		{name: "degraded tier", cfg: cfgOf(svc("web", "192.0.2.1", 4, func(s *config.Service) {
			s.Announce.Degraded = config.Degraded{Enabled: true, Below: config.Threshold{Value: 100, Percent: true}, MED: 500, HasMED: true, Prepend: 2}
		})), states: states{1: down}, announced: true, reason: ReasonDegraded, weights: "1=0 2=100 3=100 4=100"},
		{name: "shared VIP: one service below threshold withdraws the VIP",
			cfg: cfgOf(svc("a-web", "192.0.2.1", 2), svc("b-web", "192.0.2.1", 2, func(s *config.Service) {
				s.Port = 443
				s.Reals[0].Addr = netip.MustParseAddr("10.0.0.3")
				s.Reals[1].Addr = netip.MustParseAddr("10.0.0.4")
			})),
			states: states{3: down, 4: down}, announced: false, reason: ReasonSharedVIP, weights: "1=100 2=100"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			plan, err := NewPlan(tt.cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			d := Compute(Input{Config: tt.cfg, Plan: plan, Health: tt.states.health, Qualified: tt.qualified, Adopted: tt.adopted})
			if len(d.VIPStatus) != 1 {
				t.Fatalf("VIPStatus = %+v, want one VIP", d.VIPStatus)
			}
			vs := d.VIPStatus[0]
			if vs.Announced != tt.announced || vs.Reason != tt.reason {
				t.Errorf("announced=%v reason=%s, want %v %s", vs.Announced, vs.Reason, tt.announced, tt.reason)
			}
			if got := weights(d.IPVS.Services[0]); got != tt.weights {
				t.Errorf("weights %q, want %q", got, tt.weights)
			}
			if (len(d.Routes) == 1) != tt.announced {
				t.Errorf("routes %+v with announced=%v", d.Routes, tt.announced)
			}
		})
	}
}

func TestHysteresisSequence(t *testing.T) {
	// A service flapping one real around the threshold announces and
	// withdraws only at the two thresholds: 4 reals, min 50%, restore 75%.
	cfg := cfgOf(svc("web", "192.0.2.1", 4))
	steps := []struct {
		down      int // reals 1..down are down
		announced bool
	}{
		{0, true}, {1, true}, {2, true}, {1, true}, {2, true}, {3, false}, {2, false}, {1, true}, {2, true},
	}
	var qualified map[string]bool
	for i, s := range steps {
		st := states{}
		for r := 1; r <= s.down; r++ {
			st[byte(r)] = health.Down
		}
		d := compute(t, cfg, st, qualified)
		if got := d.VIPStatus[0].Announced; got != s.announced {
			t.Fatalf("step %d (%d down): announced=%v, want %v", i, s.down, got, s.announced)
		}
		qualified = d.Qualified
	}
}

func TestDegradedAttributes(t *testing.T) {
	cfg := cfgOf(svc("web", "192.0.2.1", 4, func(s *config.Service) {
		s.Announce.MED, s.Announce.HasMED, s.Announce.Prepend = 10, true, 1
		s.Announce.Communities = []config.Community{65010<<16 | 100}
		s.Announce.Degraded = config.Degraded{Enabled: true, Below: config.Threshold{Value: 100, Percent: true}, MED: 500, HasMED: true, Prepend: 2}
	}))
	healthy := compute(t, cfg, nil, nil).Routes[0]
	if healthy.MED != 10 || healthy.Prepend != 1 || healthy.Degraded || healthy.Prefix.String() != "192.0.2.1/32" {
		t.Errorf("healthy route %+v", healthy)
	}
	degraded := compute(t, cfg, states{1: health.Down}, map[string]bool{"web": true}).Routes[0]
	if degraded.MED != 500 || degraded.Prepend != 3 || !degraded.Degraded || len(degraded.Communities) != 1 {
		t.Errorf("degraded route %+v", degraded)
	}
}

func TestIPVSShape(t *testing.T) {
	cfg := cfgOf(svc("web", "2001:db8::1", 0, func(s *config.Service) {
		s.Family = config.IPv6
		s.Protocol = config.UDP
		s.Scheduler = config.SchedMH
		s.Flags = []config.Flag{config.FlagMHFallback, config.FlagMHPort}
		s.Persistence = config.Persistence{Enabled: true, Timeout: 300 * time.Second, PrefixLen: 64}
		s.Reals = []config.Real{{Addr: netip.MustParseAddr("2001:db8::10"), Port: 53, Weight: 7, Enabled: true}}
	}))
	d := compute(t, cfg, nil, nil)
	got := d.IPVS.Services[0]
	want := ipvs.AddrKey(ipvs.UDP, netip.MustParseAddr("2001:db8::1"), 80)
	if got.Key != want || got.Scheduler != "mh" || got.Flags != ipvs.FlagPersistent|ipvs.FlagSched1|ipvs.FlagSched2 ||
		got.Timeout != 300*time.Second || got.Netmask != 64 || got.Drain != 30*time.Second {
		t.Errorf("service %+v", got)
	}
	if r := got.Reals[0]; r.Forward != ipvs.ForwardTunnel || r.Weight != 7 || r.Port != 53 {
		t.Errorf("real %+v", r)
	}
	if d.Routes[0].Prefix.String() != "2001:db8::1/128" {
		t.Errorf("route %v", d.Routes[0].Prefix)
	}
}

func TestTunnelPlan(t *testing.T) {
	cfg := cfgOf(
		svc("a", "192.0.2.1", 2, func(s *config.Service) { s.Checks[0].Tunnel = true }),
		svc("b", "192.0.2.2", 2, func(s *config.Service) { s.Checks[0].Tunnel = true }),
	)
	reals := TunnelReals(cfg)
	if len(reals) != 2 {
		t.Fatalf("TunnelReals = %v", reals)
	}
	if _, err := NewPlan(cfg, nil); err == nil {
		t.Error("NewPlan without marks: no error")
	}
	marks := map[netip.Addr]uint32{reals[0]: 1001, reals[1]: 1002}
	plan, err := NewPlan(cfg, marks)
	if err != nil {
		t.Fatal(err)
	}
	// Two services share the reals but each probes its own VIP: 4 targets,
	// 2 one-real fwmark services.
	if n := len(plan.All()); n != 4 {
		t.Errorf("%d targets, want 4", n)
	}
	ts := plan.Targets("a", netip.MustParseAddrPort("10.0.0.2:80"))
	if len(ts) != 1 || ts[0].Spec.Mark != 1002 || !ts[0].Spec.Tunnel || ts[0].Dest().String() != "192.0.2.1:80" {
		t.Errorf("targets of a/10.0.0.2 = %+v", ts)
	}
	d := Compute(Input{Config: cfg, Plan: plan, Health: states{}.health})
	var fw []string
	for _, s := range d.IPVS.Services {
		if s.Key.FWMark != 0 {
			fw = append(fw, s.Key.String()+" -> "+s.Reals[0].Addr.String()+" "+s.Reals[0].Forward.String()+" w"+strconv.Itoa(int(s.Reals[0].Weight)))
		}
	}
	if got := strings.Join(fw, "; "); got != "fwmark 1001 ipv4 -> 10.0.0.1 tunnel w1; fwmark 1002 ipv4 -> 10.0.0.2 tunnel w1" {
		t.Errorf("fwmark services: %s", got)
	}
}

func TestSharedCheckIsOneTarget(t *testing.T) {
	// Two services with the same real and the same check share one probe.
	cfg := cfgOf(svc("a", "192.0.2.1", 1), svc("b", "192.0.2.2", 1))
	plan, err := NewPlan(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(plan.All()); n != 1 {
		t.Errorf("%d targets, want 1", n)
	}
}

// Every check attribute reaches the probe: the syslog line's text too.
func TestSpecOfSyslog(t *testing.T) {
	c := config.Check{Type: config.CheckSyslog, Interval: 2 * time.Second, Timeout: time.Second, Rise: 1, Fall: 1,
		Syslog: config.SyslogCheck{Transport: config.TransportTCP, Message: "lb42 probe"}}
	s, err := specOf(config.Service{Name: "logs"}, c)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Syslog.TCP || s.Syslog.Message != "lb42 probe" {
		t.Errorf("syslog params %+v", s.Syslog)
	}
}
