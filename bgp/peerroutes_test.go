package bgp

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/apiutil"
	packet "github.com/osrg/gobgp/v3/pkg/packet/bgp"
)

// originate makes the router announce prefixes of its own, next hop itself,
// to every neighbor, as a ToR that sends the servers a default route, its
// rack's routes or the same VIP learned from another load balancer does.
func (r *testRouter) originate(t testing.TB, nextHop netip.Addr, prefixes ...string) {
	t.Helper()
	for _, s := range prefixes {
		p := pfx(s)
		attrs := []packet.PathAttributeInterface{
			packet.NewPathAttributeOrigin(packet.BGP_ORIGIN_ATTR_TYPE_IGP),
			packet.NewPathAttributeNextHop(nextHop.String()),
		}
		path, err := apiutil.NewPath(prefixNLRI(p), false, attrs, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.srv.AddPath(context.Background(), &api.AddPathRequest{Path: path}); err != nil {
			t.Fatalf("router: originate %s: %v", s, err)
		}
	}
}

// TestPeerRoutesNeitherKeptNorPassedOn: kglb takes no routes from its
// peers. What a router sends it (a ToR's own routes, or a VIP that another
// load balancer behind that ToR announces) must not enter kglb's RIB, so it
// is never sent on to another router: kglb is no transit between its ToRs,
// and a VIP it withdrew is not announced again through it with the other
// node's path.
func TestPeerRoutesNeitherKeptNorPassedOn(t *testing.T) {
	r := newRig(t)
	self := r.local.String()
	r2addr := nextLoopback()
	r2 := newRouterID(t, 65002, r2addr, "10.255.255.3")
	r2.addNeighbor(t, r.local, localASN, 0, "")
	cfg := r.cfg
	cfg.Neighbors = append(slices.Clone(cfg.Neighbors),
		filled(Neighbor{Name: "tor2", Address: r2addr, ASN: 65002, Port: uint16(r2.port), LocalAddress: r.local}))
	if err := r.s.SetConfig(context.Background(), cfg); err != nil {
		t.Fatalf("SetConfig: %v", err)
	}
	r2.waitEstablished(t, r.local)

	const vip = "203.0.113.1/32"
	r.apply(t, Route{Prefix: pfx(vip)})
	r2.waitRIB(t, vip+" via "+self+" as-path [65001] origin 0")

	// tor1 sends kglb a route of its own and the VIP (announced to it by
	// another node).
	r.router.originate(t, addr("127.0.0.1"), "198.18.0.0/24", vip)
	eventually(t, "kglb to receive tor1's two routes", func() bool {
		st := r.s.Status()
		return len(st.Peers) == 2 && st.Peers[0].PrefixesReceived == 2
	})

	// The VIP goes unhealthy here: kglb withdraws it.
	r.apply(t)
	// A route of kglb's after the withdrawal: once tor2 has it, it has
	// everything kglb sent it before.
	const marker = "203.0.113.99/32"
	r.apply(t, Route{Prefix: pfx(marker)})
	r2.wait(t, "the marker route", func(rib map[netip.Prefix]gotRoute) bool { _, ok := rib[pfx(marker)]; return ok })
	if got, want := r2.ribText(), marker+" via "+self+" as-path [65001] origin 0"; got != want {
		t.Errorf("tor2 holds routes kglb learned from tor1:\n%s\nwant only\n%s", got, want)
	}

	// kglb's own RIB holds only what it announces.
	var global []string
	for _, f := range []*api.Family{apiFamily(IPv4Unicast), apiFamily(IPv6Unicast)} {
		err := r.s.srv.ListPath(context.Background(), &api.ListPathRequest{TableType: api.TableType_GLOBAL, Family: f},
			func(d *api.Destination) { global = append(global, d.GetPrefix()) })
		if err != nil {
			t.Fatal(err)
		}
	}
	slices.Sort(global)
	if want := []string{marker}; !slices.Equal(global, want) {
		t.Errorf("kglb's RIB holds %v, want %v", global, want)
	}
}
