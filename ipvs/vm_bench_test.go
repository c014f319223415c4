//go:build vmtest

package ipvs

import (
	"slices"
	"testing"
	"time"

	"github.com/kglb/kglb/internal/nstest"
	mobyipvs "github.com/moby/ipvs"
)

// BenchmarkWritesPerEdit: writes issued / minimal changes over 200 random
// edits on the real kernel ("ratio", 1.00) and the writes of a no-op apply
// after each ("noop-writes", 0).
func BenchmarkWritesPerEdit(b *testing.B) {
	_, k := vmKernel(b)
	benchWritesPerEdit(b, k, b.TempDir())
}

// bareCreate creates d with a plain loop of moby/ipvs calls: the floor
// kglb is measured against.
func bareCreate(b *testing.B, h *mobyipvs.Handle, d Desired) {
	for _, s := range d.Services {
		ms := toMobyService(Service{Key: s.Key, Scheduler: s.Scheduler, Netmask: 32})
		if err := h.NewService(ms); err != nil {
			b.Fatal(err)
		}
		for _, r := range s.Reals {
			if err := h.NewDestination(ms, toMobyDest(r)); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkColdApply10kx10: a cold Apply of 10,000 services x 10 reals
// against a bare loop of moby/ipvs calls creating the same objects;
// ratio = kglb / bare (target <= 1.2). Each side gets a fresh network
// namespace: after a flush the kernel keeps deleted reals in a per-namespace
// trash list that every later add walks, which would slow whichever side
// ran second. Host noise moves this figure (the VM is emulated, on shared
// cores): both sides are measured in the same run for that reason.
func BenchmarkColdApply10kx10(b *testing.B) {
	nstest.Require(b)
	d := bigDesired(10000, 10)
	var bare, kglb time.Duration
	runBare := func() {
		h := mobyHandle(b, nstest.New(b))
		t0 := time.Now()
		bareCreate(b, h, d)
		bare += time.Since(t0)
		// Services of every namespace share one kernel hash table: empty
		// it so the other side does not walk this side's chains.
		if err := h.Flush(); err != nil {
			b.Fatal(err)
		}
	}
	runKglb := func() {
		lb, k := vmKernel(b)
		rec := newRec(b, k, b.TempDir())
		t0 := time.Now()
		res, err := rec.Apply(ctx, d)
		kglb += time.Since(t0)
		if err != nil || res.Writes.Total() != 110000 {
			b.Fatalf("cold apply: writes %v err %v", res.Writes, err)
		}
		if err := mobyHandle(b, lb).Flush(); err != nil {
			b.Fatal(err)
		}
	}
	for range b.N {
		// Both orders, so the kernel's warm-up (slab growth) and the
		// host's noise fall on both sides alike.
		runBare()
		runKglb()
		runKglb()
		runBare()
	}
	n := float64(2 * b.N)
	b.ReportMetric(kglb.Seconds()/bare.Seconds(), "ratio")
	b.ReportMetric(kglb.Seconds()/n, "kglb-s")
	b.ReportMetric(bare.Seconds()/n, "bare-s")
}

// BenchmarkWeightChange100k: one weight change among 100k reals (10,000
// services x 10) through Apply of the whole Desired value, which diffs
// every service against the reconciler's cache (no kernel read: the cache
// is trusted between Resyncs), against one bare UpdateDestination call;
// ratio = Apply / bare.
func BenchmarkWeightChange100k(b *testing.B) {
	lb, k := vmKernel(b)
	h := mobyHandle(b, lb)
	d := bigDesired(10000, 10)
	rec := newRec(b, k, b.TempDir())
	if _, err := rec.Apply(ctx, d); err != nil {
		b.Fatal(err)
	}
	const reps = 200
	var one, bare time.Duration
	var ones, bares int
	bs := d.Services[7]
	bms := toMobyService(Service{Key: bs.Key, Scheduler: bs.Scheduler, Netmask: 32})
	bdst := toMobyDest(bs.Reals[3])
	for i := range b.N * reps {
		s := &d.Services[(i*37)%len(d.Services)]
		s.Reals = slices.Clone(s.Reals)         // Apply keeps the slice it was handed
		s.Reals[5].Weight = uint16(1 + i%2 + 1) // 2 or 3: always a change
		t0 := time.Now()
		res, err := rec.Apply(ctx, d)
		one += time.Since(t0)
		ones++
		if err != nil || res.Writes.Total() != 1 {
			b.Fatalf("weight change: writes %v err %v", res.Writes, err)
		}
		bdst.Weight = 2 + i%2
		t0 = time.Now()
		if err := h.UpdateDestination(bms, bdst); err != nil {
			b.Fatal(err)
		}
		bare += time.Since(t0)
		bares++
	}
	perBare := bare.Seconds() / float64(bares)
	b.ReportMetric(one.Seconds()/float64(ones)/perBare, "ratio")
	b.ReportMetric(perBare*1e6, "bare-us")
	b.ReportMetric(one.Seconds()/float64(ones)*1e6, "apply-us")
	if err := h.Flush(); err != nil {
		b.Fatal(err)
	}
}

// toMobyDest is r for moby/ipvs, for the bare loops.
func toMobyDest(r Real) *mobyipvs.Destination {
	return &mobyipvs.Destination{
		Address:         ipOf(r.Addr),
		Port:            r.Port,
		Weight:          int(r.Weight),
		ConnectionFlags: uint32(r.Forward),
		AddressFamily:   uint16(FamilyOf(r.Addr)),
		UpperThreshold:  r.UpperThreshold,
		LowerThreshold:  r.LowerThreshold,
	}
}
