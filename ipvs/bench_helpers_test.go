package ipvs

import (
	"math/rand"
	"net/netip"
	"testing"
)

// benchWritesPerEdit applies a fixed sequence of random edits to k and
// reports writes issued / minimal changes ("ratio", must be 1.00; for mh
// services the minimum includes the re-adds that keep their reals in
// canonical order, counted apart as "mh-readd-writes") and the writes of a
// no-op apply after each edit ("noop-writes", must be 0).
func benchWritesPerEdit(b *testing.B, k Kernel, stateDir string) {
	var issued, minimal, noop, readds int
	for range b.N {
		rng := rand.New(rand.NewSource(1))
		rec, err := NewReconciler(k, Options{StateDir: stateDir})
		if err != nil {
			b.Fatal(err)
		}
		prev := Desired{}
		for range 200 {
			next := randomEdit(rng, prev)
			readd := mhReadds(b, k, prev, next)
			res, err := rec.Apply(ctx, next)
			if err != nil {
				b.Fatal(err)
			}
			issued += res.Writes.Total()
			minimal += minimalWrites(prev, next) + readd
			readds += readd
			res, err = rec.Apply(ctx, next)
			if err != nil {
				b.Fatal(err)
			}
			noop += res.Writes.Total()
			prev = next
		}
		if _, err := rec.Apply(ctx, Desired{}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(issued)/float64(minimal), "ratio")
	b.ReportMetric(float64(noop), "noop-writes")
	b.ReportMetric(float64(readds)/float64(b.N), "mh-readd-writes")
}

// bigDesired is nSvc tcp services with nReal tunnel reals each.
func bigDesired(nSvc, nReal int) Desired {
	d := Desired{Services: make([]Service, nSvc)}
	for i := range nSvc {
		s := Service{Key: AddrKey(TCP, netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}), 80), Scheduler: "rr",
			Reals: make([]Real, nReal)}
		for j := range nReal {
			s.Reals[j] = Real{Addr: netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), byte(j + 1)}), Port: 80, Weight: 1, Forward: ForwardTunnel}
		}
		d.Services[i] = s
	}
	return d
}
