package lb

import (
	"context"
	"fmt"
	"io"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/kglb/kglb/config"
	"github.com/kglb/kglb/ipvs"
)

// nopAnnouncer takes routes and does nothing with them.
type nopAnnouncer struct{}

func (nopAnnouncer) Apply(context.Context, []Route) error { return nil }
func (nopAnnouncer) WithdrawAll(context.Context) error    { return nil }

// editEngine is an engine wired as the daemon wires it (metrics, an
// announcer, a bgp block, so every pass decides routes) over fake kernels,
// running the first of two configurations of services x 10 reals that
// differ in one real's weight.
func editEngine(b *testing.B, services int) (*Engine, *ipvs.Fake, [2]*config.Config) {
	b.Helper()
	var cfgs [2]*config.Config
	for i, w := range []int{100, 200} {
		dir := b.TempDir()
		writeServices(b, dir, services, 10, w)
		cfg, err := config.Load(dir)
		if err != nil {
			b.Fatal(err)
		}
		cfg.BGP = config.BGP{Enabled: true, ASN: 65010}
		cfgs[i] = cfg
	}
	log := hclog.New(&hclog.LoggerOptions{Output: io.Discard, Level: hclog.Info})
	e, k := benchEngine(b, cfgs[0], Options{Announcer: nopAnnouncer{}, Metrics: NewMetrics(nil), Logger: log})
	return e, k, cfgs
}

// BenchmarkEngineEdit times only the engine's share of a one-line edit (one
// real's weight): a reload as Run makes it (setConfig, the pass, and the
// description of what it did, logged at Info to a discarding logger), with
// both configurations loaded
// before the timer starts, alternating between them. Loading is
// BenchmarkEditToKernel's business; this one shows what the engine adds.
func BenchmarkEngineEdit(b *testing.B) {
	for _, services := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("services=%d", services), func(b *testing.B) {
			e, k, cfgs := editEngine(b, services)
			ctx := context.Background()
			n := 0
			for b.Loop() {
				n++
				k.ResetCounts()
				e.reload(ctx, cfgs[n%2])
				if w := k.Writes().Total(); w != 1 {
					b.Fatalf("a one-line edit made %d writes (%s), want 1", w, k.Writes())
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/edit")
		})
	}
}

// BenchmarkPlanEdit times the plan of a one-line edit (what `kglb plan`
// costs the daemon): the desired state computed afresh and the
// reconcilers' diff on a copy of their state. Beside BenchmarkEngineEdit it
// shows why a reload does not plan before it applies.
func BenchmarkPlanEdit(b *testing.B) {
	for _, services := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("services=%d", services), func(b *testing.B) {
			e, _, cfgs := editEngine(b, services)
			ctx := context.Background()
			for b.Loop() {
				r, err := e.review(ctx, cfgs[1])
				if err != nil || len(r.IPVSWrites) != 1 {
					b.Fatalf("plan of a one-line edit: %d writes (%v)", len(r.IPVSWrites), err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/plan")
		})
	}
}
