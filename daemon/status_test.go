package daemon

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/kglb/kglb/config"
	"github.com/kglb/kglb/health"
	"github.com/kglb/kglb/ipvs"
	"github.com/kglb/kglb/lb"
	"github.com/kglb/kglb/vip"
	"github.com/prometheus/client_golang/prometheus"
)

// /status shows each service's description as the configuration has it.
func TestStatusShowsDescription(t *testing.T) {
	cfg, err := config.Load(writeDir(t, `
service "web" {
  vip         = "198.51.100.10"
  port        = 443
  description = "checkout API, team payments"
  real "203.0.113.11" {}
  check "tcp" {}
}

service "bare" {
  vip  = "198.51.100.20"
  port = 80
  real "203.0.113.21" {}
}
`))
	if err != nil {
		t.Fatal(err)
	}
	ir, vr := fakeDataPlane(t)
	e, err := lb.NewEngine(lb.Options{IPVS: ir, VIPs: vr, Announcer: &routes{}, Prober: newUpProber()}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx, make(chan *config.Config)) }()
	t.Cleanup(func() { cancel(); <-done })
	if _, err := e.PlanConfig(ctx, cfg); err != nil { // after the first pass
		t.Fatal(err)
	}
	sched, err := health.New(health.Options{})
	if err != nil {
		t.Fatal(err)
	}
	d := &daemon{reg: prometheus.NewRegistry(), engine: e, sched: sched, dir: "/etc/kglb"}
	st := d.status()
	got := map[string]string{}
	for _, s := range st.Services {
		got[s.Name] = s.Description
	}
	if got["web"] != "checkout API, team payments" || got["bare"] != "" || len(got) != 2 {
		t.Errorf("descriptions %q", got)
	}
	js, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(js), `"description":`); n != 1 {
		t.Errorf("%d descriptions in the JSON, want the one set: %s", n, js)
	}
}

// fakeDataPlane is an IPVS and a VIP reconciler over the kernel fakes, for
// an engine run in a test.
func fakeDataPlane(t *testing.T) (*ipvs.Reconciler, *vip.Reconciler) {
	t.Helper()
	ir, err := ipvs.NewReconciler(ipvs.NewFake(), ipvs.Options{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	vr, err := vip.New(vip.Options{Kernel: vip.NewFake("kglb0")})
	if err != nil {
		t.Fatal(err)
	}
	return ir, vr
}
