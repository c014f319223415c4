package lb

import (
	"sync"
	"time"

	"github.com/kglb/kglb/config"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the engine's decisions as Prometheus series. Label sets are
// bounded by the configuration: one series per VIP, per reason in Reasons.
//
// The reals by state and the VIPs' decisions are read at scrape time from
// the status the engine publishes (the /status page's values), not set on
// every pass: a pass then costs the services it touches, while a scrape
// costs every service once, and a VIP or a reason that went has no series.
type Metrics struct {
	duration *prometheus.HistogramVec
	passes   *prometheus.CounterVec
	services prometheus.Gauge

	mu     sync.Mutex
	status func(func(*Desired)) // the engine's viewStatus; nil: no engine yet
}

var (
	realsDesc = prometheus.NewDesc("kglb_reals",
		"Enabled reals of enabled services by health state (up, down, unknown); a real in two services counts twice.",
		[]string{"state"}, nil)
	announcedDesc = prometheus.NewDesc("kglb_vip_announced",
		"1 while the VIP should be announced, 0 while it is withdrawn; kglb_vip_announce_reason says why.",
		[]string{"vip"}, nil)
	reasonDesc = prometheus.NewDesc("kglb_vip_announce_reason",
		"1 for the reason of the VIP's current announce decision (healthy, degraded, below_threshold, initial_round, all_down, all_down_fail_open, no_reals, disabled, no_bgp, shared_vip_peer).",
		[]string{"vip", "reason"}, nil)
)

// NewMetrics registers the engine's metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kglb_reconcile_duration_seconds",
			Help:    "Time of one reconcile pass: full (config, resync, drain) or health (one verdict change), compute and kernel writes included.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}, []string{"kind"}),
		passes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kglb_reconciles_total",
			Help: "Reconcile passes by kind and result (ok, or error when some write failed; the next pass retries).",
		}, []string{"kind", "result"}),
		services: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kglb_services",
			Help: "Services in the running configuration.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.duration, m.passes, m.services, statusCollector{m})
	}
	return m
}

func (m *Metrics) setConfig(cfg *config.Config) { m.services.Set(float64(len(cfg.Services))) }

// watch has the scrapes read the engine's status with view.
func (m *Metrics) watch(view func(func(*Desired))) {
	m.mu.Lock()
	m.status = view
	m.mu.Unlock()
}

func (m *Metrics) observe(kind string, err error, took time.Duration) {
	m.duration.WithLabelValues(kind).Observe(took.Seconds())
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.passes.WithLabelValues(kind, result).Inc()
}

// statusCollector exports the engine's published status at scrape time.
type statusCollector struct{ m *Metrics }

func (c statusCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- realsDesc
	ch <- announcedDesc
	ch <- reasonDesc
}

func (c statusCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.mu.Lock()
	view := c.m.status
	c.m.mu.Unlock()
	if view == nil {
		return
	}
	var series []prometheus.Metric
	view(func(d *Desired) {
		var up, down, total int
		for i := range d.Services {
			s := &d.Services[i]
			up, down, total = up+s.Healthy, down+s.Down, total+s.Total
		}
		series = make([]prometheus.Metric, 0, 3+2*len(d.VIPStatus))
		series = append(series,
			prometheus.MustNewConstMetric(realsDesc, prometheus.GaugeValue, float64(up), "up"),
			prometheus.MustNewConstMetric(realsDesc, prometheus.GaugeValue, float64(down), "down"),
			prometheus.MustNewConstMetric(realsDesc, prometheus.GaugeValue, float64(total-up-down), "unknown"))
		for _, v := range d.VIPStatus {
			name, val := v.VIP.String(), 0.0
			if v.Announced {
				val = 1
			}
			series = append(series,
				prometheus.MustNewConstMetric(announcedDesc, prometheus.GaugeValue, val, name),
				prometheus.MustNewConstMetric(reasonDesc, prometheus.GaugeValue, 1, name, v.Reason))
		}
	})
	// Sent outside the engine's lock: the registry reads them as it goes.
	for _, s := range series {
		ch <- s
	}
}
