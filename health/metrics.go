package health

import (
	"net/netip"

	"github.com/kglb/kglb/internal/promtext"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the health metrics. The per-Target series are not prometheus vectors:
// the counters live in each entry (updated under the lock the result is recorded
// under anyway) and WriteMetrics writes them at scrape time, straight to the page
// (package promtext). That keeps a probe's cost to a few array increments, costs
// ~150 bytes per Target (all state included) instead of a vector child per series,
// drops the series of a removed Target with the Target, and lets a scrape of
// 10,000 reals cost its bytes on the page rather than an object per series.
//
// Labels of the per-Target series: real (address:port of the real), check (type) and
// id (Spec.ID, 8 hex digits); results_total adds outcome (4 values). They name the
// probe, not the services using it, so the series count is bounded by the number of
// distinct Targets T: T state series and at most 4T result series. The probe
// duration histogram is per check type (check label only): 17 series per type
// in use, whatever T (see durations).
type metrics struct {
	s *Scheduler

	duration *prometheus.Desc
	targets  *prometheus.Desc

	lag      prometheus.Histogram
	inFlight prometheus.Gauge
	changes  *prometheus.CounterVec
	rate     *prometheus.GaugeVec
}

// The per-Target families (see metrics).
const (
	stateName   = "kglb_health_state"
	stateHelp   = "Verdict of a real for one check: 1 up, 0 down, -1 unknown (not yet decided)."
	resultsName = "kglb_health_results_total"
	resultsHelp = "Probe results by outcome: ok, fail (answered wrongly or refused), timeout, error (local failure)."
)

func newMetrics(s *Scheduler, reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		s: s,
		duration: prometheus.NewDesc("kglb_health_probe_duration_seconds",
			"Duration of probes, from start to verdict, by check type (each real's results are in kglb_health_results_total).",
			[]string{"check"}, nil),
		targets: prometheus.NewDesc("kglb_health_targets",
			"Distinct probes (real + check) by verdict.", []string{"state"}, nil),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "kglb_health_probe_lag_seconds",
			Help:    "How late probes start after their due time; growth means the concurrency bound or the CPU is saturated.",
			Buckets: []float64{0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5},
		}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kglb_health_probes_in_flight", Help: "Probes running now.",
		}),
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kglb_health_changes_total", Help: "Verdict changes, by new state.",
		}, []string{"state"}),
		rate: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kglb_health_probes_per_second",
			Help: "Probe rate over the last 30s: configured (what the intervals ask for) and managed (what ran); managed below configured means the CPU is saturated and kglb logs a warning.",
		}, []string{"rate"}),
	}
	for _, c := range []prometheus.Collector{m, m.lag, m.inFlight, m.changes, m.rate} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.duration
	ch <- m.targets
}

type entryMetrics struct {
	real   netip.AddrPort
	spec   *Spec
	id     string
	state  State
	counts [numOutcomes]uint64
}

// snapshot copies the per-Target series, so that the page is written
// without the scheduler's lock.
func (m *metrics) snapshot() []entryMetrics {
	m.s.mu.Lock()
	defer m.s.mu.Unlock()
	snap := make([]entryMetrics, 0, len(m.s.tab.entries))
	for _, e := range m.s.tab.entries {
		snap = append(snap, entryMetrics{real: e.real, spec: e.spec, id: e.id, state: e.state, counts: e.counts})
	}
	return snap
}

// WriteMetrics writes the per-Target families to a page (promtext.Source).
func (m *metrics) WriteMetrics(w *promtext.Writer) {
	snap := m.snapshot()
	reals := make([]string, len(snap))
	for i := range snap {
		reals[i] = snap[i].real.String()
	}
	w.Family(stateName, stateHelp, promtext.Gauge, "real", "check", "id")
	for i := range snap {
		e := &snap[i]
		v := -1.0
		switch e.state {
		case Up:
			v = 1
		case Down:
			v = 0
		}
		w.Sample(v, reals[i], e.spec.Type.String(), e.id)
	}
	w.Family(resultsName, resultsHelp, promtext.Counter, "real", "check", "id", "outcome")
	for i := range snap {
		e := &snap[i]
		for o, n := range e.counts {
			if n > 0 {
				w.Sample(float64(n), reals[i], e.spec.Type.String(), e.id, Outcome(o).String())
			}
		}
	}
}

func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	m.s.mu.Lock()
	var byState [3]int
	for _, e := range m.s.tab.entries {
		byState[e.state]++
	}
	durs := make(map[Type]durations, len(m.s.tab.durations))
	for t, d := range m.s.tab.durations {
		durs[t] = *d
	}
	m.s.mu.Unlock()

	for t, d := range durs {
		buckets := make(map[float64]uint64, len(durationBuckets))
		var cum uint64
		for i, ub := range durationBuckets {
			cum += d.buckets[i]
			buckets[ub] = cum
		}
		ch <- prometheus.MustNewConstHistogram(m.duration, d.count, d.sum, buckets, t.String())
	}
	for st, n := range byState {
		ch <- prometheus.MustNewConstMetric(m.targets, prometheus.GaugeValue, float64(n), State(st).String())
	}
}

// WriteMetrics writes each probe's verdict and results by outcome to a
// metrics page (promtext.Source), if the Scheduler has a Registerer: the
// series per real that the registry does not hold (see metrics).
func (s *Scheduler) WriteMetrics(w *promtext.Writer) {
	if s.met != nil {
		s.met.WriteMetrics(w)
	}
}
