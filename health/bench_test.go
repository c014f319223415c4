package health

import (
	"context"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// countingChecker counts results of the wrapped checker.
type countingChecker struct {
	c       Checker
	ok, bad *atomic.Int64
}

func (c countingChecker) Check(ctx context.Context, t Target) Result {
	r := c.c.Check(ctx, t)
	if r.Outcome == OK {
		c.ok.Add(1)
	} else {
		c.bad.Add(1)
	}
	return r
}

func tcpTargets(addrs []netip.AddrPort, interval, timeout time.Duration) []Target {
	out := make([]Target, len(addrs))
	for i, a := range addrs {
		out[i] = Target{Real: a, Spec: Spec{Type: TCP, Interval: interval, Timeout: timeout, Rise: 2, Fall: 3}}
	}
	return out
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// runSaturated runs TCP checks against addrs with more demand than one core can
// serve, for window, and returns the OK and failed checks and the CPU time used.
// The probes leave from d's sources; with marked, each real's with a mark of
// its own, as tunnelled checks do.
func runSaturated(b *testing.B, addrs []netip.AddrPort, window time.Duration, d Dialer, marked bool) (ok, bad int64, cpu time.Duration) {
	// 5000 targets every 50ms ask for 100k checks/s: the scheduler runs flat out.
	targets := tcpTargets(addrs, 50*time.Millisecond, 40*time.Millisecond)
	if marked {
		for i := range targets {
			targets[i].Spec.Mark = uint32(1000 + i)
		}
	}
	return runChecks(b, Options{Dialer: d}, targets, window)
}

// runChecks runs a scheduler with opts on targets for window, after a warm-up,
// and returns the OK and failed checks and the CPU time used.
func runChecks(b *testing.B, opts Options, targets []Target, window time.Duration) (ok, bad int64, cpu time.Duration) {
	var okN, badN atomic.Int64
	opts.Concurrency = 64
	opts.NewChecker = func(sp Spec, d Dialer) (Checker, error) {
		c, err := NewChecker(sp, d)
		return countingChecker{c, &okN, &badN}, err
	}
	opts.Registerer = prometheus.NewRegistry()
	s, err := New(opts)
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Update(targets); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	go func() {
		for range s.Changes() {
		}
	}()
	time.Sleep(200 * time.Millisecond) // warm up
	ok0, bad0, cpu0 := okN.Load(), badN.Load(), cpuTime()
	time.Sleep(window)
	ok, bad, cpu = okN.Load()-ok0, badN.Load()-bad0, cpuTime()-cpu0
	cancel()
	<-done
	return ok, bad, cpu
}

// hostOnly skips a benchmark inside the test VM: the VM runs under TCG emulation,
// so it would time the emulator; these benchmarks need no kernel feature the host
// lacks and belong to the host rows of make bench.
func hostOnly(b *testing.B) {
	if os.Getenv("KGLB_VM") == "1" {
		b.Skip("host benchmark: not run in the emulated VM")
	}
}

// BenchmarkTCPChecksPerSecond: sustained TCP checks per second on one core
// (GOMAXPROCS=1), 5000 loopback listeners in a child process.
func BenchmarkTCPChecksPerSecond(b *testing.B) {
	hostOnly(b)
	addrs := childListeners(b, 200, 25)
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	var ok, bad int64
	var wall, cpu time.Duration
	for range b.N {
		o, f, c := runSaturated(b, addrs, time.Second, Dialer{}, false)
		ok, bad, wall, cpu = ok+o, bad+f, wall+time.Second, cpu+c
	}
	b.ReportMetric(float64(ok)/wall.Seconds(), "checks/s")
	// On a shared machine the process may not get its core all the time: checks
	// per CPU-second is the capacity of one core.
	b.ReportMetric(float64(ok)/cpu.Seconds(), "checks/cpu-s")
	b.ReportMetric(float64(bad)/float64(ok+bad), "fail-ratio")
}

// BenchmarkTCPChecksPerSecondSourced: checks per CPU-second of the probes of
// tunnelled checks over those of plain ones, the two in turn in each run, same
// listeners, one core. Tunnelled probes leave from a source address (a
// daemon's health_source) and each real's with a mark of its own (SO_MARK:
// run as root); their sockets come from the pool still bound, and take the
// next real's mark.
func BenchmarkTCPChecksPerSecondSourced(b *testing.B) {
	hostOnly(b)
	addrs := childListeners(b, 200, 25)
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	d := Dialer{Source4: netip.MustParseAddr("127.0.0.2")}
	var ok, bad, plainOK int64
	var cpu, plainCPU time.Duration
	for range b.N {
		o, _, c := runSaturated(b, addrs, time.Second, Dialer{}, false)
		plainOK, plainCPU = plainOK+o, plainCPU+c
		o, f, c := runSaturated(b, addrs, time.Second, d, true)
		ok, bad, cpu = ok+o, bad+f, cpu+c
	}
	if ok == 0 {
		b.Fatalf("no tunnelled check passed (%d failed): marks need CAP_NET_ADMIN", bad)
	}
	sourced, plain := float64(ok)/cpu.Seconds(), float64(plainOK)/plainCPU.Seconds()
	b.ReportMetric(sourced/plain, "ratio")
	b.ReportMetric(sourced, "checks/cpu-s")
	b.ReportMetric(plain, "plain-checks/cpu-s")
	b.ReportMetric(float64(bad)/float64(ok+bad), "fail-ratio")
}

// BenchmarkTCPChecksPartialLoad: checks per CPU-second of probes the machine
// has time for, 1,000 reals every second (a few percent of a core), with
// Options.Early (the default) over without it, the two in turn in each run,
// same listeners. Without it each probe starts on a wakeup of its own; with
// it the probes due within Early run back to back.
func BenchmarkTCPChecksPartialLoad(b *testing.B) {
	hostOnly(b)
	addrs := childListeners(b, 40, 25)
	targets := tcpTargets(addrs, time.Second, 500*time.Millisecond)
	var ok, bad, singleOK int64
	var cpu, singleCPU time.Duration
	for range b.N {
		o, _, c := runChecks(b, Options{Early: -1}, targets, 3*time.Second)
		singleOK, singleCPU = singleOK+o, singleCPU+c
		o, f, c := runChecks(b, Options{}, targets, 3*time.Second)
		ok, bad, cpu = ok+o, bad+f, cpu+c
	}
	batched, single := float64(ok)/cpu.Seconds(), float64(singleOK)/singleCPU.Seconds()
	b.ReportMetric(batched/single, "ratio")
	b.ReportMetric(batched, "checks/cpu-s")
	b.ReportMetric(single, "single-checks/cpu-s")
	b.ReportMetric(float64(bad)/float64(ok+bad), "fail-ratio")
}

// bareLoop connects and closes (RST) in one goroutine, round robin over addrs, the
// plainest Go way: net.Dialer, SetLinger(0), Close.
func bareLoop(addrs []netip.AddrPort, window time.Duration) (n int64, cpu time.Duration) {
	var d net.Dialer
	strs := make([]string, len(addrs))
	for i, a := range addrs {
		strs[i] = a.String()
	}
	cpu0 := cpuTime()
	end := time.Now().Add(window)
	for i := 0; time.Now().Before(end); i++ {
		c, err := d.Dial("tcp", strs[i%len(strs)])
		if err != nil {
			continue
		}
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
		n++
	}
	return n, cpuTime() - cpu0
}

// BenchmarkTCPCheckEfficiency: checks per CPU-second of scheduler + checker over
// those of a bare connect-and-close loop, same listeners, same run, one core.
func BenchmarkTCPCheckEfficiency(b *testing.B) {
	hostOnly(b)
	addrs := childListeners(b, 200, 25)
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	var sOK int64
	var sCPU, bCPU time.Duration
	var bN int64
	for range b.N {
		o, _, c := runSaturated(b, addrs, time.Second, Dialer{}, false)
		sOK, sCPU = sOK+o, sCPU+c
		n, c2 := bareLoop(addrs, time.Second)
		bN, bCPU = bN+n, bCPU+c2
	}
	sched := float64(sOK) / sCPU.Seconds()
	bare := float64(bN) / bCPU.Seconds()
	b.ReportMetric(sched/bare, "ratio")
	b.ReportMetric(sched, "checks/cpu-s")
	b.ReportMetric(bare, "bare-checks/cpu-s")
}

// startRecorder wraps checkers to record probe start times.
type startRecorder struct {
	mu     sync.Mutex
	starts []time.Time
}

func (r *startRecorder) wrap(c Checker) Checker { return recChecker{c, r} }

type recChecker struct {
	c Checker
	r *startRecorder
}

func (c recChecker) Check(ctx context.Context, t Target) Result {
	c.r.mu.Lock()
	c.r.starts = append(c.r.starts, time.Now())
	c.r.mu.Unlock()
	return c.c.Check(ctx, t)
}

// spreadStats looks at probe starts in [from, from+iv): the largest gap between
// consecutive starts (the window's edges count as starts) and the most starts within
// any window of one ideal gap.
func spreadStats(starts []time.Time, from time.Time, iv time.Duration, n int) (maxGap time.Duration, maxBurst int) {
	var in []time.Time
	for _, t := range starts {
		if !t.Before(from) && t.Before(from.Add(iv)) {
			in = append(in, t)
		}
	}
	sort.Slice(in, func(i, j int) bool { return in[i].Before(in[j]) })
	prev := from
	for _, t := range append(in, from.Add(iv)) {
		maxGap = max(maxGap, t.Sub(prev))
		prev = t
	}
	ideal := iv / time.Duration(n)
	j := 0
	for i := range in {
		for in[i].Sub(in[j]) >= ideal {
			j++
		}
		maxBurst = max(maxBurst, i-j+1)
	}
	return maxGap, maxBurst
}

// BenchmarkProbeSpread: start times of 1000 TCP probes over one 2s interval after
// the first Update, and of 1500 after adding 500 more mid-run (a reload).
func BenchmarkProbeSpread(b *testing.B) {
	hostOnly(b)
	addrs := childListeners(b, 200, 8)[:1500]
	const iv = 2 * time.Second
	var gap, rgap, dgap time.Duration
	var burst, rburst, dburst int
	for range b.N {
		rec := &startRecorder{}
		s, err := New(Options{NewChecker: func(sp Spec, d Dialer) (Checker, error) {
			c, err := NewChecker(sp, d)
			return rec.wrap(c), err
		}})
		if err != nil {
			b.Fatal(err)
		}
		var dues []time.Time // the schedule itself, free of the machine's noise
		s.opts.beforeProbe = func(due time.Time) {
			rec.mu.Lock()
			dues = append(dues, due)
			rec.mu.Unlock()
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { s.Run(ctx); close(done) }()
		targets := tcpTargets(addrs, iv, time.Second)
		t0 := time.Now()
		s.Update(targets[:1000])
		time.Sleep(iv + iv/2)
		t1 := time.Now()
		s.Update(targets)
		time.Sleep(iv + iv/4)
		cancel()
		<-done
		g, bu := spreadStats(rec.starts, t0, iv, 1000)
		gap, burst = max(gap, g), max(burst, bu)
		g, bu = spreadStats(dues, t0, iv, 1000)
		dgap, dburst = max(dgap, g), max(dburst, bu)
		// After the reload: one full interval, starting a quarter interval later.
		g, bu = spreadStats(rec.starts, t1.Add(iv/8), iv, 1500)
		rgap, rburst = max(rgap, g), max(rburst, bu)
	}
	b.ReportMetric(float64(gap)/1e6, "max-gap-ms")
	b.ReportMetric(float64(iv/1000)/1e6, "ideal-gap-ms")
	b.ReportMetric(float64(burst), "max-burst")
	// The same over the due times the scheduler set: its spreading, without the
	// wakeup latency and CPU contention that the start times include.
	b.ReportMetric(float64(dgap)/1e6, "sched-max-gap-ms")
	b.ReportMetric(float64(dburst), "sched-max-burst")
	b.ReportMetric(float64(rgap)/1e6, "reload-max-gap-ms")
	b.ReportMetric(float64(iv/1500)/1e6, "reload-ideal-gap-ms")
	b.ReportMetric(float64(rburst), "reload-max-burst")
}

// BenchmarkDetection: time from closing every listener to the down verdicts, over
// interval x fall. Reports the worst target (ratio) and the mean.
func BenchmarkDetection(b *testing.B) {
	hostOnly(b)
	const n, iv, fall = 50, 300 * time.Millisecond, 3
	var worst, sum float64
	var count int
	for range b.N {
		lns := make([]net.Listener, n)
		var targets []Target
		for i := range lns {
			ip := netip.AddrFrom4([4]byte{127, 2, 0, byte(i + 1)})
			ln, err := net.Listen("tcp", netip.AddrPortFrom(ip, 0).String())
			if err != nil {
				b.Fatal(err)
			}
			lns[i] = ln
			go acceptClose(ln)
			targets = append(targets, Target{Real: netip.MustParseAddrPort(ln.Addr().String()),
				Spec: Spec{Type: TCP, Interval: iv, Timeout: iv / 2, Rise: 1, Fall: fall}})
		}
		s, _ := New(Options{MinRecheck: time.Millisecond})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { s.Run(ctx); close(done) }()
		s.Update(targets)
		for up := 0; up < n; {
			for _, c := range <-s.Changes() {
				if c.State == Up {
					up++
				}
			}
		}
		// Close at a random point of the probe cycle.
		time.Sleep(iv + time.Duration(time.Now().UnixNano()%int64(iv)))
		closed := time.Now()
		for _, ln := range lns {
			ln.Close()
		}
		for down := 0; down < n; {
			cs := <-s.Changes()
			r := float64(time.Since(closed)) / float64(iv*fall)
			for _, c := range cs {
				if c.State != Down {
					continue
				}
				down++
				worst = max(worst, r)
				sum += r
				count++
			}
		}
		cancel()
		<-done
	}
	b.ReportMetric(worst, "ratio")
	b.ReportMetric(sum/float64(count), "mean-ratio")
}

func acceptClose(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Close()
	}
}

// BenchmarkMemoryPerReal: heap held per checked real (a TCP target), with metrics.
func BenchmarkMemoryPerReal(b *testing.B) {
	hostOnly(b)
	const n = 100000
	var per float64
	for range b.N {
		targets := make([]Target, n)
		for i := range targets {
			ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
			targets[i] = Target{Real: netip.AddrPortFrom(ip, 80),
				Spec: Spec{Type: TCP, Interval: 2 * time.Second, Timeout: time.Second, Rise: 2, Fall: 3}}
		}
		var m0, m1 runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m0)
		s, err := New(Options{Registerer: prometheus.NewRegistry()})
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Update(targets); err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		runtime.ReadMemStats(&m1)
		per = (float64(m1.HeapAlloc) - float64(m0.HeapAlloc)) / n
		runtime.KeepAlive(s)
		runtime.KeepAlive(targets) // measured in m0: freed before m1, it hid the entries' cost
	}
	b.ReportMetric(per, "B/real")
}

// BenchmarkHTTPCheck is one HTTP probe of a real on loopback, start to verdict:
// the cost of the checker itself (net/http's Transport per probe) beside the
// TCP rows. ns/op is the whole exchange, including the server's side.
func BenchmarkHTTPCheck(b *testing.B) {
	hostOnly(b)
	srv := httpServer(b, nil)
	tg := Target{Real: srv, Spec: httpSpec(HTTP, "/", time.Second)}
	c, err := NewChecker(tg.Spec, Dialer{})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		ctx := newProbeCtx(context.Background(), time.Now(), tg.Spec.Timeout)
		if r := c.Check(ctx, tg); r.Outcome != OK {
			b.Fatalf("%s: %s", r.Outcome, r.Reason)
		}
		ctx.release()
	}
}
