package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	api "github.com/osrg/gobgp/v3/api"
	"google.golang.org/protobuf/proto"
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

// peerExport is what neighbor sess adds to the export view: whether it is
// an eBGP neighbor, and a next hop rule for each family it carries that is
// not its session's (a route of that family would go out with the
// session's address: it needs an address of its own family, that the host
// has on the link towards the neighbor). errs[i] says why rules[i] has no
// next hop (its routes are then not sent). SetConfig and Plan both build
// their view with it.
func peerExport(g globalState, sess session) (ebgp bool, rules []nextHopRule, errs []error) {
	for _, f := range sess.families() {
		if (f == IPv4Unicast) == sess.address.Is4() {
			continue
		}
		nh, err := linkAddress(sess.address, sess.localAddress, f)
		// An invalid nextHop makes the rule reject the routes that
		// would go out with the session's address.
		rules = append(rules, nextHopRule{peer: sess.address, family: f, nextHop: nh})
		errs = append(errs, err)
	}
	return sess.asn != g.asn, rules, errs
}

// sort puts the view's lists in the order equal compares.
func (v *exportView) sort() {
	slices.SortFunc(v.ebgp, netip.Addr.Compare)
	slices.SortFunc(v.nextHops, func(a, b nextHopRule) int {
		if c := a.peer.Compare(b.peer); c != 0 {
			return c
		}
		return int(a.family) - int(b.family)
	})
}

// exportPeer is what the export of a route depends on for one neighbor.
type exportPeer struct {
	addr       netip.Addr
	ebgp       bool
	ipv4, ipv6 bool
}

func exportPeerOf(g globalState, sess session) exportPeer {
	return exportPeer{addr: sess.address, ebgp: sess.asn != g.asn, ipv4: sess.ipv4, ipv6: sess.ipv6}
}

// sent is a route as one neighbor receives it, each attribute written as
// the plan shows it.
type sent struct {
	nextHop, asPath, med, localPref, communities, largeCommunities string
}

// fields lists the attributes of b that differ from a's.
func (a sent) fields(b sent) []Field {
	var out []Field
	add := func(name, from, to string) {
		if from != to {
			out = append(out, Field{Name: name, From: from, To: to})
		}
	}
	add("next_hop", a.nextHop, b.nextHop)
	add("as_path", a.asPath, b.asPath)
	add("med", a.med, b.med)
	add("local_pref", a.localPref, b.localPref)
	add("communities", a.communities, b.communities)
	add("large_communities", a.largeCommunities, b.largeCommunities)
	return out
}

// sentTo is r (normalized) as neighbor p receives it from a speaker of AS
// asn whose export policy is pol (exportView.policy), and false when p is
// not sent r. It runs the statements of pol, the very policy GoBGP is
// given, in order, then what GoBGP itself does towards an eBGP or an iBGP
// neighbor (an eBGP path gets the local AS and loses LOCAL_PREF, an iBGP
// one gets LOCAL_PREF 100 unless set; a local path keeps its MED and an
// explicit next hop, an unset one becomes the session's local address).
// So the plan follows the export rules where they are written, in policy;
// a statement it cannot read is an error, not a guess
// (TestSentToReadsEveryStatement), and BIRD checks that routers get what
// it says (TestPlanAttributesBIRD).
func sentTo(pol *api.SetPoliciesRequest, asn uint32, p exportPeer, r Route) (sent, bool, error) {
	if r.Prefix.Addr().Is4() && !p.ipv4 || r.Prefix.Addr().Is6() && !p.ipv6 {
		return sent{}, false, nil
	}
	fam := IPv4Unicast
	if r.Prefix.Addr().Is6() {
		fam = IPv6Unicast
	}
	// The next hop as the policy sees it: GoBGP has already put the
	// session's local address in place of an unset one.
	nh, self := r.NextHop, !r.NextHop.IsValid()
	selfIs4 := p.addr.Is4()
	lcs := slices.Clone(r.LargeCommunities)
	if r.Prepend > 0 {
		lcs = append(lcs, markerOf(asn, r.Prepend))
	}
	sets := map[string]*api.DefinedSet{}
	for _, ds := range pol.DefinedSets {
		sets[ds.Name] = ds
	}
	inSet := func(name string, match func(string) (bool, error)) (bool, error) {
		ds := sets[name]
		if ds == nil {
			return false, fmt.Errorf("export statement names set %q, which the policy lacks", name)
		}
		for _, e := range ds.List {
			ok, err := match(e)
			if ok || err != nil {
				return ok, err
			}
		}
		return false, nil
	}
	matchLarge := func(re string) (bool, error) {
		x, err := regexp.Compile(re)
		if err != nil {
			return false, err
		}
		for _, c := range lcs {
			if x.MatchString(c.String()) {
				return true, nil
			}
		}
		return false, nil
	}
	prepend := 0
	var stmts []*api.Statement
	for _, pl := range pol.Policies {
		stmts = append(stmts, pl.Statements...)
	}
statements:
	for _, st := range stmts {
		// Every statement is read, matching or not: one the plan cannot
		// follow fails every plan, not only those it would apply to.
		if a := st.Actions; a != nil {
			rest := proto.Clone(a).(*api.Actions)
			rest.AsPrepend, rest.LargeCommunity, rest.Nexthop, rest.RouteAction = nil, nil, nil, api.RouteAction_NONE
			if proto.Size(rest) != 0 {
				return sent{}, false, fmt.Errorf("export statement %s: an action the plan cannot read: %v", st.Name, rest)
			}
		}
		if c := st.Conditions; c != nil {
			rest := proto.Clone(c).(*api.Conditions)
			rest.NeighborSet, rest.LargeCommunitySet, rest.AfiSafiIn, rest.NextHopInList = nil, nil, nil, nil
			if proto.Size(rest) != 0 {
				return sent{}, false, fmt.Errorf("export statement %s: a condition the plan cannot read: %v", st.Name, rest)
			}
			if c.NeighborSet != nil {
				ok, err := inSet(c.NeighborSet.Name, func(e string) (bool, error) {
					pf, err := netip.ParsePrefix(e)
					return err == nil && pf.Contains(p.addr), err
				})
				if err != nil {
					return sent{}, false, err
				}
				if ok == (c.NeighborSet.Type == api.MatchSet_INVERT) {
					continue
				}
			}
			if c.LargeCommunitySet != nil {
				if c.LargeCommunitySet.Type != api.MatchSet_ANY {
					return sent{}, false, fmt.Errorf("export statement %s: large community match %v", st.Name, c.LargeCommunitySet.Type)
				}
				ok, err := inSet(c.LargeCommunitySet.Name, matchLarge)
				if err != nil {
					return sent{}, false, err
				}
				if !ok {
					continue
				}
			}
			if len(c.AfiSafiIn) > 0 && !slices.ContainsFunc(c.AfiSafiIn, func(f *api.Family) bool { return proto.Equal(f, apiFamily(fam)) }) {
				continue
			}
			if len(c.NextHopInList) > 0 {
				hit := false
				for _, e := range c.NextHopInList {
					pf, err := netip.ParsePrefix(e)
					if err != nil {
						return sent{}, false, fmt.Errorf("export statement %s: next hop %q: %w", st.Name, e, err)
					}
					if self {
						// Only the session's address of either family is
						// known here, not its value.
						if pf.Bits() != 0 {
							return sent{}, false, fmt.Errorf("export statement %s: next hop %s needs the session's address", st.Name, e)
						}
						hit = hit || pf.Addr().Is4() == selfIs4
					} else {
						hit = hit || pf.Contains(nh)
					}
				}
				if !hit {
					continue
				}
			}
		}
		a := st.Actions
		if a == nil {
			continue
		}
		if a.AsPrepend != nil {
			prepend += int(a.AsPrepend.Repeat)
		}
		if lc := a.LargeCommunity; lc != nil {
			if lc.Type != api.CommunityAction_REMOVE {
				return sent{}, false, fmt.Errorf("export statement %s: large community action %v", st.Name, lc.Type)
			}
			for _, re := range lc.Communities {
				x, err := regexp.Compile(re)
				if err != nil {
					return sent{}, false, err
				}
				lcs = slices.DeleteFunc(lcs, func(c LargeCommunity) bool { return x.MatchString(c.String()) })
			}
		}
		if a.Nexthop != nil {
			addr, err := netip.ParseAddr(a.Nexthop.Address)
			if err != nil {
				return sent{}, false, fmt.Errorf("export statement %s: next hop %q: %w", st.Name, a.Nexthop.Address, err)
			}
			nh, self = addr, false
		}
		switch a.RouteAction {
		case api.RouteAction_REJECT:
			return sent{}, false, nil
		case api.RouteAction_ACCEPT:
			break statements
		}
	}

	var out sent
	out.nextHop = "self"
	if !self {
		out.nextHop = nh.String()
	}
	path := make([]string, 0, 1+prepend)
	if p.ebgp {
		path = append(path, strconv.FormatUint(uint64(asn), 10))
	} else if r.LocalPref != 0 {
		out.localPref = strconv.FormatUint(uint64(r.LocalPref), 10)
	} else {
		out.localPref = "100"
	}
	for range prepend {
		path = append(path, strconv.FormatUint(uint64(asn), 10))
	}
	out.asPath = strings.Join(path, " ")
	if r.HasMED {
		out.med = strconv.FormatUint(uint64(r.MED), 10)
	}
	cs := make([]string, len(r.Communities))
	for i, c := range r.Communities {
		cs[i] = c.String()
	}
	out.communities = strings.Join(cs, " ")
	ls := make([]string, len(lcs))
	for i, c := range lcs {
		ls[i] = c.String()
	}
	out.largeCommunities = strings.Join(ls, " ")
	return out, true, nil
}
