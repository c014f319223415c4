package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strconv"

	api "github.com/osrg/gobgp/v3/api"
)

// Per-neighbor export. GoBGP keeps one RIB for every peer, but what each
// router must get differs: AS-path prepends only go to eBGP neighbors (an
// iBGP neighbor would see its own AS and drop the path as a loop), LOCAL_PREF
// only to iBGP ones (GoBGP strips it towards eBGP itself), and a neighbor
// that carries the other address family than its session gets a next hop
// of that family. The speaker expresses the first and the last as one
// GoBGP export policy, rebuilt whenever what it depends on changes:
//
//   - A route's prepend travels in the RIB as a marker, the large community
//     ASN:prependMarker:k. For each k in use a statement prepends the local
//     AS k times towards the eBGP neighbor set; a last statement removes
//     every marker, towards every neighbor, so no router ever sees one.
//     Because the marker is an attribute of the RIB path, a prepend that
//     changes is a changed path, and GoBGP sends it at once to every peer
//     (re-adding an identical path would send nothing).
//   - For each neighbor that carries IPv6 over an IPv4 session (or the
//     reverse) a statement replaces the next hop GoBGP would send, the
//     session's address of the other family (an IPv4-mapped IPv6 address,
//     which routers accept and cannot forward to), with the address of the
//     right family that the host has on the link towards that neighbor.
//     Explicit next hops of routes are left alone.

// prependMarker is the middle part of the marker large community: "kglb".
const prependMarker = 0x6b676c62

// exportPolicy is the name of the policy; it is assigned to the global RIB
// for export with the default action accept.
const exportPolicy = "kglb-export"

// exportView is what the export policy depends on. The speaker keeps the
// one it last gave GoBGP and rebuilds the policy only when it changes.
type exportView struct {
	asn      uint32
	ebgp     []netip.Addr // eBGP neighbors, sorted
	prepends []int        // prepend counts in use, sorted
	nextHops []nextHopRule
}

// nextHopRule: towards peer, routes of family get nextHop instead of
// GoBGP's session address of the other family; with no nextHop (the host
// has no such address on that link) they are not sent.
type nextHopRule struct {
	peer    netip.Addr
	family  Family
	nextHop netip.Addr
}

func (v exportView) equal(w exportView) bool {
	return v.asn == w.asn && slices.Equal(v.ebgp, w.ebgp) && slices.Equal(v.prepends, w.prepends) &&
		slices.Equal(v.nextHops, w.nextHops)
}

// markerOf is the large community that carries a prepend of k in the RIB.
func markerOf(asn uint32, k int) LargeCommunity {
	return LargeCommunity{GlobalAdmin: asn, LocalData1: prependMarker, LocalData2: uint32(k)}
}

// policy is the GoBGP form of the view.
func (v exportView) policy() *api.SetPoliciesRequest {
	req := &api.SetPoliciesRequest{}
	pol := &api.Policy{Name: exportPolicy}
	markerRE := "^" + strconv.FormatUint(uint64(v.asn), 10) + ":" + strconv.Itoa(prependMarker) + ":"
	// GoBGP matches every neighbor with an empty neighbor set, so the
	// prepend statements exist only while an eBGP neighbor does.
	if len(v.ebgp) > 0 && len(v.prepends) > 0 {
		ebgp := &api.DefinedSet{DefinedType: api.DefinedType_NEIGHBOR, Name: "kglb-ebgp"}
		for _, a := range v.ebgp {
			ebgp.List = append(ebgp.List, netip.PrefixFrom(a, a.BitLen()).String())
		}
		req.DefinedSets = append(req.DefinedSets, ebgp)
		for _, k := range v.prepends {
			set := fmt.Sprintf("kglb-prepend-%d", k)
			req.DefinedSets = append(req.DefinedSets, &api.DefinedSet{DefinedType: api.DefinedType_LARGE_COMMUNITY, Name: set,
				List: []string{markerRE + strconv.Itoa(k) + "$"}})
			pol.Statements = append(pol.Statements, &api.Statement{
				Name: set,
				Conditions: &api.Conditions{
					LargeCommunitySet: &api.MatchSet{Type: api.MatchSet_ANY, Name: set},
					NeighborSet:       &api.MatchSet{Type: api.MatchSet_ANY, Name: "kglb-ebgp"},
				},
				Actions: &api.Actions{AsPrepend: &api.AsPrependAction{Asn: v.asn, Repeat: uint32(k)}},
			})
		}
	}
	if len(v.prepends) > 0 {
		req.DefinedSets = append(req.DefinedSets, &api.DefinedSet{DefinedType: api.DefinedType_LARGE_COMMUNITY, Name: "kglb-markers",
			List: []string{markerRE + "[0-9]+$"}})
		pol.Statements = append(pol.Statements, &api.Statement{
			Name:       "kglb-strip-markers",
			Conditions: &api.Conditions{LargeCommunitySet: &api.MatchSet{Type: api.MatchSet_ANY, Name: "kglb-markers"}},
			Actions: &api.Actions{LargeCommunity: &api.CommunityAction{Type: api.CommunityAction_REMOVE,
				Communities: []string{markerRE + "[0-9]+$"}}},
		})
	}
	for i, r := range v.nextHops {
		set := fmt.Sprintf("kglb-nexthop-%d", i)
		req.DefinedSets = append(req.DefinedSets, &api.DefinedSet{DefinedType: api.DefinedType_NEIGHBOR, Name: set,
			List: []string{netip.PrefixFrom(r.peer, r.peer.BitLen()).String()}})
		// GoBGP has already set the session's own address as the next hop;
		// it is of the other family than the route (IPv4-mapped for an
		// IPv6 route). A next hop the route set itself is of the route's
		// family and does not match.
		other := "0.0.0.0/0"
		if r.family == IPv4Unicast {
			other = "::/0"
		}
		pol.Statements = append(pol.Statements, &api.Statement{
			Name: set,
			Conditions: &api.Conditions{
				NeighborSet:   &api.MatchSet{Type: api.MatchSet_ANY, Name: set},
				AfiSafiIn:     []*api.Family{apiFamily(r.family)},
				NextHopInList: []string{other},
			},
			Actions: &api.Actions{Nexthop: &api.NexthopAction{Address: r.nextHop.String()}},
		})
		if !r.nextHop.IsValid() {
			// No address to derive: such routes are not sent at all.
			st := pol.Statements[len(pol.Statements)-1]
			st.Actions = &api.Actions{RouteAction: api.RouteAction_REJECT}
		}
	}
	if len(pol.Statements) == 0 {
		// The policy stays assigned (SetPolicies keeps assignments by
		// name), so it always exists; this statement changes nothing.
		pol.Statements = []*api.Statement{{Name: "kglb-nothing", Actions: &api.Actions{}}}
	}
	req.Policies = []*api.Policy{pol}
	return req
}

// syncExport gives GoBGP the export policy for v unless it already has it.
// Called with mu held.
func (s *Speaker) syncExport(ctx context.Context, v exportView) error {
	if s.exportSet && v.equal(s.export) {
		return nil
	}
	if err := s.srv.SetPolicies(ctx, v.policy()); err != nil {
		return fmt.Errorf("set export policy: %w", err)
	}
	if !s.exportSet {
		// SetPolicies ignores assignments: assign once, by name.
		err := s.srv.AddPolicyAssignment(ctx, &api.AddPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
			Name: "global", Direction: api.PolicyDirection_EXPORT,
			Policies: []*api.Policy{{Name: exportPolicy}}, DefaultAction: api.RouteAction_ACCEPT}})
		if err != nil {
			return fmt.Errorf("assign export policy: %w", err)
		}
	}
	s.export, s.exportSet = v, true
	s.log.Debug("export policy set", "ebgp_neighbors", len(v.ebgp), "prepends", fmt.Sprint(v.prepends), "next_hop_rules", len(v.nextHops))
	return nil
}

// withPrepends returns the current view with the prepend counts used by
// routes. Called with mu held.
func (s *Speaker) withPrepends(routes map[netip.Prefix]Route) exportView {
	v := s.export
	v.asn = s.global.asn
	var ks []int
	for _, r := range routes {
		if r.Prepend > 0 && !slices.Contains(ks, r.Prepend) {
			ks = append(ks, r.Prepend)
		}
	}
	slices.Sort(ks)
	v.prepends = ks
	return v
}

// sessionFamily names the family of a session's address.
func sessionFamily(a netip.Addr) string {
	if a.Is4() {
		return "IPv4"
	}
	return "IPv6"
}
