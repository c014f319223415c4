package bgp

import (
	"context"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// vips returns n /32 routes in 10.0.0.0/8 (announced only over loopback
// to the in-process router).
func vips(n int) []Route {
	rs := make([]Route, n)
	for i := range rs {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		rs[i] = Route{Prefix: netip.PrefixFrom(a, 32), Communities: []Community{NewCommunity(localASN, 100)}}
	}
	return rs
}

// BenchmarkDecisionToUpdate measures a health decision reaching the
// router: from the Apply that adds or removes one VIP (among 1,000
// announced) until the router's GoBGP has received the UPDATE and
// selected or dropped the path. It reports the 50th and 99th percentile.
func BenchmarkDecisionToUpdate(b *testing.B) {
	r := newRig(b)
	base := vips(1001)
	toggled, rest := base[0], base[1:]
	arrived := make(chan time.Time, 1)
	r.router.mu.Lock()
	r.router.quiet = true
	r.router.onChange = func(p netip.Prefix, _ bool, at time.Time) {
		if p == toggled.Prefix {
			select { // never block the router's watcher
			case arrived <- at:
			default:
			}
		}
	}
	r.router.mu.Unlock()
	ctx := context.Background()
	if err := r.s.Apply(ctx, rest); err != nil {
		b.Fatal(err)
	}
	r.router.wait(b, "1,000 routes", func(rib map[netip.Prefix]gotRoute) bool { return len(rib) == len(rest) })

	withVIP := append([]Route{toggled}, rest...)
	var lat []time.Duration
	up := false
	for b.Loop() {
		up = !up
		desired := rest
		if up {
			desired = withVIP
		}
		start := time.Now()
		if err := r.s.Apply(ctx, desired); err != nil {
			b.Fatal(err)
		}
		select {
		case at := <-arrived:
			lat = append(lat, at.Sub(start))
		case <-time.After(30 * time.Second):
			b.Fatal("the router never received the UPDATE")
		}
	}
	reportLatency(b, lat)
}

// BenchmarkAnnounce10k measures announcing 10,000 VIPs from nothing until
// the router holds all of them.
func BenchmarkAnnounce10k(b *testing.B) {
	const n = 10000
	r := newRig(b)
	routes := vips(n)
	var mu sync.Mutex
	held := 0
	all := make(chan struct{}, 1)
	r.router.mu.Lock()
	r.router.quiet = true
	r.router.onChange = func(_ netip.Prefix, withdraw bool, _ time.Time) {
		mu.Lock()
		defer mu.Unlock()
		if withdraw {
			held--
		} else {
			held++
		}
		if held == n || held == 0 {
			select {
			case all <- struct{}{}:
			default:
			}
		}
	}
	r.router.mu.Unlock()
	ctx := context.Background()
	wait := func() {
		select {
		case <-all:
		case <-time.After(120 * time.Second):
			b.Fatal("the router never got there")
		}
	}
	var total time.Duration
	iters := 0
	for b.Loop() {
		start := time.Now()
		if err := r.s.Apply(ctx, routes); err != nil {
			b.Fatal(err)
		}
		wait()
		total += time.Since(start)
		iters++
		b.StopTimer()
		if err := r.s.Apply(ctx, nil); err != nil {
			b.Fatal(err)
		}
		wait()
		b.StartTimer()
	}
	b.ReportMetric(total.Seconds()/float64(iters), "seconds")
}

// BenchmarkMemoryPerRoute measures the speaker's heap per announced route:
// kglb's own record plus GoBGP's RIB entry. The neighbor is configured but
// never connects, so the router's memory (it would live in this process)
// is not counted; GoBGP keeps no per-peer copy of the paths it sends.
func BenchmarkMemoryPerRoute(b *testing.B) {
	const n = 10000
	s := idleSpeaker(b)
	routes := vips(n)
	ctx := context.Background()
	heap := func() uint64 {
		var m runtime.MemStats
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	var perRoute float64
	iters := 0
	for b.Loop() {
		b.StopTimer()
		before := heap()
		b.StartTimer()
		if err := s.Apply(ctx, routes); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		after := heap()
		perRoute += (float64(after) - float64(before)) / n
		iters++
		if err := s.Apply(ctx, nil); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(perRoute/float64(iters), "B/route")
}

// BenchmarkApplyUnchanged measures an Apply of 1,000 routes the speaker
// already holds: what the engine's every pass costs the speaker when no
// route changed (the engine hands the routes on every pass and the speaker
// alone decides that nothing is to be sent). The neighbor is configured but
// never connects; TestApplyStates shows such an Apply sends no UPDATE.
func BenchmarkApplyUnchanged(b *testing.B) {
	const n = 1000
	s := idleSpeaker(b)
	routes := vips(n)
	ctx := context.Background()
	if err := s.Apply(ctx, routes); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Apply(ctx, routes); err != nil {
			b.Fatal(err)
		}
	}
}

// reportLatency reports the p50 and p99 of lat in milliseconds.
func reportLatency(b *testing.B, lat []time.Duration) {
	slices.Sort(lat)
	pct := func(p float64) float64 {
		return float64(lat[int(p*float64(len(lat)-1))]) / float64(time.Millisecond)
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
}

// idleSpeaker is a speaker with one neighbor configured that never
// connects (port 9 on loopback, retried hourly): what its own Apply costs,
// with no session to send to.
func idleSpeaker(b *testing.B) *Speaker {
	b.Helper()
	s, err := New(context.Background(), Config{ASN: localASN, RouterID: addr("10.255.255.2"),
		Neighbors: []Neighbor{filled(Neighbor{Address: addr("127.0.0.1"), ASN: routerASN, Port: 9, LocalAddress: nextLoopback(), ConnectRetry: time.Hour})},
	}, Options{Logger: hclog.NewNullLogger()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}
