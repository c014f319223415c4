package ipvs

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestFailedAddRetriedByNextChangedPass: a real whose add failed in a pass
// that also changed the set of services (a reload adding a service) is
// added by the next pass, even when that pass lists only other services
// as changed (Desired.Changed, as the engine's health passes do): the
// failed service is not in step, and must not be taken as such.
func TestFailedAddRetriedByNextChangedPass(t *testing.T) {
	f := NewFake()
	rec := newRec(t, f, "")
	a := Service{Key: tcp("198.51.100.1", 80), Name: "a", Scheduler: "wrr", Reals: []Real{real("10.1.0.1", 80, 100, ForwardTunnel)}}
	b := Service{Key: tcp("198.51.100.2", 80), Name: "b", Scheduler: "wrr",
		Reals: []Real{real("10.1.0.2", 80, 100, ForwardTunnel), real("10.1.0.3", 80, 100, ForwardTunnel)}}
	if _, err := rec.Apply(ctx, Desired{Services: []Service{a}}); err != nil {
		t.Fatal(err)
	}
	// A reload adds b; one of its reals fails to be added (a transient
	// error, not one that shows the cache wrong).
	boom := errors.New("transient failure")
	bad := RealKey{mustAddr("10.1.0.3"), 80}
	f.Inject = func(op Op, _ Key, r RealKey) error {
		if op == OpAddReal && r == bad {
			return boom
		}
		return nil
	}
	d := Desired{Services: []Service{a, b}}
	if _, err := rec.Apply(ctx, d); !errors.Is(err, boom) {
		t.Fatalf("want the injected error, got %v", err)
	}
	f.Inject = nil
	// A health pass: a's weight changes, and only a is listed.
	next := withWeight(d, 0, 0)
	next.Changed = []int{0}
	if _, err := rec.Apply(ctx, next); err != nil {
		t.Fatal(err)
	}
	if got, want := f.String(), render(t, next); got != want {
		t.Errorf("kernel after the next pass\n%s\nwant\n%s", got, want)
	}
}

// TestOwnershipSavedAfterFailedSave: when the ownership record cannot be
// written (a full disk), the next pass writes it, even if it changes no
// ownership. Else the record keeps a service kglb deleted, and after a
// restart kglb deletes the service someone else has since created there.
func TestOwnershipSavedAfterFailedSave(t *testing.T) {
	f := NewFake()
	dir := t.TempDir()
	rec := newRec(t, f, dir)
	a := Service{Key: tcp("198.51.100.1", 80), Name: "a", Scheduler: "wrr", Reals: []Real{real("10.1.0.1", 80, 100, ForwardTunnel)}}
	b := Service{Key: tcp("198.51.100.2", 80), Name: "b", Scheduler: "wrr", Reals: []Real{real("10.1.0.2", 80, 100, ForwardTunnel)}}
	if _, err := rec.Apply(ctx, Desired{Services: []Service{a, b}}); err != nil {
		t.Fatal(err)
	}
	// b leaves the configuration while the record cannot be written.
	path := rec.statePath
	blocker := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	rec.statePath = filepath.Join(blocker, StateFile) // ENOTDIR
	if _, err := rec.Apply(ctx, Desired{Services: []Service{a}}); err == nil {
		t.Fatal("no error from a failed save of the record")
	}
	rec.statePath = path
	if _, err := rec.Apply(ctx, Desired{Services: []Service{a}}); err != nil {
		t.Fatal(err)
	}
	owned, err := loadOwned(path)
	if err != nil {
		t.Fatal(err)
	}
	if owned[b.Key] {
		t.Errorf("the record still lists %s, deleted two passes ago", b.Key)
	}
	// The consequence: someone creates their own service at b's key, and
	// kglb restarts.
	if err := f.AddService(Service{Key: b.Key, Scheduler: "rr", Netmask: 32}); err != nil {
		t.Fatal(err)
	}
	rec2 := newRec(t, f, dir)
	if _, err := rec2.Apply(ctx, Desired{Services: []Service{a}}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
	svcs, _ := f.Services()
	if !slices.ContainsFunc(svcs, func(s Service) bool { return s.Key == b.Key }) {
		t.Errorf("after a restart kglb deleted a service it does not own:\n%s", f)
	}
}

// TestFailedSaveIsReported: a save of the ownership record that fails with
// ENOENT (its directory gone) is reported, not taken for a stale cache and
// lost in the pass run again with a full read.
func TestFailedSaveIsReported(t *testing.T) {
	f := NewFake()
	dir := t.TempDir()
	rec := newRec(t, f, dir)
	a := Service{Key: tcp("198.51.100.1", 80), Name: "a", Scheduler: "wrr", Reals: []Real{real("10.1.0.1", 80, 100, ForwardTunnel)}}
	b := Service{Key: tcp("198.51.100.2", 80), Name: "b", Scheduler: "wrr", Reals: []Real{real("10.1.0.2", 80, 100, ForwardTunnel)}}
	if _, err := rec.Apply(ctx, Desired{Services: []Service{a, b}}); err != nil {
		t.Fatal(err)
	}
	rec.statePath = filepath.Join(dir, "gone", StateFile)
	if _, err := rec.Apply(ctx, Desired{Services: []Service{a}}); err == nil {
		t.Error("a failed save of the ownership record was not reported")
	}
}
