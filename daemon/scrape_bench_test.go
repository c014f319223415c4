package daemon

import (
	"bytes"
	"context"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"runtime/debug"
	"testing"
	"time"

	"github.com/kglb/kglb/health"
	"github.com/kglb/kglb/ipvs"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

type okChecker struct{}

func (okChecker) Check(context.Context, health.Target) health.Result {
	return health.Result{Outcome: health.OK, Duration: time.Millisecond}
}

// BenchmarkScrape is one /metrics scrape at 1,000 services x 10 reals (one
// TCP check each, every real probed), through the daemon's collectors: the
// health scheduler's, the IPVS reconciler's and the kernel's per-real
// counters (kernelCollector), served by promhttp as the stats listener does.
// lines/scrape and bytes/scrape are the page; ns/op its CPU; B/op the
// garbage it leaves, which is what grows the heap goal, and so the RSS, of
// a daemon an operator scrapes; heap-rss-growth-MB the heap's resident
// pages after the scrapes beyond those before.
func BenchmarkScrape(b *testing.B) {
	const services, reals = 1000, 10
	reg := prometheus.NewRegistry()
	ir, err := ipvs.NewReconciler(ipvs.NewFake(), ipvs.Options{StateDir: b.TempDir(), Registerer: reg})
	if err != nil {
		b.Fatal(err)
	}
	reg.MustRegister(kernelCollector{ir})
	sched, err := health.New(health.Options{Registerer: reg, NewChecker: func(health.Spec, health.Dialer) (health.Checker, error) { return okChecker{}, nil }})
	if err != nil {
		b.Fatal(err)
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
		b.Fatal(err)
	}
	if err := sched.Update(targets); err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- sched.Run(ctx) }()
	go func() { // the verdicts, which the engine would take
		for range sched.Changes() {
		}
	}()
	time.Sleep(2500 * time.Millisecond) // every real probed twice
	cancel()
	<-done
	h := promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
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
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
		size, lines = w.Body.Len(), bytes.Count(w.Body.Bytes(), []byte{'\n'})
	}
	b.ReportMetric(float64(size), "bytes/scrape")
	b.ReportMetric(float64(lines), "lines/scrape")
	// What the scrapes left resident: the heap grown to hold a page's
	// metrics at once, which Go returns to the system only slowly.
	b.ReportMetric((resident()-before)/(1<<20), "heap-rss-growth-MB")
}
