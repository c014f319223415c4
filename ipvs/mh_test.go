package ipvs

import (
	"fmt"
	"math/rand"
	"net/netip"
	"slices"
	"testing"
)

// mhReals is n tunnel reals 10.1.0.1.. on port 443 with weight w.
func mhReals(n int, w uint16) []Real {
	rs := make([]Real, n)
	for i := range rs {
		rs[i] = Real{Addr: netip.AddrFrom4([4]byte{10, 1, 0, byte(1 + i)}), Port: 443, Weight: w, Forward: ForwardTunnel}
	}
	return rs
}

func mhService(rs []Real) Desired {
	return Desired{Services: []Service{{Key: tcp("198.51.100.1", 443), Scheduler: "mh", Flags: FlagMHFallback, Reals: rs}}}
}

// canonical is the kernel's list of reals, head first, for a service
// created whole: the reals added in ascending order.
func canonical(rs []Real) []RealKey {
	out := make([]RealKey, 0, len(rs))
	for _, r := range rs {
		out = append(out, r.Key())
	}
	slices.SortFunc(out, func(a, b RealKey) int { return b.compare(a) })
	return out
}

// TestMHOrderWhateverTheHistory: for an mh service, the kernel's list of
// reals (which the Maglev table is built from) ends the same whatever the
// edits that led to the same definition, and a second apply writes nothing.
func TestMHOrderWhateverTheHistory(t *testing.T) {
	final := mhReals(6, 100)
	final[2].Weight = 50
	k := mhService(final).Services[0].Key
	with := func(rs ...Real) Desired { return mhService(rs) }
	rng := rand.New(rand.NewSource(7))
	shuffled := slices.Clone(final)
	rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	oneByOne := func(rs []Real) []Desired {
		var out []Desired
		for i := range rs {
			out = append(out, with(rs[:i+1]...))
		}
		return out
	}
	descending := slices.Clone(final)
	slices.Reverse(descending)
	zeroed := slices.Clone(final)
	for i := range zeroed {
		zeroed[i].Weight = 0
	}
	histories := []struct {
		name  string
		steps []Desired
	}{
		{"created whole", []Desired{with(final...)}},
		{"one by one ascending", oneByOne(final)},
		{"one by one descending", oneByOne(descending)},
		{"one by one shuffled", oneByOne(shuffled)},
		{"removed and re-added", []Desired{with(final...), with(final[0], final[1], final[3], final[5]), with(final[3]), with(final...)}},
		{"weights changed", []Desired{with(zeroed...), with(final...)}},
		{"from another scheduler", []Desired{
			{Services: []Service{{Key: k, Scheduler: "wrr", Reals: final[3:]}}},
			{Services: []Service{{Key: k, Scheduler: "wrr", Reals: final}}},
			with(final...)}},
	}
	for _, h := range histories {
		t.Run(h.name, func(t *testing.T) {
			f := NewFake()
			rec := newRec(t, f, "")
			for _, d := range h.steps {
				if _, err := rec.Apply(ctx, d); err != nil {
					t.Fatal(err)
				}
			}
			if got, want := f.List(k), canonical(final); !slices.Equal(got, want) {
				t.Errorf("kernel list %v, want %v", got, want)
			}
			if got, want := f.String(), render(t, with(final...)); got != want {
				t.Errorf("kernel\n%s\nwant\n%s", got, want)
			}
			f.ResetCounts()
			if res, err := rec.Resync(ctx, with(final...)); err != nil || res.Writes.Total() != 0 {
				t.Errorf("resync wrote %v (err %v)", res.Writes, err)
			}
		})
	}
	t.Run("adopted out of order", func(t *testing.T) {
		// A kernel whose list is in arrival order (an older kglb, or
		// ipvsadm) is put in order by the first pass after a restart.
		f := NewFake()
		dir := t.TempDir()
		if _, err := newRec(t, f, dir).Apply(ctx, with(final[3])); err != nil {
			t.Fatal(err)
		}
		for _, i := range []int{5, 0, 4, 1, 2} {
			if err := f.AddReal(k, final[i]); err != nil {
				t.Fatal(err)
			}
		}
		rec := newRec(t, f, dir)
		if _, err := rec.Apply(ctx, with(final...)); err != nil {
			t.Fatal(err)
		}
		if got, want := f.List(k), canonical(final); !slices.Equal(got, want) {
			t.Errorf("kernel list %v, want %v", got, want)
		}
	})
}

// TestMHInsertionWrites: adding a real to an mh service costs one add plus
// a delete and an add for each real that sorts above it, and, when there are
// such reals and the new one has a weight, one update that gives it its
// weight last (it goes in at 0, so the table stays the old one while the
// others are re-added). A removal and a weight change cost one write, as
// for every scheduler.
func TestMHInsertionWrites(t *testing.T) {
	for _, w := range []uint16{0, 100} {
		all := mhReals(5, 100)
		for i := range all {
			rest := slices.Delete(slices.Clone(all), i, i+1)
			t.Run(fmt.Sprintf("insert %s weight %d", all[i].Addr, w), func(t *testing.T) {
				f := NewFake()
				rec := newRec(t, f, "")
				if _, err := rec.Apply(ctx, mhService(rest)); err != nil {
					t.Fatal(err)
				}
				var ops []string
				f.Inject = func(op Op, _ Key, r RealKey) error {
					ops = append(ops, op.String()+" "+r.String())
					return nil
				}
				next := slices.Clone(all)
				next[i].Weight = w
				res, err := rec.Apply(ctx, mhService(next))
				if err != nil {
					t.Fatal(err)
				}
				above := len(all) - 1 - i
				want := Writes{OpAddReal: 1 + above, OpDeleteReal: above}
				if above > 0 && w != 0 {
					want[OpUpdateReal] = 1
					if last := ops[len(ops)-1]; last != OpUpdateReal.String()+" "+all[i].Key().String() {
						t.Errorf("last write %q, want the new real's weight", last)
					}
				}
				if res.Writes != want {
					t.Errorf("writes %v, want %v (%q)", res.Writes, want, ops)
				}
				if got, want := f.String(), render(t, mhService(next)); got != want {
					t.Errorf("kernel\n%s\nwant\n%s", got, want)
				}
				f.Inject = nil
				res, err = rec.Apply(ctx, mhService(rest))
				if err != nil || res.Writes != (Writes{OpDeleteReal: 1}) {
					t.Errorf("removal: writes %v (err %v)", res.Writes, err)
				}
				rest = slices.Clone(rest) // Apply keeps the slice it was handed
				rest[0].Weight = 7
				res, err = rec.Apply(ctx, mhService(rest))
				if err != nil || res.Writes != (Writes{OpUpdateReal: 1}) {
					t.Errorf("weight change: writes %v (err %v)", res.Writes, err)
				}
			})
		}
	}
}

// TestMHReaddCarriesWeight: a real re-added to restore the order takes its
// new weight with the add, with no separate update.
func TestMHReaddCarriesWeight(t *testing.T) {
	all := mhReals(3, 100)
	f := NewFake()
	rec := newRec(t, f, "")
	if _, err := rec.Apply(ctx, mhService(all[1:])); err != nil {
		t.Fatal(err)
	}
	all[0].Weight = 0 // new, as kglb adds a real not yet checked
	all[2].Weight = 0
	res, err := rec.Apply(ctx, mhService(all))
	if err != nil {
		t.Fatal(err)
	}
	if want := (Writes{OpAddReal: 3, OpDeleteReal: 2}); res.Writes != want {
		t.Errorf("writes %v, want %v", res.Writes, want)
	}
	if got, want := f.String(), render(t, mhService(all)); got != want {
		t.Errorf("kernel\n%s\nwant\n%s", got, want)
	}
}
