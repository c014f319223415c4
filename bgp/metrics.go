package bgp

import (
	"context"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the kglb_bgp_* series. The peer label is the neighbor's name
// (its address when unnamed), so its cardinality is the configured peers.
type metrics struct {
	peerUp        *prometheus.GaugeVec
	peerState     *prometheus.GaugeVec
	peerFlaps     *prometheus.CounterVec
	routes        prometheus.Gauge
	announcements prometheus.Counter
	withdrawals   prometheus.Counter
	applyErrors   prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, s *Speaker) *metrics {
	m := &metrics{
		peerUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kglb_bgp_peer_up",
			Help: "1 while the BGP session with the peer is Established, else 0.",
		}, []string{"peer"}),
		peerState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kglb_bgp_peer_session_state",
			Help: "BGP FSM state of the session: 1 idle, 2 connect, 3 active, 4 opensent, 5 openconfirm, 6 established.",
		}, []string{"peer"}),
		peerFlaps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kglb_bgp_peer_flaps_total",
			Help: "Times the session with the peer left the Established state.",
		}, []string{"peer"}),
		routes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kglb_bgp_routes_announced",
			Help: "Prefixes kglb currently announces (in its RIB, sent to every Established peer).",
		}),
		announcements: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kglb_bgp_route_announcements_total",
			Help: "Prefixes announced or re-announced with changed attributes; each becomes an UPDATE to every Established peer.",
		}),
		withdrawals: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kglb_bgp_route_withdrawals_total",
			Help: "Prefixes withdrawn; each becomes a withdrawal to every Established peer.",
		}),
		applyErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kglb_bgp_apply_errors_total",
			Help: "Routes that could not be announced or withdrawn in an Apply.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.peerUp, m.peerState, m.peerFlaps, m.routes, m.announcements,
			m.withdrawals, m.applyErrors, &peerCollector{s: s})
	}
	return m
}

// forget drops a removed peer's series.
func (m *metrics) forget(peer string) {
	m.peerUp.DeleteLabelValues(peer)
	m.peerState.DeleteLabelValues(peer)
	m.peerFlaps.DeleteLabelValues(peer)
}

// peerCollector reads GoBGP's per-peer message and prefix counters at
// scrape time, so nothing is copied between scrapes.
type peerCollector struct{ s *Speaker }

var (
	descUpdatesSent = prometheus.NewDesc("kglb_bgp_peer_updates_sent_total",
		"BGP UPDATE messages sent to the peer (announcements and withdrawals), as counted by GoBGP for the current peer configuration.",
		[]string{"peer"}, nil)
	descUpdatesReceived = prometheus.NewDesc("kglb_bgp_peer_updates_received_total",
		"BGP UPDATE messages received from the peer.", []string{"peer"}, nil)
	descPrefixesReceived = prometheus.NewDesc("kglb_bgp_peer_prefixes_received",
		"Prefixes the peer currently sends kglb.", []string{"peer"}, nil)
	descPrefixesSent = prometheus.NewDesc("kglb_bgp_peer_prefixes_advertised",
		"Prefixes kglb currently advertises to the peer.", []string{"peer"}, nil)
)

func (c *peerCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descUpdatesSent
	ch <- descUpdatesReceived
	ch <- descPrefixesReceived
	ch <- descPrefixesSent
}

func (c *peerCollector) Collect(ch chan<- prometheus.Metric) {
	for _, p := range c.s.peerCounters(context.Background()) {
		ch <- prometheus.MustNewConstMetric(descUpdatesSent, prometheus.CounterValue, float64(p.updatesSent), p.name)
		ch <- prometheus.MustNewConstMetric(descUpdatesReceived, prometheus.CounterValue, float64(p.updatesReceived), p.name)
		ch <- prometheus.MustNewConstMetric(descPrefixesReceived, prometheus.GaugeValue, float64(p.received), p.name)
		ch <- prometheus.MustNewConstMetric(descPrefixesSent, prometheus.GaugeValue, float64(p.advertised), p.name)
	}
}

// counters are one peer's GoBGP counters.
type counters struct {
	name                         string
	updatesSent, updatesReceived uint64
	received, advertised         uint64
}

func countersOf(p *api.Peer) counters {
	var c counters
	if st := p.GetState(); st != nil {
		c.updatesSent = st.GetMessages().GetSent().GetUpdate()
		c.updatesReceived = st.GetMessages().GetReceived().GetUpdate()
	}
	for _, af := range p.GetAfiSafis() {
		c.received += af.GetState().GetReceived()
		c.advertised += af.GetState().GetAdvertised()
	}
	return c
}
