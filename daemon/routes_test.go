package daemon

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/kglb/kglb/bgp"
	"github.com/kglb/kglb/config"
	"github.com/kglb/kglb/lb"
)

// TestBGPRoutes: the engine's routes reach the speaker with every
// attribute, each route with its own communities, and the engine's every
// pass costs three allocations however many routes it carries.
func TestBGPRoutes(t *testing.T) {
	in := []lb.Route{
		{Prefix: netip.MustParsePrefix("192.0.2.1/32"), NextHop: netip.MustParseAddr("10.0.0.1"), MED: 5, HasMED: true,
			LocalPref: 200, Prepend: 2, Communities: []config.Community{1, 2},
			LargeCommunities: []config.LargeCommunity{{Global: 65000, Local1: 1, Local2: 2}}},
		{Prefix: netip.MustParsePrefix("192.0.2.2/32")},
		{Prefix: netip.MustParsePrefix("192.0.2.3/32"), Communities: []config.Community{3}},
		// local_pref = 0: the least preferred, not unset.
		{Prefix: netip.MustParsePrefix("192.0.2.4/32"), LocalPref: 0, HasLocalPref: true},
	}
	want := []bgp.Route{
		{Prefix: netip.MustParsePrefix("192.0.2.1/32"), NextHop: netip.MustParseAddr("10.0.0.1"), MED: 5, HasMED: true,
			LocalPref: 200, Prepend: 2, Communities: []bgp.Community{1, 2},
			LargeCommunities: []bgp.LargeCommunity{{GlobalAdmin: 65000, LocalData1: 1, LocalData2: 2}}},
		{Prefix: netip.MustParsePrefix("192.0.2.2/32")},
		{Prefix: netip.MustParsePrefix("192.0.2.3/32"), Communities: []bgp.Community{3}},
		{Prefix: netip.MustParsePrefix("192.0.2.4/32"), LocalPref: 0, HasLocalPref: true},
	}
	got := bgpRoutes(in)
	if d := cmp.Diff(want, got, equateAddrs); d != "" {
		t.Fatalf("bgpRoutes (-want +got):\n%s", d)
	}
	// A route's communities do not reach into the next route's.
	if c := got[0].Communities; cap(c) != len(c) {
		t.Errorf("first route's communities have capacity %d beyond their %d", cap(c), len(c))
	}

	many := make([]lb.Route, 1000)
	for i := range many {
		many[i] = lb.Route{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), 32),
			Communities: []config.Community{config.Community(i)}, LargeCommunities: []config.LargeCommunity{{Global: 1}}}
	}
	if n := testing.AllocsPerRun(10, func() { bgpRoutes(many) }); n > 3 {
		t.Errorf("bgpRoutes of 1,000 routes: %v allocations, want 3", n)
	}
}
