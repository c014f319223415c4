//go:build vmtest

package vip_test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/kglb/kglb/internal/nstest"
	"github.com/kglb/kglb/vip"
)

// BenchmarkVIPScale measures the cost per VIP of a cold Apply of 1,000 and
// of 20,000 VIPs on kglb0 (each in a fresh namespace, so both start empty),
// for each mode, and reports
//
//	us-per-vip-1k   µs per VIP when applying 1,000
//	us-per-vip-20k  µs per VIP when applying 20,000
//	ratio           us-per-vip-20k / us-per-vip-1k (target for route: <= 1.5)
//
// The time is the whole Apply: the link check, the one dump and the writes.
// Route mode should stay flat; address mode grows with the count (the
// kernel walks the link's address list on each insert), which is why route
// mode is the default.
func BenchmarkVIPScale(b *testing.B) {
	const small, large = 1000, 20000
	for _, tt := range []struct {
		mode vip.Mode
		// rounds of (3 x small, 1 x large), interleaved so that a burst of
		// load on the shared machine hits both sides alike. Address mode
		// takes minutes per large apply under TCG, so it gets one.
		rounds int
	}{
		{vip.ModeRoute, 3},
		{vip.ModeAddress, 1},
	} {
		b.Run(string(tt.mode), func(b *testing.B) {
			// Under TCG the first run of a kernel path also pays for
			// translating it: warm up untimed so the small side is not
			// inflated.
			coldApply(b, tt.mode, small)
			const smallRuns = 3
			var tSmall, tLarge time.Duration
			for range b.N {
				for range tt.rounds {
					for range smallRuns {
						tSmall += coldApply(b, tt.mode, small)
					}
					tLarge += coldApply(b, tt.mode, large)
				}
			}
			n := b.N * tt.rounds
			perSmall := float64(tSmall.Nanoseconds()) / 1e3 / float64(small*smallRuns*n)
			perLarge := float64(tLarge.Nanoseconds()) / 1e3 / float64(large*n)
			b.ReportMetric(perSmall, "us-per-vip-1k")
			b.ReportMetric(perLarge, "us-per-vip-20k")
			b.ReportMetric(perLarge/perSmall, "ratio")
		})
	}
}

// coldApply times one Apply of n VIPs onto an empty
// kglb0 in a fresh namespace. The link is created beforehand and deleted
// afterwards, both outside the timer.
func coldApply(b *testing.B, mode vip.Mode, n int) time.Duration {
	b.StopTimer()
	defer b.StartTimer()
	ns := nstest.New(b)
	k, err := vip.NewNetlink(vip.NetlinkOptions{NetNS: ns.Path})
	if err != nil {
		b.Fatal(err)
	}
	defer k.Close()
	r, err := vip.New(vip.Options{Kernel: k, Mode: mode, StateDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := r.Apply(context.Background(), nil); err != nil { // creates kglb0
		b.Fatal(err)
	}
	desired := benchVIPs(n)

	b.StartTimer()
	start := time.Now()
	res, err := r.Apply(context.Background(), desired)
	d := time.Since(start)
	b.StopTimer()

	if err != nil {
		b.Fatal(err)
	}
	if res.Writes != n || len(res.Held) != n {
		b.Fatalf("cold apply of %d VIPs: %d writes, %d held", n, res.Writes, len(res.Held))
	}
	// Remove the link now (synchronously) rather than leaving it to the
	// namespace's asynchronous teardown, which would run during the next
	// measurement.
	h := ns.Netlink(b)
	l, err := h.LinkByName(vip.DefaultLink)
	if err != nil {
		b.Fatal(err)
	}
	if err := h.LinkDel(l); err != nil {
		b.Fatal(err)
	}
	return d
}

// benchVIPs returns n IPv4 VIPs from 198.18.0.0/15, the range set aside
// for benchmarks (RFC 2544), used only inside the VM's throwaway namespace.
// IPv4, like the measurements the targets come from (design.md section 7).
func benchVIPs(n int) []netip.Addr {
	out := make([]netip.Addr, 0, n)
	a := netip.MustParseAddr("198.18.0.1")
	for range n {
		out = append(out, a)
		a = a.Next()
	}
	return out
}
