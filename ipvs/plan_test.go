package ipvs

import (
	"math/rand"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// equateAddrs lets cmp compare netip values (their fields are unexported).
var equateAddrs = cmpopts.EquateComparable(netip.Addr{})

// TestPlanEqualsApply proves the plan cannot drift from a reload: for
// random edits (with restarts, resyncs, foreign services and draining reals
// holding connections) the writes Plan records are the writes the
// following Apply issues, one for one and in order, and Plan changes
// neither the kernel nor the ownership record.
func TestPlanEqualsApply(t *testing.T) {
	for seed := int64(1); seed <= 20; seed++ {
		rng := rand.New(rand.NewSource(seed))
		f := NewFake()
		if err := f.AddService(Service{Key: tcp("198.51.100.3", 443), Scheduler: "rr", Netmask: 32}); err != nil {
			t.Fatal(err) // foreign: the edits may name it
		}
		live := &recorder{read: f, pass: true}
		dir := t.TempDir()
		now := time.Unix(1e9, 0)
		clock := func() time.Time { return now }
		open := func() *Reconciler {
			r, err := NewReconciler(live, Options{StateDir: dir, Now: clock})
			if err != nil {
				t.Fatal(err)
			}
			return r
		}
		rec := open()
		prev := Desired{}
		for step := range 60 {
			next := randomEdit(rng, prev)
			switch rng.Intn(6) {
			case 0:
				_, _ = rec.Resync(ctx, prev) // the foreign service may fail
			case 1:
				rec = open()
			case 2: // time passes: some drains end
				now = now.Add(time.Duration(rng.Intn(90)) * time.Second)
			case 3: // a real holds connections
				for _, s := range prev.Services {
					for _, rl := range s.Reals {
						_ = f.SetConns(s.Key, rl.Key(), rng.Intn(2), 0)
					}
				}
			}
			kernel := f.String()
			record, _ := os.ReadFile(filepath.Join(dir, StateFile))
			pl, perr := rec.Plan(ctx, next)
			if f.String() != kernel {
				t.Fatalf("seed %d step %d: plan wrote to the kernel", seed, step)
			}
			if after, _ := os.ReadFile(filepath.Join(dir, StateFile)); string(after) != string(record) {
				t.Fatalf("seed %d step %d: plan wrote the ownership record", seed, step)
			}
			live.writes = nil
			rec.StartRecord()
			res, aerr := rec.Apply(ctx, next)
			got := rec.StopRecord()
			if (perr == nil) != (aerr == nil) {
				t.Fatalf("seed %d step %d: plan error %v, apply error %v", seed, step, perr, aerr)
			}
			if d := cmp.Diff(live.writes, pl.Writes, equateAddrs); d != "" {
				t.Fatalf("seed %d step %d: writes (-apply +plan):\n%s", seed, step, d)
			}
			// What the pass records of itself is what the plan said (but
			// the counters: the pass reads a draining service's again).
			if d := cmp.Diff(got.Writes, pl.Writes, equateAddrs); d != "" {
				t.Fatalf("seed %d step %d: writes (-recorded +plan):\n%s", seed, step, d)
			}
			if d := cmp.Diff(noCounters(got.Before), noCounters(pl.Before), equateAddrs); d != "" {
				t.Fatalf("seed %d step %d: before (-recorded +plan):\n%s", seed, step, d)
			}
			if d := cmp.Diff(res.Draining, pl.Result.Draining, equateAddrs); d != "" {
				t.Fatalf("seed %d step %d: draining (-apply +plan):\n%s", seed, step, d)
			}
			prev = next
		}
	}
}

// TestPlanBefore gives the state the writes go over.
func TestPlanBefore(t *testing.T) {
	f := NewFake()
	rec := newRec(t, f, "")
	web := Service{Key: tcp("198.51.100.10", 443), Scheduler: "rr", Reals: []Real{real("10.1.0.1", 443, 100, ForwardNAT)}}
	if _, err := rec.Apply(ctx, Desired{Services: []Service{web}}); err != nil {
		t.Fatal(err)
	}
	web2 := web
	web2.Scheduler = "wrr"
	web2.Reals = []Real{real("10.1.0.1", 443, 50, ForwardNAT)}
	pl, err := rec.Plan(ctx, Desired{Services: []Service{web2}})
	if err != nil {
		t.Fatal(err)
	}
	if len(pl.Writes) != 2 || pl.Writes[0].Op != OpUpdateService || pl.Writes[1].Op != OpUpdateReal || pl.Writes[1].Real.Weight != 50 {
		t.Fatalf("writes %+v", pl.Writes)
	}
	if len(pl.Before) != 1 || pl.Before[0].Scheduler != "rr" || len(pl.Before[0].Reals) != 1 || pl.Before[0].Reals[0].Weight != 100 {
		t.Fatalf("before %+v", pl.Before)
	}
}

// noCounters is ss without connection counts and statistics.
func noCounters(ss []Service) []Service {
	var out []Service
	for _, s := range ss {
		s.Stats = Stats{}
		s.Reals = append([]Real(nil), s.Reals...)
		for i := range s.Reals {
			s.Reals[i].ActiveConns, s.Reals[i].InactiveConns, s.Reals[i].Stats = 0, 0, Stats{}
		}
		out = append(out, s)
	}
	return out
}
