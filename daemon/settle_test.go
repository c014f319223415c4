package daemon

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/kglb/kglb/config"
	"github.com/kglb/kglb/health"
	"github.com/kglb/kglb/ipvs"
	"github.com/kglb/kglb/lb"
	"github.com/kglb/kglb/reload"
	"github.com/kglb/kglb/vip"
	"github.com/prometheus/client_golang/prometheus"
)

// unknownProber is a health scheduler whose reals are never checked.
type unknownProber struct{ ch chan []health.Change }

func (p unknownProber) Update([]health.Target) error               { return nil }
func (p unknownProber) Changes() <-chan []health.Change            { return p.ch }
func (p unknownProber) Lookup(health.Target) (health.Status, bool) { return health.Status{}, false }

// The settle rule end to end with the fakes: files -> watcher (Hold) ->
// engine -> IPVS. A writer that truncates a file, pauses past the debounce,
// then writes it again makes no IPVS write; a removal that stays is
// applied (here by an explicit reload, which does not wait).
func TestTruncatePauseWriteMakesNoIPVSWrite(t *testing.T) {
	dir, state := t.TempDir(), t.TempDir()
	// A settle far longer than the test: only the rewrite may end the hold.
	writeFiles(t, dir, map[string]string{
		"kglb.hcl": "daemon {\n  state_dir = \"" + state + "\"\n  settle = \"1h\"\n}\n",
		"a.hcl":    svcHCL("a", 1, 11, 12),
		"b.hcl":    svcHCL("b", 2, 13),
		"c.hcl":    svcHCL("c", 3, 14),
	})
	var last appliedInfo
	w, err := reload.New(watchOptions(dir, state, &last, new(atomic.Bool), hclog.NewNullLogger(), prometheus.NewRegistry()))
	if err != nil {
		t.Fatal(err)
	}
	kernel := ipvs.NewFake()
	ir, err := ipvs.NewReconciler(kernel, ipvs.Options{StateDir: state})
	if err != nil {
		t.Fatal(err)
	}
	vr, err := vip.New(vip.Options{Kernel: vip.NewFake("kglb0")})
	if err != nil {
		t.Fatal(err)
	}
	e, err := lb.NewEngine(lb.Options{IPVS: ir, VIPs: vr, Prober: unknownProber{make(chan []health.Change)}}, w.Current())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	configs := make(chan *config.Config)
	engineDone, watchDone := make(chan error, 1), make(chan error, 1)
	go func() { engineDone <- e.Run(ctx, configs) }()
	go func() { watchDone <- w.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-engineDone; err != nil {
			t.Error(err)
		}
		if err := <-watchDone; err != nil {
			t.Error(err)
		}
	}()
	// apply hands the next update to the engine, and returns once the
	// engine has reconciled it (it takes the next value only then).
	apply := func() *config.Config {
		t.Helper()
		select {
		case c := <-w.Updates():
			configs <- c
			configs <- c
			return c
		case <-time.After(20 * time.Second):
			t.Fatal("no update")
			return nil
		}
	}
	// Once a reload has answered, the watch is in place.
	if o, err := w.ReloadWait(ctx, false); err != nil || o.Result != reload.Unchanged {
		t.Fatalf("first reload = %+v, %v", o, err)
	}
	for !strings.Contains(kernel.String(), "203.0.113.14:80") {
		time.Sleep(10 * time.Millisecond)
	}
	kernel.ResetCounts()

	c := filepath.Join(dir, "c.hcl")
	if err := os.WriteFile(c, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := names(apply()); strings.Join(got, " ") != "a b c" || !w.Status().Settling {
		t.Errorf("after the truncation: %v, settling %v; want c kept", got, w.Status().Settling)
	}
	if err := os.WriteFile(c, []byte(svcHCL("c", 3, 14)), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := names(apply()); strings.Join(got, " ") != "a b c" || w.Status().Settling {
		t.Errorf("after the write: %v, settling %v", got, w.Status().Settling)
	}
	if n := kernel.Writes().Total(); n != 0 {
		t.Errorf("truncate, pause, write: %d IPVS writes (%s), want 0", n, kernel.Writes())
	}

	// The same removal, then an explicit reload: applied at once.
	if err := os.WriteFile(filepath.Join(dir, "a.hcl"), []byte(svcHCL("a", 1, 11)), 0o644); err != nil {
		t.Fatal(err)
	}
	apply()
	if n := kernel.Writes().Total(); n != 0 || !strings.Contains(kernel.String(), "203.0.113.12:80") {
		t.Errorf("a removed real was touched before the files settled: %d writes\n%s", n, kernel)
	}
	if o, err := w.ReloadWait(ctx, false); err != nil || o.Result != reload.Applied {
		t.Fatalf("ReloadWait = %+v, %v", o, err)
	}
	apply()
	// The real drains (weight 0) for the service's drain time, then goes:
	// either way it was written to.
	if n := kernel.Writes().Total(); n == 0 {
		t.Errorf("the settled removal made no IPVS write\n%s", kernel)
	}
}
