package daemon

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"runtime/debug"
	"testing"
	"time"

	"github.com/kglb/kglb/health"
	"github.com/kglb/kglb/internal/promtext"
	"github.com/kglb/kglb/ipvs"
	"github.com/prometheus/client_golang/prometheus"
)

// countingPage is a scraper's end of a /metrics response: it counts the
// page's bytes and lines and keeps none, as the socket of a real scrape,
// so that what the benchmark reports is the daemon's cost alone.
type countingPage struct {
	header      http.Header
	size, lines int
}

func (p *countingPage) Header() http.Header { return p.header }
func (p *countingPage) WriteHeader(int)     {}
func (p *countingPage) Write(b []byte) (int, error) {
	p.size += len(b)
	p.lines += bytes.Count(b, []byte{'\n'})
	return len(b), nil
}

// scrapeFixture is what a daemon's /metrics reads at services x reals (one
// TCP check each): a registry, the health scheduler, its probes run for
// probing (none when 0), and the IPVS reconciler after a resync to the fake
// kernel.
func scrapeFixture(tb testing.TB, services, reals int, probing time.Duration) (*prometheus.Registry, *health.Scheduler, *ipvs.Reconciler) {
	tb.Helper()
	reg := prometheus.NewRegistry()
	ir, err := ipvs.NewReconciler(ipvs.NewFake(), ipvs.Options{StateDir: tb.TempDir(), Registerer: reg})
	if err != nil {
		tb.Fatal(err)
	}
	sched, err := health.New(health.Options{Registerer: reg, NewChecker: func(health.Spec, health.Dialer) (health.Checker, error) { return okChecker{}, nil }})
	if err != nil {
		tb.Fatal(err)
	}
	var d ipvs.Desired
	var targets []health.Target
	spec := health.Spec{Type: health.TCP, Interval: time.Second, Timeout: 500 * time.Millisecond, Rise: 1, Fall: 3}
	for i := range services {
		s := ipvs.Service{Key: ipvs.AddrKey(ipvs.TCP, netip.AddrFrom4([4]byte{198, 51, 100, byte(i % 250)}), uint16(1000+i)), Scheduler: "wrr"}
		for j := range reals {
			a := netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})
			a = netip.AddrFrom4([4]byte{10, byte(j + 1), a.As4()[2], a.As4()[3]})
			s.Reals = append(s.Reals, ipvs.Real{Addr: a, Port: 80, Weight: 1, Forward: ipvs.ForwardNAT})
			targets = append(targets, health.Target{Real: netip.AddrPortFrom(a, 80), Spec: spec})
		}
		d.Services = append(d.Services, s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := ir.Resync(ctx, d); err != nil {
		tb.Fatal(err)
	}
	if err := sched.Update(targets); err != nil {
		tb.Fatal(err)
	}
	if probing > 0 {
		done := make(chan error, 1)
		go func() { done <- sched.Run(ctx) }()
		go func() { // the verdicts, which the engine would take
			for range sched.Changes() {
			}
		}()
		time.Sleep(probing)
		cancel()
		<-done
	}
	return reg, sched, ir
}

type okChecker struct{}

func (okChecker) Check(context.Context, health.Target) health.Result {
	return health.Result{Outcome: health.OK, Duration: time.Millisecond}
}

// BenchmarkScrape is one /metrics scrape at 1,000 services x 10 reals (one
// TCP check each, every real probed), through the daemon's collectors and
// sources: the health scheduler's, the IPVS reconciler's and the kernel's
// per-real counters (kernelMetrics), served as the stats listener does.
// lines/scrape and bytes/scrape are the page; ns/op its CPU; B/op the
// garbage it leaves, which is what grows the heap goal, and so the RSS, of
// a daemon an operator scrapes; heap-rss-growth-MB the heap's resident
// pages after the scrapes beyond those before.
func BenchmarkScrape(b *testing.B) {
	reg, sched, ir := scrapeFixture(b, 1000, 10, 2500*time.Millisecond) // every real probed twice
	h := promtext.Handler(reg, 4, sched, kernelMetrics{ir})
	var size, lines int
	resident := func() float64 { // the heap's pages the process holds
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return float64(m.HeapSys - m.HeapReleased)
	}
	runtime.GC()
	debug.FreeOSMemory()
	before := resident()
	b.ReportAllocs()
	for b.Loop() {
		w := &countingPage{header: http.Header{}}
		h.ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
		size, lines = w.size, w.lines
	}
	b.ReportMetric(float64(size), "bytes/scrape")
	b.ReportMetric(float64(lines), "lines/scrape")
	// What the scrapes left resident: the heap grown to hold a page's
	// metrics at once, which Go returns to the system only slowly.
	b.ReportMetric((resident()-before)/(1<<20), "heap-rss-growth-MB")
}
