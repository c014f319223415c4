//go:build vmtest

package ipvs

import (
	"math/rand"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestVMPlanEqualsApply is TestPlanEqualsApply on the real kernel: for
// random edits (with restarts and resyncs) the writes Plan records are
// those the following Apply issues, and Plan leaves the kernel as it was.
func TestVMPlanEqualsApply(t *testing.T) {
	for seed := int64(1); seed <= 3; seed++ {
		_, k := vmKernel(t)
		live := &recorder{read: k, pass: true}
		dir := t.TempDir()
		rng := rand.New(rand.NewSource(seed))
		rec := newRec(t, live, dir)
		prev := Desired{}
		total := 0
		for step := range 30 {
			next := randomEdit(rng, prev)
			switch rng.Intn(6) {
			case 0:
				if _, err := rec.Resync(ctx, prev); err != nil {
					t.Fatal(err)
				}
			case 1:
				rec = newRec(t, live, dir)
			}
			before := dump(t, k)
			pl, perr := rec.Plan(ctx, next)
			if after := dump(t, k); after != before {
				t.Fatalf("seed %d step %d: plan changed the kernel:\n%s\nwas\n%s", seed, step, after, before)
			}
			live.writes = nil
			_, aerr := rec.Apply(ctx, next)
			if perr != nil || aerr != nil {
				t.Fatalf("seed %d step %d: plan error %v, apply error %v", seed, step, perr, aerr)
			}
			if d := cmp.Diff(live.writes, pl.Writes, equateAddrs); d != "" {
				t.Fatalf("seed %d step %d: writes (-apply +plan):\n%s", seed, step, d)
			}
			if got, want := dump(t, k), render(t, next); got != want {
				t.Fatalf("seed %d step %d: kernel\n%s\nwant\n%s", seed, step, got, want)
			}
			total += len(live.writes)
			prev = next
		}
		t.Logf("seed %d: 30 edits, %d writes planned and applied alike", seed, total)
	}
}
