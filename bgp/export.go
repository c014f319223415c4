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

// importPolicy is the policy assigned to the global RIB for import: it
// refuses every route a peer sends. kglb announces and never learns; by
// default GoBGP would take a router's routes into its RIB and send them on
// to every other router (kglb a transit between its ToRs), and a VIP kglb
// withdrew would go on being announced through it with the path a router
// sent it. Its one statement matches any neighbor; kglb's own paths have
// none, so they pass with the default action accept. GoBGP applies import
// policy to those too, which is why the default cannot be reject.
const importPolicy = "kglb-import"

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
	req.DefinedSets = append(req.DefinedSets, &api.DefinedSet{DefinedType: api.DefinedType_NEIGHBOR, Name: "kglb-peers",
		List: []string{"0.0.0.0/0", "::/0"}})
	// SetPolicies replaces every policy, so the import policy is part of
	// each request.
	req.Policies = []*api.Policy{pol, {Name: importPolicy, Statements: []*api.Statement{{
		Name:       "kglb-refuse-peer-routes",
		Conditions: &api.Conditions{NeighborSet: &api.MatchSet{Type: api.MatchSet_ANY, Name: "kglb-peers"}},
		Actions:    &api.Actions{RouteAction: api.RouteAction_REJECT},
	}}}}
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
		// SetPolicies ignores assignments: assign once, by name. The
		// import policy first, and by replacing, so that a retry after a
		// failure below assigns each once.
		err := s.srv.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
			Name: "global", Direction: api.PolicyDirection_IMPORT,
			Policies: []*api.Policy{{Name: importPolicy}}, DefaultAction: api.RouteAction_ACCEPT}})
		if err != nil {
			return fmt.Errorf("assign import policy: %w", err)
		}
		err = s.srv.AddPolicyAssignment(ctx, &api.AddPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
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
	x := exporting{peer: p.addr, family: IPv4Unicast, nextHop: r.NextHop, self: !r.NextHop.IsValid(),
		large: slices.Clone(r.LargeCommunities)}
	if r.Prefix.Addr().Is6() {
		x.family = IPv6Unicast
	}
	if r.Prepend > 0 {
		x.large = append(x.large, markerOf(asn, r.Prepend))
	}
	sets := map[string]*api.DefinedSet{}
	for _, ds := range pol.DefinedSets {
		sets[ds.Name] = ds
	}
	for _, pl := range pol.Policies {
		if pl.Name != exportPolicy {
			continue // the import policy (importPolicy)
		}
		for _, st := range pl.Statements {
			// Every statement is read, matching or not: one the plan
			// cannot follow fails every plan, not only those it would
			// apply to.
			if err := readable(st); err != nil {
				return sent{}, false, err
			}
			match, err := x.matches(st, sets)
			if err != nil {
				return sent{}, false, err
			}
			if !match || st.Actions == nil {
				continue
			}
			switch verdict, err := x.act(st.Name, st.Actions); {
			case err != nil:
				return sent{}, false, err
			case verdict == api.RouteAction_REJECT:
				return sent{}, false, nil
			case verdict == api.RouteAction_ACCEPT:
				return x.received(asn, p.ebgp, r), true, nil
			}
		}
	}
	return x.received(asn, p.ebgp, r), true, nil
}

// exporting is a route on its way to one neighbor through the export
// policy, as the policy's statements see and change it.
type exporting struct {
	peer    netip.Addr // the neighbor's session address
	family  Family
	nextHop netip.Addr
	// self: no next hop of its own; GoBGP has already put the session's
	// local address in its place, of the session's family.
	self    bool
	large   []LargeCommunity // the markers included
	prepend int              // AS-path prepends the statements added
}

// readable is an error when statement st has a condition or an action the
// plan cannot follow.
func readable(st *api.Statement) error {
	if a := st.Actions; a != nil {
		rest := proto.Clone(a).(*api.Actions)
		rest.AsPrepend, rest.LargeCommunity, rest.Nexthop, rest.RouteAction = nil, nil, nil, api.RouteAction_NONE
		if proto.Size(rest) != 0 {
			return fmt.Errorf("export statement %s: an action the plan cannot read: %v", st.Name, rest)
		}
	}
	if c := st.Conditions; c != nil {
		rest := proto.Clone(c).(*api.Conditions)
		rest.NeighborSet, rest.LargeCommunitySet, rest.AfiSafiIn, rest.NextHopInList = nil, nil, nil, nil
		if proto.Size(rest) != 0 {
			return fmt.Errorf("export statement %s: a condition the plan cannot read: %v", st.Name, rest)
		}
	}
	return nil
}

// matches reports whether every condition of statement st holds for x;
// sets are the policy's defined sets by name.
func (x *exporting) matches(st *api.Statement, sets map[string]*api.DefinedSet) (bool, error) {
	c := st.Conditions
	if c == nil {
		return true, nil
	}
	if c.NeighborSet != nil {
		ok, err := inSet(sets, c.NeighborSet.Name, func(e string) (bool, error) {
			pf, err := netip.ParsePrefix(e)
			return err == nil && pf.Contains(x.peer), err
		})
		if err != nil || ok == (c.NeighborSet.Type == api.MatchSet_INVERT) {
			return false, err
		}
	}
	if c.LargeCommunitySet != nil {
		if c.LargeCommunitySet.Type != api.MatchSet_ANY {
			return false, fmt.Errorf("export statement %s: large community match %v", st.Name, c.LargeCommunitySet.Type)
		}
		if ok, err := inSet(sets, c.LargeCommunitySet.Name, x.hasLarge); err != nil || !ok {
			return false, err
		}
	}
	if len(c.AfiSafiIn) > 0 && !slices.ContainsFunc(c.AfiSafiIn, func(f *api.Family) bool { return proto.Equal(f, apiFamily(x.family)) }) {
		return false, nil
	}
	if len(c.NextHopInList) > 0 {
		return x.nextHopIn(st.Name, c.NextHopInList)
	}
	return true, nil
}

// inSet reports whether an entry of the defined set name matches.
func inSet(sets map[string]*api.DefinedSet, name string, match func(string) (bool, error)) (bool, error) {
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

// hasLarge reports whether a large community of x matches the regular
// expression re.
func (x *exporting) hasLarge(re string) (bool, error) {
	m, err := regexp.Compile(re)
	if err != nil {
		return false, err
	}
	for _, c := range x.large {
		if m.MatchString(c.String()) {
			return true, nil
		}
	}
	return false, nil
}

// nextHopIn reports whether x's next hop is in one of the prefixes of
// list (the condition of statement name).
func (x *exporting) nextHopIn(name string, list []string) (bool, error) {
	hit := false
	for _, e := range list {
		pf, err := netip.ParsePrefix(e)
		if err != nil {
			return false, fmt.Errorf("export statement %s: next hop %q: %w", name, e, err)
		}
		if x.self {
			// Only the session's address of either family is known
			// here, not its value.
			if pf.Bits() != 0 {
				return false, fmt.Errorf("export statement %s: next hop %s needs the session's address", name, e)
			}
			hit = hit || pf.Addr().Is4() == x.peer.Is4()
		} else {
			hit = hit || pf.Contains(x.nextHop)
		}
	}
	return hit, nil
}

// act applies the actions a of statement name to x and returns its route
// action: REJECT (not sent), ACCEPT (sent, no later statement runs) or
// NONE (the next statement runs).
func (x *exporting) act(name string, a *api.Actions) (api.RouteAction, error) {
	if a.AsPrepend != nil {
		x.prepend += int(a.AsPrepend.Repeat)
	}
	if lc := a.LargeCommunity; lc != nil {
		if lc.Type != api.CommunityAction_REMOVE {
			return 0, fmt.Errorf("export statement %s: large community action %v", name, lc.Type)
		}
		for _, re := range lc.Communities {
			m, err := regexp.Compile(re)
			if err != nil {
				return 0, err
			}
			x.large = slices.DeleteFunc(x.large, func(c LargeCommunity) bool { return m.MatchString(c.String()) })
		}
	}
	if a.Nexthop != nil {
		addr, err := netip.ParseAddr(a.Nexthop.Address)
		if err != nil {
			return 0, fmt.Errorf("export statement %s: next hop %q: %w", name, a.Nexthop.Address, err)
		}
		x.nextHop, x.self = addr, false
	}
	return a.RouteAction, nil
}

// received is r as the neighbor receives it: as x leaves the policy, then
// with what GoBGP itself does towards an eBGP or an iBGP neighbor of a
// speaker of AS asn.
func (x *exporting) received(asn uint32, ebgp bool, r Route) sent {
	var out sent
	out.nextHop = "self"
	if !x.self {
		out.nextHop = x.nextHop.String()
	}
	path := make([]string, 0, 1+x.prepend)
	if ebgp {
		path = append(path, strconv.FormatUint(uint64(asn), 10))
	} else if r.HasLocalPref {
		out.localPref = strconv.FormatUint(uint64(r.LocalPref), 10)
	} else {
		out.localPref = "100"
	}
	for range x.prepend {
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
	ls := make([]string, len(x.large))
	for i, c := range x.large {
		ls[i] = c.String()
	}
	out.largeCommunities = strings.Join(ls, " ")
	return out
}
