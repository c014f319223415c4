//go:build vmtest

package vip

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/kglb/kglb/internal/nstest"
)

// TestVMPlanEqualsApply is TestPlanEqualsApply on the real kernel's kglb0,
// in both modes, IPv4 and IPv6: the writes Plan records are those the
// following Apply issues, and Plan leaves the link as it was.
func TestVMPlanEqualsApply(t *testing.T) {
	for _, mode := range []Mode{ModeRoute, ModeAddress} {
		t.Run(string(mode), func(t *testing.T) {
			ns := nstest.New(t)
			k, err := NewNetlink(NetlinkOptions{NetNS: ns.Path})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { k.Close() })
			// Before kglb0 exists: the plan adds, and creates nothing.
			fresh, err := New(Options{Kernel: k, Mode: mode, StateDir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			pw, _, err := fresh.Plan(context.Background(), []netip.Addr{netip.MustParseAddr("198.51.100.9")})
			if err != nil || len(pw) != 1 || pw[0].Op != "add" {
				t.Fatalf("plan before the link exists: %v, %v", pw, err)
			}
			if found, err := k.LookupLink(); found || err != nil {
				t.Fatalf("the plan created kglb0 (%v)", err)
			}
			live := &recorder{read: k}
			r, err := New(Options{Kernel: live, Mode: mode, StateDir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := r.Apply(context.Background(), nil); err != nil { // creates kglb0
				t.Fatal(err)
			}
			list := func() string {
				es, err := k.List(mode)
				if err != nil {
					t.Fatal(err)
				}
				return fmt.Sprint(es)
			}
			rng := rand.New(rand.NewPCG(3, 4))
			total := 0
			for step := range 20 {
				var want []netip.Addr
				for i := range 6 {
					if rng.IntN(2) == 0 {
						want = append(want, netip.AddrFrom4([4]byte{198, 51, 100, byte(1 + i)}))
					}
					if rng.IntN(2) == 0 {
						want = append(want, netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(1 + i)}))
					}
				}
				before := list()
				pw, pres, perr := r.Plan(context.Background(), want)
				if after := list(); after != before {
					t.Fatalf("step %d: plan changed the link: %s, was %s", step, after, before)
				}
				live.writes = nil
				res, aerr := r.Apply(context.Background(), want)
				if perr != nil || aerr != nil {
					t.Fatalf("step %d: plan error %v, apply error %v", step, perr, aerr)
				}
				if d := cmp.Diff(live.writes, pw, equateAddrs); d != "" {
					t.Fatalf("step %d: writes (-apply +plan):\n%s", step, d)
				}
				if d := cmp.Diff(res, pres, equateAddrs); d != "" {
					t.Fatalf("step %d: result (-apply +plan):\n%s", step, d)
				}
				total += len(pw)
			}
			t.Logf("%s: 20 edits, %d writes planned and applied alike", mode, total)
		})
	}
}
