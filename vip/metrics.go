package vip

import "github.com/prometheus/client_golang/prometheus"

// Write operations (OpAdd, OpDel and opLink) and their outcomes, the label
// values of kglb_vip_writes_total. The set is fixed so the series are
// bounded.
const (
	opLink = "link"

	outcomeOK     = "ok"
	outcomeError  = "error"
	outcomeExists = "exists" // add answered EEXIST: someone else added it since the dump
	outcomeGone   = "gone"   // delete answered ESRCH/EADDRNOTAVAIL: already removed
)

type metrics struct {
	writes   *prometheus.CounterVec
	byLabel  map[[2]string]prometheus.Counter // guarded by Reconciler.mu
	held     prometheus.Gauge
	foreign  prometheus.Gauge
	applies  *prometheus.CounterVec
	duration prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		byLabel: map[[2]string]prometheus.Counter{},
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kglb_vip_writes_total",
			Help: "Netlink writes issued for VIPs by op (add, del, link: creating or raising kglb's link) and outcome (ok, error, exists: the entry appeared since the dump, gone: it vanished since the dump).",
		}, []string{"op", "outcome"}),
		held: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kglb_vip_held",
			Help: "VIPs held on kglb's link by entries kglb owns, after the last apply.",
		}),
		foreign: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kglb_vip_foreign",
			Help: "Desired VIPs already held on kglb's link by an entry kglb does not own (left alone; they work).",
		}),
		applies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kglb_vip_applies_total",
			Help: "VIP reconciliations by result (ok, error: at least one item or the dump failed).",
		}, []string{"result"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "kglb_vip_apply_duration_seconds",
			Help:    "Time of one VIP reconciliation: the dump, the diff and the writes.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		}),
	}
	for _, op := range []string{OpAdd, OpDel, opLink} {
		for _, o := range []string{outcomeOK, outcomeError, outcomeExists, outcomeGone} {
			if op == opLink && (o == outcomeExists || o == outcomeGone) {
				continue
			}
			m.writes.WithLabelValues(op, o)
		}
	}
	m.applies.WithLabelValues("ok")
	m.applies.WithLabelValues("error")
	if reg != nil {
		for _, c := range []prometheus.Collector{m.writes, m.held, m.foreign, m.applies, m.duration} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// write counts one write. The counters are looked up once, not per write:
// a cold start issues tens of thousands.
func (m *metrics) write(op, outcome string) {
	k := [2]string{op, outcome}
	c, ok := m.byLabel[k]
	if !ok {
		c = m.writes.WithLabelValues(op, outcome)
		m.byLabel[k] = c
	}
	c.Inc()
}
