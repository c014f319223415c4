package lb

import (
	"net/netip"
	"slices"
	"time"

	"github.com/kglb/kglb/config"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the engine's decisions as Prometheus series. Label sets are
// bounded by the configuration: one series per VIP, per reason in Reasons.
type Metrics struct {
	duration  *prometheus.HistogramVec
	passes    *prometheus.CounterVec
	services  prometheus.Gauge
	reals     *prometheus.GaugeVec
	announced *prometheus.GaugeVec
	reason    *prometheus.GaugeVec
	vips      map[netip.Addr]vipSeries // what is exported per VIP
}

// vipSeries is what one VIP's series say: a pass sets only those that
// changed, since most passes change one service among thousands.
type vipSeries struct {
	name      string
	announced bool
	reason    string
}

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
		reals: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kglb_reals",
			Help: "Enabled reals of enabled services by health state (up, down, unknown); a real in two services counts twice.",
		}, []string{"state"}),
		announced: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kglb_vip_announced",
			Help: "1 while the VIP should be announced, 0 while it is withdrawn; kglb_vip_announce_reason says why.",
		}, []string{"vip"}),
		reason: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kglb_vip_announce_reason",
			Help: "1 for the reason of the VIP's current announce decision (healthy, degraded, below_threshold, initial_round, all_down, all_down_fail_open, no_reals, disabled, no_bgp, shared_vip_peer).",
		}, []string{"vip", "reason"}),
		vips: map[netip.Addr]vipSeries{},
	}
	if reg != nil {
		reg.MustRegister(m.duration, m.passes, m.services, m.reals, m.announced, m.reason)
	}
	return m
}

func (m *Metrics) setConfig(cfg *config.Config) { m.services.Set(float64(len(cfg.Services))) }

func (m *Metrics) observe(d Desired, kind string, err error, took time.Duration) {
	m.duration.WithLabelValues(kind).Observe(took.Seconds())
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.passes.WithLabelValues(kind, result).Inc()
	var up, down, unknown int
	for _, s := range d.Services {
		for _, r := range s.Reals {
			if !r.Enabled {
				continue
			}
			switch r.State.String() {
			case "up":
				up++
			case "down":
				down++
			default:
				unknown++
			}
		}
	}
	m.reals.WithLabelValues("up").Set(float64(up))
	m.reals.WithLabelValues("down").Set(float64(down))
	m.reals.WithLabelValues("unknown").Set(float64(unknown))

	for _, v := range d.VIPStatus {
		old, ok := m.vips[v.VIP]
		if ok && old.announced == v.Announced && old.reason == v.Reason {
			continue
		}
		name := old.name
		if !ok {
			name = v.VIP.String()
		}
		val := 0.0
		if v.Announced {
			val = 1
		}
		m.announced.WithLabelValues(name).Set(val)
		if ok && old.reason != v.Reason {
			m.reason.DeleteLabelValues(name, old.reason)
		}
		m.reason.WithLabelValues(name, v.Reason).Set(1)
		m.vips[v.VIP] = vipSeries{name: name, announced: v.Announced, reason: v.Reason}
	}
	if len(m.vips) == len(d.VIPStatus) {
		return // VIPStatus is distinct: every exported VIP is in it
	}
	for a, old := range m.vips {
		if _, ok := slices.BinarySearchFunc(d.VIPStatus, a, func(v VIPStatus, a netip.Addr) int { return v.VIP.Compare(a) }); !ok {
			m.announced.DeleteLabelValues(old.name)
			m.reason.DeleteLabelValues(old.name, old.reason)
			delete(m.vips, a)
		}
	}
}
