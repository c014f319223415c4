package vip_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kglb/kglb/internal/nlbatch"
	"github.com/kglb/kglb/vip"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sys/unix"
)

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, 0, len(ss))
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func entry(s string, proto uint8) vip.Entry {
	return vip.Entry{Prefix: netip.MustParsePrefix(s), Proto: proto}
}

// setup returns a reconciler of mode on a fake kglb0 that already carries
// an operator's entries: a static local route for 198.51.100.99 and the
// address 203.0.113.1 (with the kernel's local route for it).
func setup(t *testing.T, mode vip.Mode) (*vip.Fake, *vip.Reconciler) {
	t.Helper()
	f := vip.NewFake("")
	if _, err := f.EnsureLink(); err != nil {
		t.Fatal(err)
	}
	must(t, write1(f, vip.ModeRoute, vip.OpAdd, entry("198.51.100.99/32", unix.RTPROT_STATIC)))
	must(t, write1(f, vip.ModeAddress, vip.OpAdd, entry("203.0.113.1/32", 0)))
	must(t, write1(f, vip.ModeAddress, vip.OpAdd, entry("2001:db8::99/128", 0)))
	r, err := vip.New(vip.Options{Kernel: f, Mode: mode, StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	return f, r
}

// write1 is one write of op on k.
func write1(k vip.Kernel, m vip.Mode, op string, e vip.Entry) error {
	return k.Write(m, []vip.Change{{Op: op, Entry: e}})[0]
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// The operator's entries, as the fake prints them; every state keeps them.
const (
	foreignAddr4  = "addr 203.0.113.1/32\n"
	foreignAddr6  = "addr 2001:db8::99/128\n"
	foreignAddrs  = foreignAddr4 + foreignAddr6
	foreignRoutes = "local 198.51.100.99/32 proto static\nlocal 203.0.113.1/32 proto kernel\n"
	foreignV6     = "local 2001:db8::99/128 proto kernel\n"
)

var states = []struct {
	name        string
	desired     []netip.Addr
	wantRoute   string // the fake after Apply in route mode
	wantAddress string // and in address mode
}{
	{
		name:        "empty",
		desired:     nil,
		wantRoute:   "link kglb0 up\n" + foreignAddrs + foreignRoutes + foreignV6,
		wantAddress: "link kglb0 up\n" + foreignAddrs + foreignRoutes + foreignV6,
	},
	{
		name:    "one v4",
		desired: addrs("198.51.100.10"),
		wantRoute: "link kglb0 up\n" + foreignAddrs +
			"local 198.51.100.10/32 proto kglb\n" + foreignRoutes + foreignV6,
		wantAddress: "link kglb0 up\naddr 198.51.100.10/32\n" + foreignAddrs +
			"local 198.51.100.10/32 proto kernel\n" + foreignRoutes + foreignV6,
	},
	{
		name:    "v4 and v6",
		desired: addrs("198.51.100.10", "2001:db8::10"),
		wantRoute: "link kglb0 up\n" + foreignAddrs +
			"local 198.51.100.10/32 proto kglb\n" + foreignRoutes +
			"local 2001:db8::10/128 proto kglb\n" + foreignV6,
		wantAddress: "link kglb0 up\naddr 198.51.100.10/32\n" + foreignAddr4 + "addr 2001:db8::10/128\n" + foreignAddr6 +
			"local 198.51.100.10/32 proto kernel\n" + foreignRoutes +
			"local 2001:db8::10/128 proto kernel\n" + foreignV6,
	},
	{
		name:    "swap v4",
		desired: addrs("2001:db8::10", "198.51.100.11"),
		wantRoute: "link kglb0 up\n" + foreignAddrs +
			"local 198.51.100.11/32 proto kglb\n" + foreignRoutes +
			"local 2001:db8::10/128 proto kglb\n" + foreignV6,
		wantAddress: "link kglb0 up\naddr 198.51.100.11/32\n" + foreignAddr4 + "addr 2001:db8::10/128\n" + foreignAddr6 +
			"local 198.51.100.11/32 proto kernel\n" + foreignRoutes +
			"local 2001:db8::10/128 proto kernel\n" + foreignV6,
	},
	{
		// The operator's address and (in route mode) route already make
		// these VIPs local: kglb adds nothing for them. In address mode the
		// operator's route is not an address, so kglb adds one beside it.
		name:      "desired held by foreign entries",
		desired:   addrs("198.51.100.99", "203.0.113.1", "2001:db8::99"),
		wantRoute: "link kglb0 up\n" + foreignAddrs + foreignRoutes + foreignV6,
		wantAddress: "link kglb0 up\naddr 198.51.100.99/32\n" + foreignAddrs +
			"local 198.51.100.99/32 proto kernel\n" + foreignRoutes + foreignV6,
	},
	{
		name: "several, duplicates and a mapped address",
		desired: addrs("198.51.100.12", "198.51.100.10", "::ffff:198.51.100.11", "198.51.100.10",
			"2001:db8::10", "2001:db8::11"),
		wantRoute: "link kglb0 up\n" + foreignAddrs +
			"local 198.51.100.10/32 proto kglb\nlocal 198.51.100.11/32 proto kglb\nlocal 198.51.100.12/32 proto kglb\n" +
			foreignRoutes +
			"local 2001:db8::10/128 proto kglb\nlocal 2001:db8::11/128 proto kglb\n" + foreignV6,
		wantAddress: "link kglb0 up\naddr 198.51.100.10/32\naddr 198.51.100.11/32\naddr 198.51.100.12/32\n" +
			foreignAddr4 + "addr 2001:db8::10/128\naddr 2001:db8::11/128\n" + foreignAddr6 +
			"local 198.51.100.10/32 proto kernel\nlocal 198.51.100.11/32 proto kernel\nlocal 198.51.100.12/32 proto kernel\n" +
			foreignRoutes +
			"local 2001:db8::10/128 proto kernel\nlocal 2001:db8::11/128 proto kernel\n" + foreignV6,
	},
}

// TestStates applies every state in order, then in a shuffled order, in
// both modes: any state moves cleanly to any other, the fake ends equal to
// the state, and applying it again writes nothing.
func TestStates(t *testing.T) {
	for _, mode := range []vip.Mode{vip.ModeRoute, vip.ModeAddress} {
		t.Run(string(mode), func(t *testing.T) {
			f, r := setup(t, mode)
			apply := func(t *testing.T, i int) {
				t.Helper()
				st := states[i]
				if _, err := r.Apply(context.Background(), st.desired); err != nil {
					t.Fatalf("Apply: %v", err)
				}
				want := st.wantRoute
				if mode == vip.ModeAddress {
					want = st.wantAddress
				}
				if got := f.String(); got != want {
					t.Fatalf("kernel after %q:\n%s\nwant:\n%s", st.name, got, want)
				}
				res, err := r.Apply(context.Background(), st.desired)
				if err != nil || res.Writes != 0 {
					t.Fatalf("second Apply of %q: %d writes, err %v; want 0, nil", st.name, res.Writes, err)
				}
			}
			for i, st := range states {
				t.Run(st.name, func(t *testing.T) { apply(t, i) })
			}
			rng := rand.New(rand.NewPCG(1, 2))
			for range 5 * len(states) {
				i := rng.IntN(len(states))
				t.Run("shuffled/"+states[i].name, func(t *testing.T) { apply(t, i) })
			}
		})
	}
}

// TestMinimalWrites is a property test: for random edit sequences over a
// pool of VIPs (some held by foreign entries) the writes issued equal the
// minimal number of changes, there is exactly one dump per Apply (and one
// more at the first, the sweep's), and kglb
// ends up holding exactly the desired VIPs that are not foreign.
func TestMinimalWrites(t *testing.T) {
	pool := addrs("198.51.100.1", "198.51.100.2", "198.51.100.3", "198.51.100.4", "198.51.100.5",
		"198.51.100.99", "203.0.113.1", "2001:db8::1", "2001:db8::2", "2001:db8::3", "2001:db8::99")
	for _, mode := range []vip.Mode{vip.ModeRoute, vip.ModeAddress} {
		t.Run(string(mode), func(t *testing.T) {
			f, r := setup(t, mode)
			foreign := map[netip.Addr]bool{}
			for _, e := range mustList(t, f, mode) {
				foreign[e.Prefix.Addr()] = true
			}
			rng := rand.New(rand.NewPCG(7, uint64(len(mode))))
			held := map[netip.Addr]bool{} // what kglb holds
			for step := range 300 {
				var desired []netip.Addr
				want := map[netip.Addr]bool{}
				for _, a := range pool {
					if rng.IntN(3) == 0 {
						desired = append(desired, a)
						want[a] = true
					}
				}
				minimal := 0
				for a := range want {
					if !held[a] && !foreign[a] {
						minimal++
					}
				}
				for a := range held {
					if !want[a] {
						minimal++
					}
				}
				w0, d0 := f.Writes, f.Dumps
				res, err := r.Apply(context.Background(), desired)
				if err != nil {
					t.Fatalf("step %d: %v", step, err)
				}
				if res.Writes != minimal || f.Writes-w0 != minimal {
					t.Fatalf("step %d: %d writes reported, %d reached the kernel; minimal %d", step, res.Writes, f.Writes-w0, minimal)
				}
				// The first pass also looks once for routes kglb left on
				// other links (sweep).
				wantDumps := 1
				if step == 0 {
					wantDumps = 2
				}
				if f.Dumps-d0 != wantDumps {
					t.Fatalf("step %d: %d dumps, want %d", step, f.Dumps-d0, wantDumps)
				}
				clear(held)
				var wantHeld []netip.Addr
				for a := range want {
					if !foreign[a] {
						held[a] = true
						wantHeld = append(wantHeld, a)
					}
				}
				slices.SortFunc(wantHeld, netip.Addr.Compare)
				if !slices.Equal(res.Held, wantHeld) {
					t.Fatalf("step %d: held %v, want %v", step, res.Held, wantHeld)
				}
				for _, a := range desired {
					if !res.Holds(a) {
						t.Fatalf("step %d: Holds(%v) = false for a desired VIP", step, a)
					}
				}
			}
		})
	}
}

func mustList(t *testing.T, k vip.Kernel, mode vip.Mode) []vip.Entry {
	t.Helper()
	es, err := k.List(mode)
	if err != nil {
		t.Fatal(err)
	}
	return es
}

// TestOwnership: entries kglb did not add survive every Apply, also when
// they hold a VIP that stops being desired, and are reported as Foreign
// while desired.
func TestOwnership(t *testing.T) {
	for _, mode := range []vip.Mode{vip.ModeRoute, vip.ModeAddress} {
		t.Run(string(mode), func(t *testing.T) {
			f, r := setup(t, mode)
			before := f.String()
			desired := addrs("198.51.100.99", "203.0.113.1", "2001:db8::99")
			res, err := r.Apply(context.Background(), desired)
			must(t, err)
			wantForeign := addrs("203.0.113.1", "2001:db8::99")
			if mode == vip.ModeRoute {
				wantForeign = addrs("198.51.100.99", "203.0.113.1", "2001:db8::99")
			}
			if !slices.Equal(res.Foreign, wantForeign) {
				t.Errorf("Foreign = %v, want %v", res.Foreign, wantForeign)
			}
			_, err = r.Apply(context.Background(), nil)
			must(t, err)
			if got := f.String(); got != before {
				t.Errorf("kernel after Apply(nil):\n%s\nwant the operator's entries untouched:\n%s", got, before)
			}
		})
	}
	t.Run("route beside an operator's IPv6 address", func(t *testing.T) {
		// IPv6 keys routes by metric, so kglb's route can sit beside the
		// kernel's route for an address added after it; removing the VIP
		// removes kglb's route only.
		f, r := setup(t, vip.ModeRoute)
		_, err := r.Apply(context.Background(), addrs("2001:db8::50"))
		must(t, err)
		must(t, write1(f, vip.ModeAddress, vip.OpAdd, entry("2001:db8::50/128", 0)))
		res, err := r.Apply(context.Background(), nil)
		must(t, err)
		if !slices.Equal(res.Removed, addrs("2001:db8::50")) {
			t.Errorf("Removed = %v", res.Removed)
		}
		if !strings.Contains(f.String(), "local 2001:db8::50/128 proto kernel\n") {
			t.Errorf("the operator's address lost its route:\n%s", f)
		}
	})
}

// TestPartialFailure: one failing add and one failing delete do not stop
// the others; the result says what was reached, the error names both, and
// the next Apply finishes the job with exactly the two missing writes.
func TestPartialFailure(t *testing.T) {
	for _, mode := range []vip.Mode{vip.ModeRoute, vip.ModeAddress} {
		t.Run(string(mode), func(t *testing.T) {
			f, r := setup(t, mode)
			_, err := r.Apply(context.Background(), addrs("198.51.100.1", "198.51.100.2"))
			must(t, err)
			errBoom := errors.New("boom")
			f.Fail = func(op string, _ vip.Mode, e vip.Entry) error {
				switch {
				case op == "add" && e.Prefix.Addr() == netip.MustParseAddr("198.51.100.3"),
					op == "del" && e.Prefix.Addr() == netip.MustParseAddr("198.51.100.1"):
					return errBoom
				}
				return nil
			}
			desired := addrs("198.51.100.3", "198.51.100.4", "2001:db8::1")
			res, err := r.Apply(context.Background(), desired)
			if !errors.Is(err, errBoom) {
				t.Fatalf("err = %v, want boom", err)
			}
			for _, s := range []string{"add vip 198.51.100.3", "remove vip 198.51.100.1"} {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not name %q", err, s)
				}
			}
			if want := addrs("198.51.100.1", "198.51.100.4", "2001:db8::1"); !slices.Equal(res.Held, want) {
				t.Errorf("Held = %v, want %v", res.Held, want)
			}
			if want := addrs("198.51.100.4", "2001:db8::1"); !slices.Equal(res.Added, want) {
				t.Errorf("Added = %v, want %v", res.Added, want)
			}
			if want := addrs("198.51.100.2"); !slices.Equal(res.Removed, want) {
				t.Errorf("Removed = %v, want %v", res.Removed, want)
			}
			if res.Writes != 5 {
				t.Errorf("Writes = %d, want 5", res.Writes)
			}
			f.Fail = nil
			res, err = r.Apply(context.Background(), desired)
			must(t, err)
			if res.Writes != 2 || !slices.Equal(res.Added, addrs("198.51.100.3")) || !slices.Equal(res.Removed, addrs("198.51.100.1")) {
				t.Errorf("repair: %+v, want one add (198.51.100.3) and one delete (198.51.100.1)", res)
			}
		})
	}
}

// TestDrift: an entry someone deleted, or the whole link, comes back on the
// next Resync (an Apply of the same set trusts what it reached and writes
// nothing); one someone deleted before kglb could is not an error.
func TestDrift(t *testing.T) {
	for _, mode := range []vip.Mode{vip.ModeRoute, vip.ModeAddress} {
		t.Run(string(mode), func(t *testing.T) {
			f, r := setup(t, mode)
			desired := addrs("198.51.100.1", "198.51.100.2", "2001:db8::1")
			_, err := r.Apply(context.Background(), desired)
			must(t, err)
			want := f.String()
			proto := uint8(0)
			if mode == vip.ModeRoute {
				proto = vip.ProtoKGLB
			}
			must(t, write1(f, mode, vip.OpDel, entry("198.51.100.2/32", proto)))
			res, err := r.Apply(context.Background(), desired)
			must(t, err)
			if res.Writes != 0 {
				t.Errorf("Apply of the set it reached: %d writes, want 0 (it trusts what it reached)", res.Writes)
			}
			res, err = r.Resync(context.Background(), desired)
			must(t, err)
			if res.Writes != 1 || f.String() != want {
				t.Errorf("after a hand delete: %d writes, kernel:\n%s\nwant 1 write and:\n%s", res.Writes, f, want)
			}

			f.DeleteLink()
			res, err = r.Resync(context.Background(), desired)
			must(t, err)
			if res.Writes != 3 || !slices.Equal(res.Held, desired) {
				t.Errorf("after the link was deleted: %+v, want 3 writes holding %v", res, desired)
			}

			// Deleted by hand between the dump and kglb's delete.
			f.Fail = func(op string, m vip.Mode, e vip.Entry) error {
				if op == "del" {
					f.Fail = nil
					return unix.ESRCH
				}
				return nil
			}
			res, err = r.Apply(context.Background(), addrs("198.51.100.1", "2001:db8::1"))
			if err != nil || !slices.Equal(res.Held, addrs("198.51.100.1", "2001:db8::1")) {
				t.Errorf("delete of a vanished entry: %+v, %v", res, err)
			}
		})
	}
}

// TestRestart: a new reconciler (a restarted kglb) adopts what the last one
// left, issuing no write; in address mode the record under the state
// directory is what makes the addresses kglb's.
func TestRestart(t *testing.T) {
	desired := addrs("198.51.100.1", "2001:db8::1")
	for _, mode := range []vip.Mode{vip.ModeRoute, vip.ModeAddress} {
		t.Run(string(mode), func(t *testing.T) {
			f := vip.NewFake("")
			dir := t.TempDir()
			r1, err := vip.New(vip.Options{Kernel: f, Mode: mode, StateDir: dir})
			must(t, err)
			_, err = r1.Apply(context.Background(), desired)
			must(t, err)
			r2, err := vip.New(vip.Options{Kernel: f, Mode: mode, StateDir: dir})
			must(t, err)
			w := f.Writes
			res, err := r2.Apply(context.Background(), desired)
			must(t, err)
			if f.Writes != w || !slices.Equal(res.Held, desired) {
				t.Errorf("restart: %d writes, held %v; want 0 writes holding %v", f.Writes-w, res.Held, desired)
			}
			res, err = r2.Apply(context.Background(), nil)
			must(t, err)
			if !slices.Equal(res.Removed, desired) {
				t.Errorf("restarted reconciler removed %v, want %v", res.Removed, desired)
			}
		})
	}
	t.Run("address mode without its record", func(t *testing.T) {
		f := vip.NewFake("")
		r1, err := vip.New(vip.Options{Kernel: f, Mode: vip.ModeAddress, StateDir: t.TempDir()})
		must(t, err)
		_, err = r1.Apply(context.Background(), desired)
		must(t, err)
		before := f.String()
		r2, err := vip.New(vip.Options{Kernel: f, Mode: vip.ModeAddress, StateDir: t.TempDir()})
		must(t, err)
		res, err := r2.Apply(context.Background(), nil)
		must(t, err)
		if res.Writes != 0 || f.String() != before {
			t.Errorf("a reconciler with no record touched addresses it does not own: %+v\n%s", res, f)
		}
	})
}

func TestStateFile(t *testing.T) {
	dir := t.TempDir()
	f := vip.NewFake("")
	r, err := vip.New(vip.Options{Kernel: f, Mode: vip.ModeAddress, StateDir: dir})
	must(t, err)
	_, err = r.Apply(context.Background(), addrs("2001:db8::1", "198.51.100.7"))
	must(t, err)
	got, err := os.ReadFile(filepath.Join(dir, "vip-addresses"))
	must(t, err)
	want := "# VIP addresses kglb added (address mode); kglb removes only these.\n# link kglb0\n198.51.100.7\n2001:db8::1\n"
	if string(got) != want {
		t.Errorf("record:\n%s\nwant:\n%s", got, want)
	}
	entries, err := os.ReadDir(dir)
	must(t, err)
	if len(entries) != 1 {
		t.Errorf("state directory holds %d files, want only the record (no temporary left)", len(entries))
	}

	must(t, os.WriteFile(filepath.Join(dir, "vip-addresses"), []byte("198.51.100.7\nnot-an-ip\n"), 0o600))
	_, err = vip.New(vip.Options{Kernel: f, Mode: vip.ModeAddress, StateDir: dir})
	if err == nil || !strings.Contains(err.Error(), "vip-addresses:2") {
		t.Errorf("New with a broken record: %v, want an error naming vip-addresses:2", err)
	}
}

// TestNoAddWithoutRecord: in address mode an address is added only once
// the record says kglb owns it; when the record cannot be written nothing
// is added (a crash after such an add would leave kglb's address to be
// taken for an operator's for good), and a later pass adds it.
func TestNoAddWithoutRecord(t *testing.T) {
	dir := t.TempDir()
	f := vip.NewFake("")
	r, err := vip.New(vip.Options{Kernel: f, Mode: vip.ModeAddress, StateDir: dir})
	must(t, err)
	// A directory in the record's place: the rename over it fails, root
	// or not.
	record := filepath.Join(dir, "vip-addresses")
	must(t, os.MkdirAll(filepath.Join(record, "x"), 0o700))
	res, err := r.Apply(context.Background(), addrs("198.51.100.7"))
	if err == nil || !strings.Contains(err.Error(), "none added") || len(res.Held) != 0 || strings.Contains(f.String(), "198.51.100.7") {
		t.Fatalf("apply without a record: %+v, %v; want none added\n%s", res, err, f)
	}
	must(t, os.RemoveAll(record))
	res, err = r.Apply(context.Background(), addrs("198.51.100.7"))
	if err != nil || len(res.Held) != 1 || !strings.Contains(f.String(), "198.51.100.7") {
		t.Fatalf("apply once the record can be written: %+v, %v\n%s", res, err, f)
	}
	got, err := os.ReadFile(record)
	if err != nil || !strings.Contains(string(got), "198.51.100.7") {
		t.Errorf("record after the add: %q, %v", got, err)
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name    string
		fake    func() *vip.Fake
		opts    vip.Options
		desired []netip.Addr
		ctx     func() context.Context
		wantErr string
		wantNew string
	}{
		{
			name:    "configured link missing",
			fake:    func() *vip.Fake { f := vip.NewFake("eth9"); f.DeleteLink(); return f },
			desired: addrs("198.51.100.1"),
			wantErr: "ensure vip link eth9: no such device",
		},
		{
			name:    "unusable addresses are refused, the rest applied",
			desired: append(addrs("198.51.100.1", "0.0.0.0", "ff02::1", "fe80::1%eth0"), netip.Addr{}),
			wantErr: "vip 0.0.0.0: not a unicast address",
		},
		{
			name: "cancelled",
			ctx: func() context.Context {
				ctx, cancel := context.WithCancel(context.Background())
				cancel()
				return ctx
			},
			desired: addrs("198.51.100.1"),
			wantErr: "context canceled",
		},
		{
			name:    "unknown mode",
			opts:    vip.Options{Mode: "anycast"},
			wantNew: `unknown vip mode "anycast"`,
		},
		{
			name:    "address mode without a state directory",
			opts:    vip.Options{Mode: vip.ModeAddress},
			wantNew: "address mode needs a state directory",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := vip.NewFake("")
			if tt.fake != nil {
				f = tt.fake()
			}
			opts := tt.opts
			opts.Kernel = f
			r, err := vip.New(opts)
			if tt.wantNew != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantNew) {
					t.Fatalf("New: %v, want %q", err, tt.wantNew)
				}
				return
			}
			must(t, err)
			ctx := context.Background()
			if tt.ctx != nil {
				ctx = tt.ctx()
			}
			res, err := r.Apply(ctx, tt.desired)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Apply: %v, want %q", err, tt.wantErr)
			}
			for _, a := range res.Held {
				if !slices.Contains(tt.desired, a) {
					t.Errorf("held %v, not desired", a)
				}
			}
		})
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	f := vip.NewFake("")
	r, err := vip.New(vip.Options{Kernel: f, Registerer: reg})
	must(t, err)
	_, err = r.Apply(context.Background(), addrs("198.51.100.1", "198.51.100.2", "2001:db8::1"))
	must(t, err)
	_, err = r.Apply(context.Background(), addrs("198.51.100.1"))
	must(t, err)
	_, err = r.Apply(context.Background(), addrs("198.51.100.1"))
	must(t, err)
	want := `
# HELP kglb_vip_held VIPs held on kglb's link by entries kglb owns, after the last apply.
# TYPE kglb_vip_held gauge
kglb_vip_held 1
# HELP kglb_vip_writes_total Netlink writes issued for VIPs by op (add, del, link: creating or raising kglb's link) and outcome (ok, error, exists: the entry appeared since the dump, gone: it vanished since the dump).
# TYPE kglb_vip_writes_total counter
kglb_vip_writes_total{op="add",outcome="error"} 0
kglb_vip_writes_total{op="add",outcome="exists"} 0
kglb_vip_writes_total{op="add",outcome="gone"} 0
kglb_vip_writes_total{op="add",outcome="ok"} 3
kglb_vip_writes_total{op="del",outcome="error"} 0
kglb_vip_writes_total{op="del",outcome="exists"} 0
kglb_vip_writes_total{op="del",outcome="gone"} 0
kglb_vip_writes_total{op="del",outcome="ok"} 2
kglb_vip_writes_total{op="link",outcome="error"} 0
kglb_vip_writes_total{op="link",outcome="ok"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "kglb_vip_held", "kglb_vip_writes_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(reg, "kglb_vip_applies_total"); n != 2 {
		t.Errorf("kglb_vip_applies_total has %d series, want 2", n)
	}
	if _, err := vip.New(vip.Options{Kernel: f, Registerer: reg}); err == nil {
		t.Errorf("a second reconciler on the same registry registered its metrics twice without error")
	}
}

func ExampleReconciler_Apply() {
	k := vip.NewFake("") // vip.NewNetlink(vip.NetlinkOptions{}) on a real system
	r, _ := vip.New(vip.Options{Kernel: k})
	res, err := r.Apply(context.Background(), addrs("198.51.100.10", "2001:db8::10"))
	fmt.Println(res.Added, res.Writes, err)
	res, _ = r.Apply(context.Background(), addrs("198.51.100.10", "2001:db8::10"))
	fmt.Println(res.Writes)
	fmt.Print(k)
	// Output:
	// [198.51.100.10 2001:db8::10] 2 <nil>
	// 0
	// link kglb0 up
	// local 198.51.100.10/32 proto kglb
	// local 2001:db8::10/128 proto kglb
}

// flakyList is a Kernel whose List fails while fail is set, as a dump the
// kernel interrupted or a full socket buffer does.
type flakyList struct {
	*vip.Fake
	fail error
}

func (k *flakyList) List(m vip.Mode) ([]vip.Entry, error) {
	if k.fail != nil {
		return nil, k.fail
	}
	return k.Fake.List(m)
}

// TestReadFailureKeepsHeld: a Resync whose one read of the link fails wrote
// nothing and knows nothing new, so its Result must not say that VIPs the
// link holds (and held a moment ago) are gone: the engine announces only
// what Holds reports, and would withdraw every route of the node for one
// failed dump.
func TestReadFailureKeepsHeld(t *testing.T) {
	for _, mode := range []vip.Mode{vip.ModeRoute, vip.ModeAddress} {
		t.Run(string(mode), func(t *testing.T) {
			k := &flakyList{Fake: vip.NewFake("")}
			r, err := vip.New(vip.Options{Kernel: k, Mode: mode, StateDir: t.TempDir()})
			must(t, err)
			desired := addrs("198.51.100.1", "2001:db8::1")
			_, err = r.Apply(context.Background(), desired)
			must(t, err)
			before := k.String()
			k.fail = errors.New("dump interrupted")
			res, err := r.Resync(context.Background(), desired)
			if err == nil {
				t.Fatal("Resync with a failed read: no error")
			}
			if k.String() != before {
				t.Fatalf("the link changed:\n%s", k)
			}
			for _, a := range desired {
				if !res.Holds(a) {
					t.Errorf("after a failed read, Holds(%s) = false; the link still holds it:\n%s", a, before)
				}
			}
		})
	}
}

// TestAddressRecordIsPerLink: the record of the addresses kglb added (address
// mode) names the link they were added on. After a restart on another link
// (vip_interface changed), an address the operator put on that link is not
// kglb's, even though kglb once added the same address on its old link; the
// ones on the old link are kglb's, and go.
func TestAddressRecordIsPerLink(t *testing.T) {
	dir := t.TempDir()
	old := vip.NewFake("")
	r1, err := vip.New(vip.Options{Kernel: old, Mode: vip.ModeAddress, StateDir: dir})
	must(t, err)
	_, err = r1.Apply(context.Background(), addrs("198.51.100.1", "2001:db8::1"))
	must(t, err)

	eth1 := old.On("eth1")
	must(t, write1(eth1, vip.ModeAddress, vip.OpAdd, entry("198.51.100.1/32", 0)))
	must(t, write1(eth1, vip.ModeAddress, vip.OpAdd, entry("2001:db8::1/128", 0)))
	before := eth1.String()
	r2, err := vip.New(vip.Options{Kernel: eth1, Mode: vip.ModeAddress, StateDir: dir})
	must(t, err)
	res, err := r2.Apply(context.Background(), nil)
	must(t, err)
	if res.Writes != 0 || eth1.String() != before {
		t.Errorf("kglb removed the operator's addresses on eth1, which it never added there: %+v\n%s", res, eth1)
	}
	if got := old.String(); got != "link kglb0 up\n" {
		t.Errorf("kglb0 after the start on eth1:\n%s\nwant the addresses kglb added there gone", got)
	}
}

// lostAcks is the link with the acks of some writes lost: it makes every
// write, as the kernel does within sendmsg, and reports those lose picks as
// nlbatch reports an ack that never came.
type lostAcks struct {
	*vip.Fake
	lose func(vip.Change) bool
}

func (k *lostAcks) Write(m vip.Mode, ws []vip.Change) []error {
	errs := k.Fake.Write(m, ws)
	for i, w := range ws {
		if k.lose(w) {
			errs[i] = fmt.Errorf("no ack within %s: %w", nlbatch.AckTimeout, nlbatch.ErrUnknown)
		}
	}
	return errs
}

// TestLostAckOutcomeUnknown: an add whose ack never came may have been
// made. The pass fails naming the VIP and does not count it held; the next
// pass lists the link and finds the entry kglb's own, not foreign, so a
// later Apply without it removes it. In route mode the route's protocol
// says so; in address mode the record of owned addresses must.
func TestLostAckOutcomeUnknown(t *testing.T) {
	for _, mode := range []vip.Mode{vip.ModeRoute, vip.ModeAddress} {
		t.Run(string(mode), func(t *testing.T) {
			f, _ := setup(t, mode)
			k := &lostAcks{Fake: f, lose: func(c vip.Change) bool { return c.Op == vip.OpAdd }}
			r, err := vip.New(vip.Options{Kernel: k, Mode: mode, StateDir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			desired := addrs("198.51.100.10")
			res, err := r.Apply(context.Background(), desired)
			if !errors.Is(err, nlbatch.ErrUnknown) || len(res.Held) != 0 {
				t.Fatalf("lost ack: held %v, err %v; want none held, %v", res.Held, err, nlbatch.ErrUnknown)
			}
			if want := fmt.Sprintf("add vip 198.51.100.10 (%s on kglb0): no ack within 10s: outcome unknown", mode); err.Error() != want {
				t.Errorf("error %q, want %q", err, want)
			}
			k.lose = func(vip.Change) bool { return false }
			res, err = r.Apply(context.Background(), desired)
			if err != nil || !slices.Equal(res.Held, desired) || len(res.Foreign) != 0 || res.Writes != 0 {
				t.Fatalf("after the lost ack: held %v, foreign %v, %d writes, err %v; want it held, no writes", res.Held, res.Foreign, res.Writes, err)
			}
			if res, err := r.Apply(context.Background(), nil); err != nil || res.Writes != 1 || strings.Contains(f.String(), "198.51.100.10") {
				t.Errorf("apply without it: %d writes, err %v, kernel\n%s", res.Writes, err, f)
			}
		})
	}
}

// vipLinks are the links of TestModeOrLinkChange: kglb's own and a
// configured one.
var vipLinks = []string{"kglb0", "eth1"}

// changeWorld is a namespace with kglb0 and eth1, each with an operator's
// entries: on kglb0 those of setup, on eth1 a static local route for
// 198.51.100.98 and the address 198.51.100.12.
func changeWorld(t *testing.T) map[string]*vip.Fake {
	t.Helper()
	f := vip.NewFake("")
	must(t, func() error { _, err := f.EnsureLink(); return err }())
	must(t, write1(f, vip.ModeRoute, vip.OpAdd, entry("198.51.100.99/32", unix.RTPROT_STATIC)))
	must(t, write1(f, vip.ModeAddress, vip.OpAdd, entry("203.0.113.1/32", 0)))
	must(t, write1(f, vip.ModeAddress, vip.OpAdd, entry("2001:db8::99/128", 0)))
	eth1 := f.On("eth1")
	must(t, write1(eth1, vip.ModeRoute, vip.OpAdd, entry("198.51.100.98/32", unix.RTPROT_STATIC)))
	must(t, write1(eth1, vip.ModeAddress, vip.OpAdd, entry("198.51.100.12/32", 0)))
	return map[string]*vip.Fake{"kglb0": f, "eth1": eth1}
}

func worldString(w map[string]*vip.Fake) string {
	return w["kglb0"].String() + w["eth1"].String()
}

// TestModeOrLinkChange: a start with another vip_mode or vip_interface than
// the last one leaves the namespace as a first start with the new settings
// would: kglb's routes and recorded addresses where it no longer holds VIPs
// are gone, and every entry of the operator's is in place, on both links.
func TestModeOrLinkChange(t *testing.T) {
	desired := addrs("198.51.100.10", "198.51.100.11", "198.51.100.99", "203.0.113.1", "2001:db8::10")
	ctx := context.Background()
	type setting struct {
		mode vip.Mode
		link string
	}
	var settings []setting
	for _, m := range []vip.Mode{vip.ModeRoute, vip.ModeAddress} {
		for _, l := range vipLinks {
			settings = append(settings, setting{m, l})
		}
	}
	for _, from := range settings {
		for _, to := range settings {
			if from == to {
				continue
			}
			t.Run(fmt.Sprintf("%s on %s to %s on %s", from.mode, from.link, to.mode, to.link), func(t *testing.T) {
				// What a first start with to's settings leaves.
				fresh := changeWorld(t)
				freshDir := t.TempDir()
				r, err := vip.New(vip.Options{Kernel: fresh[to.link], Mode: to.mode, StateDir: freshDir})
				must(t, err)
				want, err := r.Apply(ctx, desired)
				must(t, err)
				wantState := worldString(fresh)
				// And a restart after it (which, on eth1, tries again the
				// VIPs that kglb0's entries hold: an IPv4 local route
				// clashes on any link).
				r, err = vip.New(vip.Options{Kernel: fresh[to.link], Mode: to.mode, StateDir: freshDir})
				must(t, err)
				wantRestart, err := r.Apply(ctx, desired)
				must(t, err)

				w := changeWorld(t)
				dir := t.TempDir()
				r1, err := vip.New(vip.Options{Kernel: w[from.link], Mode: from.mode, StateDir: dir})
				must(t, err)
				_, err = r1.Apply(ctx, desired)
				must(t, err)

				r2, err := vip.New(vip.Options{Kernel: w[to.link], Mode: to.mode, StateDir: dir})
				must(t, err)
				res, err := r2.Apply(ctx, desired)
				must(t, err)
				if got := worldString(w); got != wantState {
					t.Errorf("after the change:\n%s\nwant as a first start:\n%s", got, wantState)
				}
				for _, a := range desired {
					if !res.Holds(a) {
						t.Errorf("Holds(%s) = false after the change", a)
					}
				}
				if !slices.Equal(res.Held, want.Held) {
					t.Errorf("held %v, want %v", res.Held, want.Held)
				}
				// The next start finds nothing left to remove.
				r3, err := vip.New(vip.Options{Kernel: w[to.link], Mode: to.mode, StateDir: dir})
				must(t, err)
				res, err = r3.Apply(ctx, desired)
				if err != nil || res.Writes != wantRestart.Writes || worldString(w) != wantState {
					t.Errorf("restart after the change: %d writes, %v\n%s", res.Writes, err, worldString(w))
				}
			})
		}
	}
}

// TestChangeCleanupFailure: a clean-up that fails does not stop the start:
// the VIPs are held with the new settings, the error names what is left,
// the record keeps the addresses still to remove (so a restart meanwhile
// loses none), and the next pass removes them.
func TestChangeCleanupFailure(t *testing.T) {
	ctx := context.Background()
	desired := addrs("198.51.100.10", "2001:db8::10")
	for _, to := range []vip.Mode{vip.ModeRoute, vip.ModeAddress} {
		t.Run("address on kglb0 to "+string(to)+" on eth1", func(t *testing.T) {
			w := changeWorld(t)
			dir := t.TempDir()
			r1, err := vip.New(vip.Options{Kernel: w["kglb0"], Mode: vip.ModeAddress, StateDir: dir})
			must(t, err)
			_, err = r1.Apply(ctx, desired)
			must(t, err)

			eth1 := w["eth1"]
			eth1.Fail = func(op string, m vip.Mode, e vip.Entry) error {
				if op == vip.OpDel {
					return unix.EPERM
				}
				return nil
			}
			r2, err := vip.New(vip.Options{Kernel: eth1, Mode: to, StateDir: dir})
			must(t, err)
			res, err := r2.Apply(ctx, desired)
			if err == nil || !strings.Contains(err.Error(), "kglb0") || !errors.Is(err, unix.EPERM) {
				t.Fatalf("Apply with a failing clean-up: %v, want EPERM naming kglb0", err)
			}
			for _, a := range desired {
				if !res.Holds(a) {
					t.Errorf("Holds(%s) = false: a failed clean-up must not keep the VIPs from the new link", a)
				}
			}
			record, err := os.ReadFile(filepath.Join(dir, "vip-addresses"))
			must(t, err)
			if !strings.Contains(string(record), "# link kglb0\n198.51.100.10\n2001:db8::10\n") {
				t.Errorf("record after the failed clean-up:\n%s\nwant kglb0's addresses still named", record)
			}

			// A restart meanwhile still knows what to remove.
			eth1.Fail = nil
			r3, err := vip.New(vip.Options{Kernel: eth1, Mode: to, StateDir: dir})
			must(t, err)
			_, err = r3.Apply(ctx, desired)
			must(t, err)
			if got := w["kglb0"].String(); got != "link kglb0 up\n"+foreignAddrs+foreignRoutes+foreignV6 {
				t.Errorf("kglb0 after the retry:\n%s\nwant the operator's entries only", got)
			}
			record, err = os.ReadFile(filepath.Join(dir, "vip-addresses"))
			must(t, err)
			if strings.Contains(string(record), "kglb0") {
				t.Errorf("record after the clean-up:\n%s\nstill names kglb0", record)
			}
		})
	}
	t.Run("route on kglb0 to address on kglb0, retried in the same process", func(t *testing.T) {
		w := changeWorld(t)
		r1, err := vip.New(vip.Options{Kernel: w["kglb0"], Mode: vip.ModeRoute})
		must(t, err)
		_, err = r1.Apply(ctx, desired)
		must(t, err)
		fail := true
		w["kglb0"].Fail = func(op string, m vip.Mode, e vip.Entry) error {
			if fail && op == vip.OpDel && e.Proto == vip.ProtoKGLB {
				return unix.ENOBUFS
			}
			return nil
		}
		r2, err := vip.New(vip.Options{Kernel: w["kglb0"], Mode: vip.ModeAddress, StateDir: t.TempDir()})
		must(t, err)
		if _, err := r2.Apply(ctx, desired); !errors.Is(err, unix.ENOBUFS) {
			t.Fatalf("Apply with a failing clean-up: %v, want ENOBUFS", err)
		}
		// The health passes before the retry take the cache, and report
		// the failure again: no dump, of the link or of every link.
		d0 := w["kglb0"].Dumps
		for range 3 {
			if _, err := r2.Apply(ctx, desired); !errors.Is(err, unix.ENOBUFS) {
				t.Errorf("Apply again with a failing clean-up: %v, want ENOBUFS", err)
			}
		}
		if n := w["kglb0"].Dumps - d0; n != 0 {
			t.Errorf("3 Applies with a failing clean-up listed %d times, want 0 (the cache)", n)
		}
		fail = false
		// The engine retries with the same set, and has the VIPs read
		// again (Resync): the failed clean-up is done then.
		_, err = r2.Resync(ctx, desired)
		must(t, err)
		if got := w["kglb0"].String(); strings.Contains(got, "proto kglb") {
			t.Errorf("kglb0 after the retry still has kglb's routes:\n%s", got)
		}
	})
}

// TestUnusableAddress: an IPv6 address that is on the link but tentative or
// DAD-failed (an operator's `ip addr add` without nodad on a link that runs
// duplicate address detection) holds nothing, so a VIP it is for is not
// reported held, and so not announced. kglb does not add it again (the
// kernel would answer EEXIST), reports it as an error so that the pass is
// retried, and counts it held once detection has succeeded.
func TestUnusableAddress(t *testing.T) {
	ctx := context.Background()
	a := netip.MustParseAddr("2001:db8::1")
	p := netip.PrefixFrom(a, 128)
	for _, dup := range []bool{false, true} {
		t.Run(fmt.Sprintf("dup=%v", dup), func(t *testing.T) {
			f := vip.NewFake("eth1")
			must(t, f.AddTentative(p))
			r, err := vip.New(vip.Options{Kernel: f, Mode: vip.ModeAddress, StateDir: t.TempDir()})
			must(t, err)
			w0 := f.Writes
			res, err := r.Apply(ctx, []netip.Addr{a})
			if err == nil || !strings.Contains(err.Error(), "tentative") {
				t.Errorf("Apply over a tentative address: err %v, want one saying it is tentative", err)
			}
			if res.Holds(a) || !slices.Equal(res.Unusable, []netip.Addr{a}) {
				t.Errorf("tentative: %+v; want not held, listed unusable", res)
			}
			if f.Writes != w0 || res.Writes != 0 {
				t.Errorf("kglb wrote %d times over an address that exists", f.Writes-w0)
			}
			// Until the engine retries the pass (a Resync), its health
			// passes take the cache: one dump for any number of them,
			// each reporting the error again.
			d0 := f.Dumps
			for range 3 {
				res, err = r.Apply(ctx, []netip.Addr{a})
				if err == nil || !strings.Contains(err.Error(), "tentative") || !slices.Equal(res.Unusable, []netip.Addr{a}) {
					t.Errorf("Apply again over a tentative address: %+v, %v; want it unusable and an error saying so", res, err)
				}
			}
			if f.Dumps != d0 {
				t.Errorf("3 Applies over a lasting unusable address listed the link %d times, want 0 (the cache)", f.Dumps-d0)
			}
			// kglb plan says what every pass says.
			if _, _, err := r.Plan(ctx, []netip.Addr{a}); err == nil || !strings.Contains(err.Error(), "tentative") {
				t.Errorf("Plan over a tentative address: %v, want the error every Apply returns", err)
			}
			must(t, f.EndDAD(p, dup))
			res, err = r.Resync(ctx, []netip.Addr{a})
			if dup {
				if err == nil || !strings.Contains(err.Error(), "failed duplicate address detection") || res.Holds(a) {
					t.Errorf("DAD failed: %+v, %v; want not held and an error saying so", res, err)
				}
				return
			}
			if err != nil || !res.Holds(a) || !slices.Equal(res.Foreign, []netip.Addr{a}) {
				t.Errorf("DAD done: %+v, %v; want held (the operator's)", res, err)
			}
		})
	}
	t.Run("route mode", func(t *testing.T) {
		// A tentative address has no local route yet: route mode adds
		// kglb's own, and the VIP is held at once.
		f := vip.NewFake("eth1")
		must(t, f.AddTentative(p))
		r, err := vip.New(vip.Options{Kernel: f})
		must(t, err)
		res, err := r.Apply(ctx, []netip.Addr{a})
		if err != nil || !slices.Equal(res.Held, []netip.Addr{a}) {
			t.Errorf("route mode over a tentative address: %+v, %v; want kglb's route added", res, err)
		}
	})
}

// TestSweepThenReadFailure: a pass whose read of the link fails reports
// what the last read saw, less what the pass removed since. An address kglb
// added in address mode, held as foreign by route mode while its removal
// failed, is not held once the clean-up has removed it, even when the
// read after the clean-up fails: reporting it held would have the engine
// announce a VIP that nothing on the host accepts.
func TestSweepThenReadFailure(t *testing.T) {
	ctx := context.Background()
	a := netip.MustParseAddr("198.51.100.10")
	dir := t.TempDir()
	f := vip.NewFake("")
	r1, err := vip.New(vip.Options{Kernel: f, Mode: vip.ModeAddress, StateDir: dir})
	must(t, err)
	_, err = r1.Apply(ctx, []netip.Addr{a})
	must(t, err)

	// Route mode now: the address's removal fails at first, so its local
	// route is what holds the VIP, as a foreign entry.
	f.Fail = func(op string, m vip.Mode, e vip.Entry) error {
		if op == vip.OpDel && m == vip.ModeAddress {
			return unix.EPERM
		}
		return nil
	}
	k := &flakyList{Fake: f}
	r2, err := vip.New(vip.Options{Kernel: k, Mode: vip.ModeRoute, StateDir: dir})
	must(t, err)
	res, err := r2.Apply(ctx, []netip.Addr{a})
	if !errors.Is(err, unix.EPERM) || !res.Holds(a) {
		t.Fatalf("failed clean-up: %+v, %v; want EPERM, and the VIP held by the address still there", res, err)
	}

	// The next pass removes the address, and its read fails.
	f.Fail = nil
	k.fail = errors.New("dump interrupted")
	res, err = r2.Resync(ctx, []netip.Addr{a})
	if err == nil {
		t.Fatal("Resync with a failed read: no error")
	}
	if strings.Contains(f.String(), "198.51.100.10") {
		t.Fatalf("the clean-up did not remove the address:\n%s", f)
	}
	if res.Holds(a) {
		t.Errorf("Holds(%s) = true after the clean-up removed its only entry:\n%s", a, f)
	}
}

// TestChangeToMissingLink: a start on a link that does not exist (a
// vip_interface not yet up, or mistyped) removes nothing kglb left on its
// old link: the clean-up waits until the new link can hold the VIPs, as
// Apply adds before it deletes, so the old entries keep serving meanwhile.
func TestChangeToMissingLink(t *testing.T) {
	ctx := context.Background()
	desired := addrs("198.51.100.10", "2001:db8::10")
	for _, from := range []vip.Mode{vip.ModeRoute, vip.ModeAddress} {
		t.Run(string(from), func(t *testing.T) {
			dir := t.TempDir()
			f := vip.NewFake("")
			r1, err := vip.New(vip.Options{Kernel: f, Mode: from, StateDir: dir})
			must(t, err)
			_, err = r1.Apply(ctx, desired)
			must(t, err)
			before := f.String()

			eth9 := f.On("eth9")
			eth9.DeleteLink()
			r2, err := vip.New(vip.Options{Kernel: eth9, Mode: from, StateDir: dir})
			must(t, err)
			if _, err := r2.Apply(ctx, desired); !errors.Is(err, unix.ENODEV) {
				t.Fatalf("Apply on a missing link: %v, want ENODEV", err)
			}
			if got := f.String(); got != before {
				t.Errorf("kglb0 after a start on a missing link:\n%s\nwant it as it was:\n%s", got, before)
			}
		})
	}
}

// TestChangeWaitsForTheRecord: a start in address mode that must first
// remove kglb's old routes (vip_mode was "route") removes nothing while the
// ownership record cannot be written: it could add no address, and every
// VIP would be down until the state directory is fixed. The old routes
// hold the VIPs meanwhile; once the record can be written, the next pass
// moves them.
func TestChangeWaitsForTheRecord(t *testing.T) {
	ctx := context.Background()
	desired := addrs("198.51.100.10", "2001:db8::10")
	dir := t.TempDir()
	f := vip.NewFake("")
	r1, err := vip.New(vip.Options{Kernel: f, Mode: vip.ModeRoute, StateDir: dir})
	must(t, err)
	_, err = r1.Apply(ctx, desired)
	must(t, err)
	before := f.String()
	if !strings.Contains(before, "proto kglb") {
		t.Fatalf("kglb's routes as the fake shows them:\n%s", before)
	}

	r2, err := vip.New(vip.Options{Kernel: f, Mode: vip.ModeAddress, StateDir: dir})
	must(t, err)
	record := filepath.Join(dir, "vip-addresses")
	must(t, os.MkdirAll(filepath.Join(record, "x"), 0o700)) // the rename over it fails, root or not
	if _, err := r2.Apply(ctx, desired); err == nil || !strings.Contains(err.Error(), "waits for the ownership record") {
		t.Errorf("Apply with the record blocked: %v, want the clean-up to wait for it", err)
	}
	if got := f.String(); got != before {
		t.Errorf("kernel with the record blocked:\n%s\nwant it as it was:\n%s", got, before)
	}
	must(t, os.RemoveAll(record))
	res, err := r2.Apply(ctx, desired)
	if err != nil || len(res.Held) != 2 || strings.Contains(f.String(), "proto kglb") {
		t.Errorf("Apply once the record can be written: %+v, %v\n%s", res, err, f)
	}
}
