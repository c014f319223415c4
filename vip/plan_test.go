package vip

import (
	"context"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"golang.org/x/sys/unix"
)

// equateAddrs lets cmp compare netip values (their fields are unexported).
var equateAddrs = cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})

// TestPlanEqualsApply: for random desired sets, in both modes and with an
// operator's entries on the link, the writes Plan records are those the
// following Apply issues, and Plan changes neither link nor record.
func TestPlanEqualsApply(t *testing.T) {
	for _, mode := range []Mode{ModeRoute, ModeAddress} {
		for seed := uint64(1); seed <= 10; seed++ {
			rng := rand.New(rand.NewPCG(seed, 0))
			f := NewFake("")
			if _, err := f.EnsureLink(); err != nil {
				t.Fatal(err)
			}
			if err := write1(f, ModeRoute, OpAdd, Entry{Prefix: netip.MustParsePrefix("198.51.100.3/32"), Proto: unix.RTPROT_STATIC}); err != nil {
				t.Fatal(err)
			}
			if err := write1(f, ModeAddress, OpAdd, Entry{Prefix: netip.MustParsePrefix("198.51.100.4/32")}); err != nil {
				t.Fatal(err)
			}
			live := &recorder{read: f}
			dir := t.TempDir()
			r, err := New(Options{Kernel: live, Mode: mode, StateDir: dir})
			if err != nil {
				t.Fatal(err)
			}
			for step := range 40 {
				var want []netip.Addr
				for i := range 8 {
					if rng.IntN(2) == 0 {
						want = append(want, netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}))
					}
				}
				if rng.IntN(5) == 0 { // drift: someone removes an entry
					_ = write1(f, mode, OpDel, Entry{Prefix: netip.MustParsePrefix("198.51.100.1/32"), Proto: ProtoKGLB * boolByte(mode == ModeRoute)})
				}
				kernel := f.String()
				record, _ := os.ReadFile(filepath.Join(dir, stateFile))
				pw, pres, perr := r.Plan(context.Background(), want)
				if f.String() != kernel {
					t.Fatalf("%s seed %d step %d: plan wrote to the link", mode, seed, step)
				}
				if after, _ := os.ReadFile(filepath.Join(dir, stateFile)); string(after) != string(record) {
					t.Fatalf("%s seed %d step %d: plan wrote the record", mode, seed, step)
				}
				live.writes = nil
				res, aerr := r.Apply(context.Background(), want)
				if (perr == nil) != (aerr == nil) {
					t.Fatalf("%s seed %d step %d: plan error %v, apply error %v", mode, seed, step, perr, aerr)
				}
				if d := cmp.Diff(live.writes, pw, equateAddrs); d != "" {
					t.Fatalf("%s seed %d step %d: writes (-apply +plan):\n%s", mode, seed, step, d)
				}
				if d := cmp.Diff(res, pres, equateAddrs); d != "" {
					t.Fatalf("%s seed %d step %d: result (-apply +plan):\n%s", mode, seed, step, d)
				}
			}
		}
	}
}

// recorder is a Kernel that passes every call to read and records the
// writes, to compare with what Plan returns.
type recorder struct {
	read   Kernel
	writes []Write
}

func (k *recorder) Link() string                               { return k.read.Link() }
func (k *recorder) EnsureLink() (bool, error)                  { return k.read.EnsureLink() }
func (k *recorder) List(m Mode) ([]Entry, error)               { return k.read.List(m) }
func (k *recorder) ListProto(proto uint8) ([]LinkEntry, error) { return k.read.ListProto(proto) }
func (k *recorder) WriteOn(link string, m Mode, ws []Change) []error {
	return k.read.WriteOn(link, m, ws)
}
func (k *recorder) Write(m Mode, ws []Change) []error {
	for _, w := range ws {
		k.writes = append(k.writes, Write{Op: w.Op, VIP: w.Entry.Prefix.Addr()})
	}
	return k.read.Write(m, ws)
}

// write1 is one write of op on k.
func write1(k Kernel, m Mode, op string, e Entry) error {
	return k.Write(m, []Change{{Op: op, Entry: e}})[0]
}

func boolByte(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

// TestPlanWrites: the pure planner, from a listing, without a kernel: adds
// then deletes in address order, foreign entries and wide routes left alone,
// and in address mode only what the record owns is kglb's.
func TestPlanWrites(t *testing.T) {
	a := netip.MustParseAddr
	set := func(as ...string) map[netip.Addr]bool {
		m := map[netip.Addr]bool{}
		for _, s := range as {
			m[a(s)] = true
		}
		return m
	}
	entry := func(p string, proto uint8) Entry { return Entry{Prefix: netip.MustParsePrefix(p), Proto: proto} }
	tests := []struct {
		name    string
		mode    Mode
		owned   map[netip.Addr]bool
		want    map[netip.Addr]bool
		entries []Entry
		writes  []Write
		foreign []netip.Addr
	}{
		{name: "empty link", mode: ModeRoute, want: set("2001:db8::1", "192.0.2.2", "192.0.2.1"),
			writes: []Write{{OpAdd, a("192.0.2.1")}, {OpAdd, a("192.0.2.2")}, {OpAdd, a("2001:db8::1")}}},
		{name: "route mode", mode: ModeRoute, want: set("192.0.2.1", "192.0.2.3", "198.51.100.7"),
			entries: []Entry{
				entry("192.0.2.1/32", ProtoKGLB),        // kept
				entry("192.0.2.2/32", ProtoKGLB),        // deleted
				entry("192.0.2.3/32", unix.RTPROT_BOOT), // foreign
				entry("198.51.100.0/24", ProtoKGLB),     // a wide route: not a VIP
				entry("192.0.2.9/32", unix.RTPROT_BOOT), // foreign, not desired: left alone
			},
			writes:  []Write{{OpAdd, a("198.51.100.7")}, {OpDel, a("192.0.2.2")}},
			foreign: []netip.Addr{a("192.0.2.3")}},
		{name: "address mode", mode: ModeAddress, owned: set("192.0.2.1", "192.0.2.2"), want: set("192.0.2.3"),
			entries: []Entry{entry("192.0.2.1/32", 0), entry("192.0.2.3/32", 0), entry("192.0.2.4/32", 0)},
			writes:  []Write{{OpDel, a("192.0.2.1")}},
			foreign: []netip.Addr{a("192.0.2.3")}},
	}
	for _, tt := range tests {
		p := planWrites(tt.mode, tt.owned, tt.want, tt.entries)
		if d := cmp.Diff(tt.writes, p.writes, equateAddrs); d != "" {
			t.Errorf("%s: writes (-want +got):\n%s", tt.name, d)
		}
		if d := cmp.Diff(tt.foreign, p.foreign, equateAddrs); d != "" {
			t.Errorf("%s: foreign (-want +got):\n%s", tt.name, d)
		}
	}
}

// TestVIPSample: the "vips applied" line names the first few VIPs added
// and removed, and counts the rest.
func TestVIPSample(t *testing.T) {
	a := func(n int) []netip.Addr {
		var out []netip.Addr
		for i := range n {
			out = append(out, netip.AddrFrom4([4]byte{198, 51, 100, byte(i + 1)}))
		}
		return out
	}
	tests := []struct {
		name           string
		added, removed []netip.Addr
		want           string
	}{
		{"one added", a(1), nil, "+198.51.100.1"},
		{"one removed", nil, a(1), "-198.51.100.1"},
		{"both", a(2), a(1), "+198.51.100.1 +198.51.100.2 -198.51.100.1"},
		{"many", a(1000), nil, "+198.51.100.1 +198.51.100.2 +198.51.100.3 +198.51.100.4 (+996 more)"},
	}
	for _, tt := range tests {
		if got := vipSample(tt.added, tt.removed); got != tt.want {
			t.Errorf("%s: vipSample = %q, want %q", tt.name, got, tt.want)
		}
	}
}
