//go:build !vmtest

package ipvs

import (
	"slices"
	"testing"
)

// BenchmarkWritesPerEditFake is BenchmarkWritesPerEdit (vmtest) on the fake
// kernel, so the host's `make bench` has the row too.
func BenchmarkWritesPerEditFake(b *testing.B) {
	benchWritesPerEdit(b, NewFake(), b.TempDir())
}

// BenchmarkApplyServiceFake100k is the reconciler's own cost of one weight
// change among 100k reals (10,000 services x 10), on the fake kernel.
func BenchmarkApplyServiceFake100k(b *testing.B) {
	d := bigDesired(10000, 10)
	rec, err := NewReconciler(NewFake(), Options{StateDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := rec.Apply(ctx, d); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		s := &d.Services[(i*37)%len(d.Services)]
		s.Reals[5].Weight = uint16(2 + i%2)
		if res, err := rec.ApplyService(ctx, *s); err != nil || res.Writes.Total() > 1 {
			b.Fatal(res.Writes, err)
		}
	}
}

// BenchmarkColdApplyFake10kx10 is the reconciler's own cost of a cold
// apply of 10,000 services x 10 reals, on the fake kernel.
func BenchmarkColdApplyFake10kx10(b *testing.B) {
	d := bigDesired(10000, 10)
	b.ReportAllocs()
	for range b.N {
		rec, err := NewReconciler(NewFake(), Options{StateDir: b.TempDir()})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := rec.Apply(ctx, d); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWritesPerMHInsertion: the kernel writes of adding one real to an
// mh service of 10 reals, averaged over every position the new real can
// sort into ("writes/insert"; 1 + 2k with k reals sorting above it, so 11
// on average; any other scheduler pays 1).
func BenchmarkWritesPerMHInsertion(b *testing.B) {
	const n = 10
	all := mhReals(n+1, 100)
	rec, err := NewReconciler(NewFake(), Options{StateDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	writes, inserts := 0, 0
	for range b.N {
		for pos := range all {
			rest := slices.Delete(slices.Clone(all), pos, pos+1)
			if _, err := rec.Apply(ctx, mhService(rest)); err != nil {
				b.Fatal(err)
			}
			res, err := rec.Apply(ctx, mhService(all))
			if err != nil {
				b.Fatal(err)
			}
			writes += res.Writes.Total()
			inserts++
		}
	}
	b.ReportMetric(float64(writes)/float64(inserts), "writes/insert")
}
