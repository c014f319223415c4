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

// BenchmarkWeightChangeFake100k is the reconciler's own cost of one weight
// change among 100k reals (10,000 services x 10), handed as the whole
// Desired value, on the fake kernel.
func BenchmarkWeightChangeFake100k(b *testing.B) {
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
		s.Reals = slices.Clone(s.Reals) // Apply keeps the slice it was handed
		s.Reals[5].Weight = uint16(2 + i%2)
		if res, err := rec.Apply(ctx, d); err != nil || res.Writes.Total() > 1 {
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
// sort into: 1 + 2k with k reals sorting above it, so 11 on average, when
// the new real starts at weight 0 as kglb adds a real not yet checked
// ("writes/insert"), and 1 more when k > 0 for a real that starts with its
// weight, as in a service without checks ("writes/insert-weighted"). Any
// other scheduler pays 1.
func BenchmarkWritesPerMHInsertion(b *testing.B) {
	const n = 10
	rec, err := NewReconciler(NewFake(), Options{StateDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	var writes [2]int
	inserts := 0
	for range b.N {
		for j, w := range []uint16{0, 100} {
			for pos := range n + 1 {
				all := mhReals(n+1, 100)
				rest := slices.Delete(slices.Clone(all), pos, pos+1)
				if _, err := rec.Apply(ctx, mhService(rest)); err != nil {
					b.Fatal(err)
				}
				all[pos].Weight = w
				res, err := rec.Apply(ctx, mhService(all))
				if err != nil {
					b.Fatal(err)
				}
				writes[j] += res.Writes.Total()
				if j == 0 {
					inserts++
				}
			}
		}
	}
	b.ReportMetric(float64(writes[0])/float64(inserts), "writes/insert")
	b.ReportMetric(float64(writes[1])/float64(inserts), "writes/insert-weighted")
}
