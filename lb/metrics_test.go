package lb

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kglb/kglb/config"
	"github.com/kglb/kglb/health"
	"github.com/kglb/kglb/ipvs"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// timedIPVS moves the engine's clock on every write, as a kernel that takes
// time does: the only time a pass spends is spent here.
type timedIPVS struct {
	IPVS
	now  *time.Time
	took time.Duration
}

func (t *timedIPVS) Apply(ctx context.Context, d ipvs.Desired) (ipvs.Result, error) {
	*t.now = t.now.Add(t.took)
	return t.IPVS.Apply(ctx, d)
}

func (t *timedIPVS) Resync(ctx context.Context, d ipvs.Desired) (ipvs.Result, error) {
	*t.now = t.now.Add(t.took)
	return t.IPVS.Resync(ctx, d)
}

// verdicts gives every target of the reals the state st, as the health
// scheduler would, and returns the changes it would report.
func (p *tableProber) verdicts(st health.State, reals ...string) []health.Change {
	var out []health.Change
	for _, t := range p.targets {
		if slices.Contains(reals, t.Real.String()) {
			p.states[t] = st
			out = append(out, health.Change{Key: t, State: st})
		}
	}
	return out
}

// engineSeries is what the engine's gauges should say after a pass.
type engineSeries struct {
	services          int
	up, down, unknown int
	vips              []vipSeriesWant // every VIP with a series, nothing else
}

type vipSeriesWant struct {
	vip       string
	announced bool
	reason    string
}

// exposition renders s as the text /metrics serves.
func (s engineSeries) exposition() string {
	var b strings.Builder
	b.WriteString(`# HELP kglb_services Services in the running configuration.
# TYPE kglb_services gauge
`)
	fmt.Fprintf(&b, "kglb_services %d\n", s.services)
	b.WriteString(`# HELP kglb_reals Enabled reals of enabled services by health state (up, down, unknown); a real in two services counts twice.
# TYPE kglb_reals gauge
`)
	fmt.Fprintf(&b, "kglb_reals{state=%q} %d\nkglb_reals{state=%q} %d\nkglb_reals{state=%q} %d\n",
		"up", s.up, "down", s.down, "unknown", s.unknown)
	if len(s.vips) == 0 {
		return b.String()
	}
	b.WriteString(`# HELP kglb_vip_announced 1 while the VIP should be announced, 0 while it is withdrawn; kglb_vip_announce_reason says why.
# TYPE kglb_vip_announced gauge
`)
	for _, v := range s.vips {
		val := 0
		if v.announced {
			val = 1
		}
		fmt.Fprintf(&b, "kglb_vip_announced{vip=%q} %d\n", v.vip, val)
	}
	b.WriteString(`# HELP kglb_vip_announce_reason 1 for the reason of the VIP's current announce decision (healthy, degraded, below_threshold, initial_round, all_down, all_down_fail_open, no_reals, disabled, no_bgp, shared_vip_peer).
# TYPE kglb_vip_announce_reason gauge
`)
	for _, v := range s.vips {
		fmt.Fprintf(&b, "kglb_vip_announce_reason{reason=%q,vip=%q} 1\n", v.reason, v.vip)
	}
	return b.String()
}

// histogram returns the sample count and sum of one kind's durations.
func histogram(t *testing.T, reg *prometheus.Registry, kind string) (uint64, float64) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "kglb_reconcile_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "kind" && l.GetValue() == kind {
					return m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum()
				}
			}
		}
	}
	return 0, 0
}

// TestEngineMetrics drives an engine through health changes, a reload that
// removes a service and a pass that fails, and checks after each pass every
// gauge series the engine exports: the values, and that a VIP no longer
// configured, or a reason no longer current, has no series left.
func TestEngineMetrics(t *testing.T) {
	ctx := context.Background()
	web := svc("web", "192.0.2.1", 3, func(s *config.Service) { s.Reals[2].Enabled = false })
	api := svc("api", "192.0.2.2", 1, func(s *config.Service) { s.Reals[0].Addr = netip.MustParseAddr("10.0.0.4") })
	old := svc("old", "192.0.2.3", 1, func(s *config.Service) { s.Enabled = false; s.Reals[0].Addr = netip.MustParseAddr("10.0.0.5") })
	full := daemonCfg(api, old, web)
	reduced := daemonCfg(old, web)

	now := time.Unix(1e9, 0)
	ir, vr := fakeReconcilers(t, ipvs.NewFake())
	vips := &flakyVIPs{VIPs: vr}
	prober := &tableProber{}
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	e, err := NewEngine(Options{
		IPVS: &timedIPVS{IPVS: ir, now: &now, took: 3 * time.Millisecond}, VIPs: vips, Announcer: &fakeAnnouncer{},
		Prober: prober, Metrics: m, Now: func() time.Time { return now },
	}, full)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.adopt(ctx); err != nil {
		t.Fatal(err)
	}

	errBoom := errors.New("boom")
	verdict := func(st health.State, reals ...string) func() {
		return func() {
			e.verdicts(ctx, prober.verdicts(st, reals...))
		}
	}
	steps := []struct {
		name string
		pass func()
		kind string
		want engineSeries
	}{
		{"start: no verdicts yet", func() { e.setConfig(full); e.reconcile(ctx, kindPass) }, "full", engineSeries{
			services: 3, unknown: 3,
			vips: []vipSeriesWant{{"192.0.2.1", false, ReasonInitialRound}, {"192.0.2.2", false, ReasonInitialRound}},
		}},
		{"every real up", verdict(health.Up, "10.0.0.1:80", "10.0.0.2:80", "10.0.0.4:80"), "health", engineSeries{
			services: 3, up: 3,
			vips: []vipSeriesWant{{"192.0.2.1", true, ReasonHealthy}, {"192.0.2.2", true, ReasonHealthy}},
		}},
		{"one of web's two down: half still qualifies", verdict(health.Down, "10.0.0.2:80"), "health", engineSeries{
			services: 3, up: 2, down: 1,
			vips: []vipSeriesWant{{"192.0.2.1", true, ReasonHealthy}, {"192.0.2.2", true, ReasonHealthy}},
		}},
		{"web all down: withdrawn", verdict(health.Down, "10.0.0.1:80"), "health", engineSeries{
			services: 3, down: 2, up: 1,
			vips: []vipSeriesWant{{"192.0.2.1", false, ReasonAllDown}, {"192.0.2.2", true, ReasonHealthy}},
		}},
		{"one back, below restore_healthy: still withdrawn, another reason", verdict(health.Up, "10.0.0.1:80"), "health", engineSeries{
			services: 3, up: 2, down: 1,
			vips: []vipSeriesWant{{"192.0.2.1", false, ReasonBelowThreshold}, {"192.0.2.2", true, ReasonHealthy}},
		}},
		{"reload without api: its VIP's series go", func() { e.setConfig(reduced); e.reconcile(ctx, kindPass) }, "full", engineSeries{
			services: 2, up: 1, down: 1,
			vips: []vipSeriesWant{{"192.0.2.1", false, ReasonBelowThreshold}},
		}},
		{"a resync that fails", func() { vips.fail = errBoom; e.reconcile(ctx, kindResync); vips.fail = nil }, "full", engineSeries{
			services: 2, up: 1, down: 1,
			vips: []vipSeriesWant{{"192.0.2.1", false, ReasonBelowThreshold}},
		}},
		{"web healthy again", verdict(health.Up, "10.0.0.2:80"), "health", engineSeries{
			services: 2, up: 2,
			vips: []vipSeriesWant{{"192.0.2.1", true, ReasonHealthy}},
		}},
	}

	passes := map[[2]string]float64{} // by kind and result
	took := map[string]time.Duration{}
	for _, step := range steps {
		before := now
		step.pass()
		_, err := e.Status()
		result := "ok"
		if err != nil {
			result = "error"
		}
		passes[[2]string{step.kind, result}]++
		took[step.kind] += now.Sub(before)

		if err := testutil.GatherAndCompare(reg, strings.NewReader(step.want.exposition()),
			"kglb_services", "kglb_reals", "kglb_vip_announced", "kglb_vip_announce_reason"); err != nil {
			t.Errorf("%s: %v", step.name, err)
		}
		for _, kind := range []string{"full", "health"} {
			for _, result := range []string{"ok", "error"} {
				// A series never touched is not exported: look before
				// WithLabelValues makes one.
				if n := passes[[2]string{kind, result}]; n > 0 {
					if got := testutil.ToFloat64(m.passes.WithLabelValues(kind, result)); got != n {
						t.Errorf("%s: kglb_reconciles_total{kind=%q,result=%q} = %v, want %v", step.name, kind, result, got, n)
					}
				}
			}
			// Each pass is one sample of the time it took on the engine's clock.
			count, sum := histogram(t, reg, kind)
			var want uint64
			for k, n := range passes {
				if k[0] == kind {
					want += uint64(n)
				}
			}
			if count != want || math.Abs(sum-took[kind].Seconds()) > 1e-9 {
				t.Errorf("%s: kglb_reconcile_duration_seconds{kind=%q}: %d samples, sum %v; want %d, sum %v",
					step.name, kind, count, sum, want, took[kind].Seconds())
			}
		}
	}
	if passes[[2]string{"full", "error"}] != 1 {
		t.Errorf("the failing resync did not fail: passes %v", passes)
	}
	if got := testutil.CollectAndCount(m.passes); got != len(passes) {
		t.Errorf("kglb_reconciles_total has %d series, want %d (%v)", got, len(passes), passes)
	}
}

// TestStatusReadDuringHealthPasses reads the status and scrapes the
// metrics while health passes decide services again in place, for the race
// detector: every read is a whole state, and the last one is the last
// verdict's.
func TestStatusReadDuringHealthPasses(t *testing.T) {
	web := svc("web", "192.0.2.1", 2)
	api := svc("api", "192.0.2.2", 2, func(s *config.Service) {
		s.Reals[0].Addr, s.Reals[1].Addr = netip.MustParseAddr("10.0.1.1"), netip.MustParseAddr("10.0.1.2")
	})
	ir, vr := fakeReconcilers(t, ipvs.NewFake())
	p := &flipProber{ch: make(chan []health.Change), down: map[health.Target]bool{}}
	reg := prometheus.NewRegistry()
	e, err := NewEngine(Options{IPVS: ir, VIPs: vr, Announcer: &fakeAnnouncer{}, Prober: p, Metrics: NewMetrics(reg)}, daemonCfg(api, web))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx, nil) }()
	var target health.Target
	eventually(t, "the prober has its targets", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		if len(p.targets) == 0 {
			return false
		}
		target = p.targets[0]
		return true
	})

	stop := make(chan struct{})
	read := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				read <- nil
				return
			default:
			}
			d, _ := e.Status()
			for _, s := range d.Services {
				if len(s.Reals) != 2 || s.Healthy+s.Down > s.Total {
					read <- fmt.Errorf("torn status of %s: %+v", s.Name, s)
					return
				}
			}
			if _, err := reg.Gather(); err != nil {
				read <- err
				return
			}
		}
	}()
	down := false
	for range 201 {
		down = !down
		p.flip(target, down)
	}
	close(stop)
	if err := <-read; err != nil {
		t.Error(err)
	}
	// The last verdict (down) is in the status once its pass is over.
	eventually(t, "the last verdict's status", func() bool {
		d, _ := e.Status()
		return len(d.Services) == 2 && d.Services[0].Down+d.Services[1].Down == 1
	})
	cancel()
	if err := <-done; err != nil {
		t.Error(err)
	}
}
