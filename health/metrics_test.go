package health

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/kglb/kglb/internal/promtext"
)

// The probe duration histogram is one per check type, whatever the number
// of reals; each real keeps its own verdict and results.
func TestDurationHistogramPerCheckType(t *testing.T) {
	h := newHarness(t, 2)
	a, b := tcpTarget("127.0.0.1:80", time.Second, 1, 1), tcpTarget("127.0.0.2:80", time.Second, 1, 1)
	h.f.set(a.Real, Timeout)
	h.s.Update([]Target{a, b})
	h.settle()
	h.advance(2*time.Second, time.Second)
	mfs, err := promtext.Gatherer(h.reg, h.s).Gather()
	if err != nil {
		t.Fatal(err)
	}
	series := map[string]int{}
	var probes, results uint64
	var labels []string
	for _, mf := range mfs {
		series[mf.GetName()] = len(mf.GetMetric())
		for _, m := range mf.GetMetric() {
			switch mf.GetName() {
			case "kglb_health_probe_duration_seconds":
				probes = m.GetHistogram().GetSampleCount()
				for _, lp := range m.GetLabel() {
					labels = append(labels, lp.GetName()+"="+lp.GetValue())
				}
			case "kglb_health_results_total":
				results += uint64(m.GetCounter().GetValue())
			}
		}
	}
	want := map[string]int{"kglb_health_state": 2, "kglb_health_results_total": 2, "kglb_health_probe_duration_seconds": 1}
	for name, n := range want {
		if series[name] != n {
			t.Errorf("%s: %d series, want %d", name, series[name], n)
		}
	}
	if diff := cmp.Diff([]string{"check=tcp"}, labels); diff != "" {
		t.Errorf("histogram labels (-want +got):\n%s", diff)
	}
	if probes == 0 || probes != results {
		t.Errorf("histogram counts %d probes, the reals' results %d", probes, results)
	}
}
