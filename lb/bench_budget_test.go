package lb

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// BenchmarkEditBudget is issue 12's host budget for an edit: a one-line
// edit (one real's weight) in one of 100 files of 10,000 services x 10
// reals (100,000 reals), from the file to the (fake) kernel, as the daemon
// runs it when its watch names the file: the Loader's LoadChanged, then
// the engine's setConfig and reconcile, wired as the daemon wires it (a
// bgp block in a file of its own, an announcer, metrics). Edits are 20 ms
// apart, as an operator's reach a daemon; the watch's debounce is not
// included.
//
// Target (tools/benchtab/targets.txt): p50 under 50 ms, and exactly one
// kernel write per edit.
func BenchmarkEditBudget(b *testing.B) {
	const services, reals = 10000, 10
	dir := b.TempDir()
	writeServices(b, dir, services, reals, 100)
	bgp := "bgp {\n  asn       = 65010\n  router_id = \"192.0.2.10\"\n\n  neighbor \"tor\" {\n    address = \"192.0.2.1\"\n    asn     = 65000\n  }\n}\n"
	if err := os.WriteFile(filepath.Join(dir, "bgp.hcl"), []byte(bgp), 0o644); err != nil {
		b.Fatal(err)
	}
	l, cfg := settledLoader(b, dir)
	e, k := benchEngine(b, cfg, Options{Announcer: nopAnnouncer{}, Metrics: NewMetrics(nil)})
	ctx := context.Background()
	changed := []string{filepath.Join(dir, "svc-00000.hcl")}
	var took []time.Duration
	writes, w := 0, 100
	for b.Loop() {
		b.StopTimer()
		time.Sleep(20 * time.Millisecond)
		w = 300 - w // 100, 200, 100, ...
		writeServiceFile(b, dir, 0, 100, reals, w)
		k.ResetCounts()
		b.StartTimer()
		start := time.Now()
		cfg, err := l.LoadChanged(dir, changed)
		if err != nil {
			b.Fatal(err)
		}
		e.setConfig(cfg)
		e.reconcile(ctx, kindPass)
		took = append(took, time.Since(start))
		writes += k.Writes().Total()
	}
	slices.Sort(took)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(took[len(took)/2]), "p50-ms")
	b.ReportMetric(ms(took[len(took)*9/10]), "p90-ms")
	b.ReportMetric(float64(writes)/float64(len(took)), "writes/edit")
}
