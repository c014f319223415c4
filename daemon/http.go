package daemon

import (
	"encoding/json"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/kglb/kglb/bgp"
	"github.com/kglb/kglb/config"
	"github.com/kglb/kglb/internal/promtext"
	"github.com/kglb/kglb/ipvs"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Status is the JSON document of /status: every service, real and check
// with its state and reason, every VIP's announce decision, the BGP peers.
type Status struct {
	Config   ConfigStatus    `json:"config"`
	Services []ServiceStatus `json:"services"`
	VIPs     []VIPStatus     `json:"vips"`
	BGP      *bgp.Status     `json:"bgp,omitempty"`
	// Error is the last reconcile pass's error (the next pass retries).
	Error string `json:"error,omitempty"`
}

// ConfigStatus says which configuration runs and whether the files on disk
// were accepted.
type ConfigStatus struct {
	Dir             string   `json:"dir"`
	Files           []string `json:"files"`
	LastReloadError string   `json:"last_reload_error,omitempty"`
	// RunningLastApplied: the files were rejected at start (LastReloadError
	// says why), so the config the last run applied runs, as applied at
	// LastAppliedAt, until the files are fixed.
	RunningLastApplied bool      `json:"running_last_applied,omitempty"`
	LastAppliedAt      time.Time `json:"last_applied_at,omitzero"`
	// Settling: services or reals the files removed are kept until the
	// directory has been unchanged for daemon.settle.
	Settling bool `json:"settling,omitempty"`
}

// ServiceStatus is one service.
type ServiceStatus struct {
	Name        string       `json:"name"`
	Description string       `json:"description,omitempty"` // the service's description attribute
	Endpoint    string       `json:"endpoint"`
	Healthy     int          `json:"healthy"`
	Total       int          `json:"total"`
	Qualified   bool         `json:"qualified"`
	Reason      string       `json:"reason"`
	Reals       []RealStatus `json:"reals"`
}

// RealStatus is one real of a service.
type RealStatus struct {
	Address string        `json:"address"`
	Enabled bool          `json:"enabled"`
	State   string        `json:"state"`
	Weight  uint16        `json:"weight"`
	Checks  []CheckStatus `json:"checks,omitempty"`
}

// CheckStatus is one health check of a real.
type CheckStatus struct {
	Type       string    `json:"type"`
	ID         string    `json:"id"`
	State      string    `json:"state"`
	Reason     string    `json:"reason,omitempty"`
	Since      time.Time `json:"since,omitzero"`
	LastResult string    `json:"last_result,omitempty"`
	LastAt     time.Time `json:"last_at,omitzero"`
}

// VIPStatus is one VIP's announce decision.
type VIPStatus struct {
	VIP       netip.Addr `json:"vip"`
	Announced bool       `json:"announced"`
	Degraded  bool       `json:"degraded,omitempty"`
	Reason    string     `json:"reason"`
	Services  []string   `json:"services"`
}

func (d *daemon) status() Status {
	desired, err := d.engine.Status()
	cfg := d.engine.Config()
	plan := d.engine.Plan()
	st := Status{Config: ConfigStatus{Dir: d.dir, Files: cfg.Files}}
	if d.watcher != nil {
		ws := d.watcher.Status()
		if ws.Err != nil {
			st.Config.LastReloadError = ws.Err.Error()
		}
		st.Config.Settling = ws.Settling
		if ws.LastApplied {
			st.Config.RunningLastApplied, st.Config.LastAppliedAt = true, d.lastApplied.Time
		}
	}
	if err != nil {
		st.Error = err.Error()
	}
	for _, s := range desired.Services {
		ss := ServiceStatus{Name: s.Name, Endpoint: s.Endpoint, Healthy: s.Healthy, Total: s.Total, Qualified: s.Qualified, Reason: s.Reason}
		if i, ok := slices.BinarySearchFunc(cfg.Services, s.Name, func(c *config.Service, name string) int { return strings.Compare(c.Name, name) }); ok {
			ss.Description = cfg.Services[i].Description
		}
		for _, r := range s.Reals {
			rs := RealStatus{Address: r.Addr.String(), Enabled: r.Enabled, State: r.State.String(), Weight: r.Weight}
			if plan != nil {
				for _, t := range plan.Targets(s.Name, r.Addr) {
					hs, _ := d.sched.Lookup(t)
					cs := CheckStatus{Type: t.Spec.Type.String(), ID: t.Spec.ID(), State: hs.State.String(), Reason: hs.Reason, Since: hs.Since, LastAt: hs.LastAt}
					if !hs.LastAt.IsZero() {
						cs.LastResult = hs.Last.Outcome.String() + ": " + hs.Last.Reason
					}
					rs.Checks = append(rs.Checks, cs)
				}
			}
			ss.Reals = append(ss.Reals, rs)
		}
		st.Services = append(st.Services, ss)
	}
	for _, v := range desired.VIPStatus {
		st.VIPs = append(st.VIPs, VIPStatus{VIP: v.VIP, Announced: v.Announced, Degraded: v.Degraded, Reason: v.Reason, Services: v.Services})
	}
	if d.speaker != nil {
		b := d.speaker.Status()
		st.BGP = &b
	}
	return st
}

// statsHandler serves the read-only pages of the stats listener:
// /metrics (and /stats), /status and /healthz.
func (d *daemon) statsHandler() http.Handler {
	mux := http.NewServeMux()
	var sources []promtext.Source // each real's series (TestStatsListenerReadOnly's daemon has neither part)
	if d.sched != nil {
		sources = append(sources, d.sched)
	}
	if d.ipvs != nil {
		sources = append(sources, kernelMetrics{d.ipvs})
	}
	metrics := promhttp.InstrumentMetricHandler(d.reg, promtext.Handler(d.reg, 4, sources...))
	mux.Handle("GET /metrics", metrics)
	mux.Handle("GET /stats", metrics)
	mux.HandleFunc("GET /status", d.serveStatus)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if _, err := d.engine.Status(); err != nil {
			http.Error(w, "degraded: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	mountPprof(mux)
	return mux
}

// serveStatus writes /status, on the stats listener and the control socket.
func (d *daemon) serveStatus(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(d.status())
}

// kernelMetrics writes the kernel's per-service and per-real counters from
// the reconciler's last full read (no extra netlink dump per scrape), straight
// to the page (promtext.Source): seven series per real, 70,000 at 1,000
// services x 10 reals.
type kernelMetrics struct{ r *ipvs.Reconciler }

func (k kernelMetrics) WriteMetrics(w *promtext.Writer) {
	services := k.r.Stats().Services
	names := make([]string, len(services)) // label values, made once for every family
	reals := make([][]string, len(services))
	for i, s := range services {
		names[i] = s.Key.String()
		reals[i] = make([]string, len(s.Reals))
		for j, r := range s.Reals {
			reals[i][j] = r.Key().String()
		}
	}
	perService := func(name, help string, typ promtext.Type, sample func(s *ipvs.Service, name string), labels ...string) {
		w.Family(name, help, typ, labels...)
		for i := range services {
			sample(&services[i], names[i])
		}
	}
	perService("kglb_ipvs_service_connections_total", "Connections scheduled by the IPVS service (kernel counter, 32-bit: it wraps).", promtext.Counter,
		func(s *ipvs.Service, name string) { w.Sample(float64(s.Stats.Connections), name) }, "service")
	perService("kglb_ipvs_service_packets_total", "Packets through the IPVS service by direction (kernel counter, 32-bit: it wraps).", promtext.Counter,
		func(s *ipvs.Service, name string) {
			w.Sample(float64(s.Stats.PacketsIn), name, "in")
			w.Sample(float64(s.Stats.PacketsOut), name, "out")
		}, "service", "direction")
	perService("kglb_ipvs_service_bytes_total", "Bytes through the IPVS service by direction.", promtext.Counter,
		func(s *ipvs.Service, name string) {
			w.Sample(float64(s.Stats.BytesIn), name, "in")
			w.Sample(float64(s.Stats.BytesOut), name, "out")
		}, "service", "direction")

	perReal := func(name, help string, typ promtext.Type, sample func(r *ipvs.Real, service, real string), labels ...string) {
		w.Family(name, help, typ, labels...)
		for i := range services {
			for j := range services[i].Reals {
				sample(&services[i].Reals[j], names[i], reals[i][j])
			}
		}
	}
	perReal("kglb_ipvs_real_connections", "Connections of a real by state (active, inactive), as of the last full read.", promtext.Gauge,
		func(r *ipvs.Real, service, real string) {
			w.Sample(float64(r.ActiveConns), service, real, "active")
			w.Sample(float64(r.InactiveConns), service, real, "inactive")
		}, "service", "real", "state")
	perReal("kglb_ipvs_real_bytes_total", "Bytes through a real by direction.", promtext.Counter,
		func(r *ipvs.Real, service, real string) {
			w.Sample(float64(r.Stats.BytesIn), service, real, "in")
			w.Sample(float64(r.Stats.BytesOut), service, real, "out")
		}, "service", "real", "direction")
	perReal("kglb_ipvs_real_packets_total", "Packets through a real by direction (32-bit: it wraps).", promtext.Counter,
		func(r *ipvs.Real, service, real string) {
			w.Sample(float64(r.Stats.PacketsIn), service, real, "in")
			w.Sample(float64(r.Stats.PacketsOut), service, real, "out")
		}, "service", "real", "direction")
	perReal("kglb_ipvs_real_weight", "The real's weight in the kernel.", promtext.Gauge,
		func(r *ipvs.Real, service, real string) { w.Sample(float64(r.Weight), service, real) }, "service", "real")
}
