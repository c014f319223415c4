package ipvs

import "github.com/prometheus/client_golang/prometheus"

// metrics are the reconciler's own counters. They are created even without
// a registerer, so the hot path has no nil checks.
type metrics struct {
	writes   [numOps][2]prometheus.Counter // [op][ok=0, error=1]
	reads    [2]prometheus.Counter         // services dumps, reals dumps
	duration prometheus.Histogram
	errors   prometheus.Counter
	owned    prometheus.Gauge
	foreign  prometheus.Gauge
	draining prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	writes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kglb_ipvs_writes_total",
		Help: "IPVS netlink writes issued by the reconciler, by operation and outcome (ok or error).",
	}, []string{"op", "outcome"})
	reads := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kglb_ipvs_reads_total",
		Help: "IPVS netlink dumps made by the reconciler: of all services, or of one service's reals.",
	}, []string{"op"})
	m := &metrics{
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "kglb_ipvs_apply_seconds",
			Help:    "Time of one reconcile pass (Apply or Resync), reads and writes included.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kglb_ipvs_apply_errors_total",
			Help: "Items (services or reals) a reconcile pass failed to bring in line, including conflicts with foreign services.",
		}),
		owned: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kglb_ipvs_owned_services",
			Help: "IPVS services kglb created and manages.",
		}),
		foreign: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kglb_ipvs_foreign_services",
			Help: "IPVS services someone else created; kglb leaves them alone.",
		}),
		draining: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kglb_ipvs_draining_reals",
			Help: "Reals removed from the config that are kept at weight 0 until their connections end or the drain time passes.",
		}),
	}
	for op := Op(0); op < numOps; op++ {
		m.writes[op][0] = writes.WithLabelValues(op.String(), "ok")
		m.writes[op][1] = writes.WithLabelValues(op.String(), "error")
	}
	m.reads[0] = reads.WithLabelValues("services")
	m.reads[1] = reads.WithLabelValues("reals")
	if reg != nil {
		reg.MustRegister(writes, reads, m.duration, m.errors, m.owned, m.foreign, m.draining)
	}
	return m
}
