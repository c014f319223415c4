package lb

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kglb/kglb/config"
	"github.com/kglb/kglb/health"
	"github.com/kglb/kglb/ipvs"
	"github.com/kglb/kglb/vip"
)

// writeServices writes services x reals into dir, 100 services per file,
// with weight w0 for the first real of service 0 (the line edits change).
func writeServices(tb testing.TB, dir string, services, reals, w0 int) {
	tb.Helper()
	for first := 0; first < services; first += 100 {
		writeServiceFile(tb, dir, first, min(first+100, services), reals, w0)
	}
}

// writeServiceFile writes services [first, last) into their file.
func writeServiceFile(tb testing.TB, dir string, first, last, reals, w0 int) {
	tb.Helper()
	var b strings.Builder
	for i := first; i < last; i++ {
		fmt.Fprintf(&b, "service \"svc-%05d\" {\n  vip = \"10.%d.%d.%d\"\n  port = 443\n  scheduler = \"mh\"\n\n  check \"tcp\" {\n    interval = \"2s\"\n    timeout = \"1s\"\n  }\n",
			i, 100+i/65536, i/256%256, i%256)
		for j := range reals {
			w := 100
			if i == 0 && j == 0 {
				w = w0
			}
			fmt.Fprintf(&b, "  real \"172.%d.%d.%d\" { weight = %d }\n", 16+j/250, i/256%256, 1+j%250, w)
		}
		b.WriteString("}\n\n")
	}
	if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("svc-%05d.hcl", first/100)), []byte(b.String()), 0o644); err != nil {
		tb.Fatal(err)
	}
}

// settledLoader is a Loader that has loaded dir, and loaded it again once
// the files are old enough for their stat to be trusted (config's
// racyWindow): a daemon's config files are rarely seconds old, and the
// edit a benchmark makes is then the only file read again.
func settledLoader(tb testing.TB, dir string) (*config.Loader, *config.Config) {
	tb.Helper()
	l := config.NewLoader()
	if _, err := l.Load(dir); err != nil {
		tb.Fatal(err)
	}
	time.Sleep(2100 * time.Millisecond)
	cfg, err := l.Load(dir)
	if err != nil {
		tb.Fatal(err)
	}
	return l, cfg
}

type upProber struct{ ch chan []health.Change }

func (upProber) Update([]health.Target) error      { return nil }
func (p upProber) Changes() <-chan []health.Change { return p.ch }
func (upProber) Lookup(t health.Target) (health.Status, bool) {
	return health.Status{Target: t, State: health.Up}, true
}

// benchEngine is an engine over fake kernels with cfg applied once; opts
// gives the rest of its wiring (no Prober: every real up).
func benchEngine(tb testing.TB, cfg *config.Config, opts Options) (*Engine, *ipvs.Fake) {
	tb.Helper()
	k := ipvs.NewFake()
	opts.IPVS, opts.VIPs = fakeReconcilers(tb, k)
	if opts.Prober == nil {
		opts.Prober = upProber{}
	}
	e, err := NewEngine(opts, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	if err := e.adopt(context.Background()); err != nil {
		tb.Fatal(err)
	}
	e.setConfig(cfg)
	e.reconcile(context.Background(), kindPass)
	if _, err := e.Status(); err != nil {
		tb.Fatal(err)
	}
	return e, k
}

// editOnce changes one line (a weight) in the first file, then loads (with
// l, which loaded dir before, as the daemon's reloads do), computes and
// writes.
func editOnce(b *testing.B, e *Engine, k *ipvs.Fake, l *config.Loader, dir string, services, reals, w int) {
	b.StopTimer()
	writeServiceFile(b, dir, 0, min(100, services), reals, w)
	k.ResetCounts()
	b.StartTimer()
	cfg, err := l.Load(dir)
	if err != nil {
		b.Fatal(err)
	}
	e.setConfig(cfg)
	e.reconcile(context.Background(), kindPass)
	b.StopTimer()
	if n := k.Writes().Total(); n != 1 {
		b.Fatalf("a one-line edit made %d writes (%s), want 1", n, k.Writes())
	}
	b.StartTimer()
}

// BenchmarkEditToKernel is a one-line edit (one real's weight) from the
// files to the (fake) kernel: load + validate the whole directory, compute
// the desired state, diff and write. The file watch's debounce is not
// included.
func BenchmarkEditToKernel(b *testing.B) {
	for _, services := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("services=%d", services), func(b *testing.B) {
			dir := b.TempDir()
			writeServices(b, dir, services, 10, 100)
			l, cfg := settledLoader(b, dir)
			e, k := benchEngine(b, cfg, Options{})
			w := 100
			b.ResetTimer()
			for b.Loop() {
				w = 300 - w // 100, 200, 100, ...
				editOnce(b, e, k, l, dir, services, 10, w)
			}
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/edit")
		})
	}
}

// BenchmarkReloadScaling times the reload of the same one-line edit (one
// real's weight, in a file of up to 100 services) with 100 reals and with
// 100,000 reals in one run, and reports the ratio. A reload is what the
// design's target names: parse, validate and diff. Here that is what the
// daemon runs when its watch reports the edited file: the Loader's
// LoadChanged (stat and read that file, decode its changed block, check
// what changed across services) and the engine's setConfig (the diff
// against the running config, and the health-check plan and decisions
// carried over for what did not change). Computing and writing the
// kernel's new state is BenchmarkEditToKernel's; it runs here too, after
// each reload, as in the daemon.
//
// Edits are timed two ways. "ratio" and its ms columns are of edits 20 ms
// apart, as an operator's edits reach a daemon: each finds the collector
// done with the last one's garbage (and the caches as cold as an idle
// daemon's). The "hot-" columns are of edits back to back, 200 a second at
// 10,000 services: their timings include the collections that the
// engine's garbage (about 5 MB per edit at that size) keeps running. Each
// size runs alone in the process, 25 edits of each way at a time, in turn
// with the other, four times; the ratios are of the medians of the 100
// edits of each way and size (a latency, robust to a collection landing in
// one edit), and the means are reported beside them.
func BenchmarkReloadScaling(b *testing.B) {
	type side struct {
		services  int
		dir       string
		l         *config.Loader
		e         *Engine
		k         *ipvs.Fake
		w         int
		took, hot []time.Duration
	}
	setup := func(services int, dir string) *side {
		s := &side{services: services, dir: dir, w: 100}
		s.l = config.NewLoader()
		cfg, err := s.l.Load(s.dir)
		if err != nil {
			b.Fatal(err)
		}
		s.e, s.k = benchEngine(b, cfg, Options{})
		return s
	}
	edit := func(s *side, into *[]time.Duration) {
		s.w = 300 - s.w
		writeServiceFile(b, s.dir, 0, min(100, s.services), 10, s.w)
		s.k.ResetCounts()
		start := time.Now()
		cfg, err := s.l.LoadChanged(s.dir, []string{filepath.Join(s.dir, "svc-00000.hcl")}) // what the watch reports
		if err != nil {
			b.Fatal(err)
		}
		s.e.setConfig(cfg)
		*into = append(*into, time.Since(start))
		s.e.reconcile(context.Background(), kindPass)
		if n := s.k.Writes().Total(); n != 1 {
			b.Fatalf("a one-line edit made %d writes (%s), want 1", n, s.k.Writes())
		}
	}
	stats := func(took []time.Duration) (median, mean time.Duration) {
		var sum time.Duration
		for _, d := range took {
			sum += d
		}
		sorted := slices.Sorted(slices.Values(took))
		return sorted[len(sorted)/2], sum / time.Duration(len(took))
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	for b.Loop() {
		dirs := map[int]string{10: b.TempDir(), 10000: b.TempDir()}
		for services, dir := range dirs {
			writeServices(b, dir, services, 10, 100)
		}
		// The files must be old enough for their stat to be trusted (see
		// config's racyWindow): a daemon's config files are rarely seconds
		// old, and the edited file is then the only one read again.
		time.Sleep(2100 * time.Millisecond)
		by := map[int]*side{}
		for range 4 {
			for _, services := range []int{10, 10000} {
				s := setup(services, dirs[services])
				for range 25 {
					edit(s, &s.took)
					time.Sleep(20 * time.Millisecond)
				}
				for range 25 {
					edit(s, &s.hot)
				}
				if all := by[services]; all != nil {
					all.took, all.hot = append(all.took, s.took...), append(all.hot, s.hot...)
				} else {
					by[services] = &side{took: s.took, hot: s.hot}
				}
				s = nil
				runtime.GC()
			}
		}
		small, large := by[10], by[10000]
		for _, way := range []struct {
			prefix       string
			small, large []time.Duration
		}{{"", small.took, large.took}, {"hot-", small.hot, large.hot}} {
			sm, smMean := stats(way.small)
			lg, lgMean := stats(way.large)
			b.ReportMetric(ms(sm), way.prefix+"ms-at-100-reals")
			b.ReportMetric(ms(lg), way.prefix+"ms-at-100k-reals")
			b.ReportMetric(float64(lg)/float64(sm), way.prefix+"ratio")
			b.ReportMetric(float64(lgMean)/float64(smMean), way.prefix+"mean-ratio")
		}
	}
}

// BenchmarkHeap reports kglb's own heap per service and per real: the
// config with the daemon's Loader cache, the engine, its plan and desired
// state and the reconcilers' caches (the fake kernel's share is measured
// apart and subtracted; the health scheduler's is health's
// BenchmarkMemoryPerReal). "of-budget" is the heap at 1,000 services x 10
// reals over the design's budget, 1 KB per real + 2 KB per service.
func BenchmarkHeap(b *testing.B) {
	heap := func(services, reals int) float64 {
		dir := b.TempDir()
		writeServices(b, dir, services, reals, 100)
		runtime.GC()
		var m0, m1, m2 runtime.MemStats
		runtime.ReadMemStats(&m0)
		loader := config.NewLoader()
		cfg, err := loader.Load(dir)
		if err != nil {
			b.Fatal(err)
		}
		e, k := benchEngine(b, cfg, Options{})
		runtime.GC()
		runtime.ReadMemStats(&m1)
		// The fake kernel's own size: a copy of the same table.
		kk := ipvs.NewFake()
		d, _ := e.Status()
		for _, s := range d.IPVS.Services {
			kk.AddService(s)
			for _, r := range s.Reals {
				kk.AddReal(s.Key, r)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&m2)
		runtime.KeepAlive(loader)
		runtime.KeepAlive(e)
		runtime.KeepAlive(k)
		runtime.KeepAlive(kk)
		return float64(m1.HeapAlloc-m0.HeapAlloc) - float64(m2.HeapAlloc-m1.HeapAlloc)
	}
	for b.Loop() {
		const s = 1000
		h10 := heap(s, 10)
		h20 := heap(s, 20)
		perReal := (h20 - h10) / (10 * s)
		perService := h10/s - 10*perReal
		b.ReportMetric(perReal, "B/real")
		b.ReportMetric(perService, "B/service")
		b.ReportMetric(h10/(1024*10*s+2048*s), "of-budget")
	}
}

// BenchmarkIdleCPU runs the engine loop with 1,000 services and nothing
// happening (no edits, no health changes, a resync every second) and
// reports the CPU it uses as a share of one core.
func BenchmarkIdleCPU(b *testing.B) {
	dir := b.TempDir()
	writeServices(b, dir, 1000, 10, 100)
	cfg, err := config.Load(dir)
	if err != nil {
		b.Fatal(err)
	}
	cfg.Daemon.ResyncInterval = time.Second
	e, _ := benchEngine(b, cfg, Options{})
	for b.Loop() {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- e.Run(ctx, nil) }()
		time.Sleep(500 * time.Millisecond) // past the start-up pass
		u0, wall0 := cpuTime(), time.Now()
		time.Sleep(3 * time.Second)
		used, wall := cpuTime()-u0, time.Since(wall0)
		cancel()
		<-done
		b.ReportMetric(100*used.Seconds()/wall.Seconds(), "cpu-%")
	}
}

// fakeReconcilers is an ipvs reconciler over k (state in a temporary
// directory) and a vip reconciler over a fake link: the data plane of the
// engines in tests and benchmarks.
func fakeReconcilers(tb testing.TB, k ipvs.Kernel) (*ipvs.Reconciler, *vip.Reconciler) {
	tb.Helper()
	ir, err := ipvs.NewReconciler(k, ipvs.Options{StateDir: tb.TempDir()})
	if err != nil {
		tb.Fatal(err)
	}
	vr, err := vip.New(vip.Options{Kernel: vip.NewFake("kglb0")})
	if err != nil {
		tb.Fatal(err)
	}
	return ir, vr
}
