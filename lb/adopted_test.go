package lb

import (
	"context"
	"strings"
	"testing"

	"github.com/kglb/kglb/config"
	"github.com/kglb/kglb/health"
	"github.com/kglb/kglb/ipvs"
	"github.com/kglb/kglb/vip"
)

// syncEngine is an engine driven step by step, on the test's goroutine,
// over a fake kernel and ownership record that outlive it (a restart is a
// second syncEngine on the same kernel and directory).
type syncEngine struct {
	e      *Engine
	prober *tableProber
}

func newSyncEngine(t *testing.T, kernel *ipvs.Fake, dir string, cfg *config.Config) *syncEngine {
	t.Helper()
	ir, err := ipvs.NewReconciler(kernel, ipvs.Options{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	vr, err := vip.New(vip.Options{Kernel: vip.NewFake("kglb0")})
	if err != nil {
		t.Fatal(err)
	}
	p := &tableProber{}
	e, err := NewEngine(Options{IPVS: ir, VIPs: vr, Announcer: &fakeAnnouncer{}, Prober: p}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.adopt(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.setConfig(cfg)
	e.reconcile(context.Background(), kindPass)
	return &syncEngine{e: e, prober: p}
}

func (s *syncEngine) verdict(st health.State, reals ...string) {
	s.e.verdicts(context.Background(), s.prober.verdicts(st, reals...))
}

func (s *syncEngine) reload(cfg *config.Config) { s.e.reload(context.Background(), cfg) }

// kernelWeight is the weight of real in the fake kernel's listing, or "none".
func kernelWeight(k *ipvs.Fake, real string) string {
	for _, l := range strings.Split(k.String(), "\n") {
		if f := strings.Fields(l); len(f) > 3 && f[1] == real {
			return f[3]
		}
	}
	return "none"
}

// TestAdoptedWeightEndsAtFirstVerdict: a real adopted at a restart keeps
// the weight the kernel had only until its first verdict. Once judged, a
// real that starts unknown again (removed and added back, or its check
// edited) is a new real: weight 0 until it passes, never the weight the
// kernel had when the daemon started.
func TestAdoptedWeightEndsAtFirstVerdict(t *testing.T) {
	base := func(mod ...func(*config.Service)) *config.Config {
		c := daemonCfg(svc("web", "192.0.2.1", 2, append([]func(*config.Service){func(s *config.Service) { s.Drain = 0 }}, mod...)...))
		return c
	}
	restarted := func(t *testing.T) (*ipvs.Fake, *syncEngine) {
		kernel, dir := ipvs.NewFake(), t.TempDir()
		first := newSyncEngine(t, kernel, dir, base())
		first.verdict(health.Up, "10.0.0.1:80", "10.0.0.2:80")
		if got := kernelWeight(kernel, "10.0.0.2:80"); got != "100" {
			t.Fatalf("before the restart: weight %s, want 100\n%s", got, kernel)
		}
		// A restart: the new process adopts the kernel's weights.
		second := newSyncEngine(t, kernel, dir, base())
		if got := kernelWeight(kernel, "10.0.0.2:80"); got != "100" {
			t.Fatalf("adopted: weight %s, want 100\n%s", got, kernel)
		}
		second.verdict(health.Up, "10.0.0.1:80", "10.0.0.2:80")
		return kernel, second
	}

	t.Run("real removed and added back", func(t *testing.T) {
		kernel, s := restarted(t)
		s.reload(base(func(sv *config.Service) { sv.Reals = sv.Reals[:1] }))
		if got := kernelWeight(kernel, "10.0.0.2:80"); got != "none" {
			t.Fatalf("removed real still there (weight %s)\n%s", got, kernel)
		}
		s.reload(base())
		if got := kernelWeight(kernel, "10.0.0.2:80"); got != "0" {
			t.Errorf("real added back, not yet checked: weight %s, want 0\n%s", got, kernel)
		}
	})

	t.Run("check of a down real edited", func(t *testing.T) {
		kernel, s := restarted(t)
		s.verdict(health.Down, "10.0.0.2:80")
		if got := kernelWeight(kernel, "10.0.0.2:80"); got != "0" {
			t.Fatalf("down real: weight %s, want 0\n%s", got, kernel)
		}
		// A new port is a new probe: the scheduler starts it unknown.
		s.reload(base(func(sv *config.Service) { sv.Checks[0].Port = 8080 }))
		if got := kernelWeight(kernel, "10.0.0.2:80"); got != "0" {
			t.Errorf("down real whose check was edited, not yet checked again: weight %s, want 0\n%s", got, kernel)
		}
	})
}
