package bgp

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"

	api "github.com/osrg/gobgp/v3/api"
)

// SessionChange is a neighbor session that SetConfig would add (+), remove
// (-) or reset (~, with the settings that changed).
type SessionChange struct {
	Neighbor string     `json:"neighbor"`
	Address  netip.Addr `json:"address"`
	Action   string     `json:"action"`
	Changed  string     `json:"changed,omitempty"`
}

// PlanConfig returns the sessions SetConfig(cfg) would add, remove or
// reset, without changing anything. It decides with SetConfig's own rules:
// the global settings resolved and compared (a change restarts the server
// and resets every session), each neighbor resolved (its password file
// read), refused as SetConfig refuses it (listed twice, neighborFits) and
// compared with the session it has.
func (s *Speaker) PlanConfig(cfg Config) ([]SessionChange, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping || s.closed {
		return nil, ErrStopped
	}
	out, _, err := s.planSessions(cfg)
	return out, err
}

// planSessions is PlanConfig, with the neighbors' sessions resolved.
// Called with mu held.
func (s *Speaker) planSessions(cfg Config) ([]SessionChange, map[netip.Addr]peer, error) {
	g, err := resolveGlobal(cfg)
	if err != nil {
		return nil, nil, err
	}
	peers := s.currentPeers()
	restart := !s.deferred && (g != s.global || !s.running)
	var out []SessionChange
	next, errs := resolveNeighbors(g, cfg.Neighbors, nil)
	want := make(map[netip.Addr]peer, len(next))
	for _, p := range next {
		name, sess := p.name, p.session
		want[sess.address] = p
		cur, ok := peers[sess.address]
		switch {
		case !ok:
			out = append(out, SessionChange{Neighbor: name, Address: sess.address, Action: "+"})
		case cur.session != sess:
			out = append(out, SessionChange{Neighbor: name, Address: sess.address, Action: "~", Changed: cur.session.changed(sess)})
		case restart:
			out = append(out, SessionChange{Neighbor: name, Address: sess.address, Action: "~", Changed: "global settings (asn, router_id or listen_port): the server restarts"})
		}
	}
	for _, addr := range sortedAddrs(peers) {
		if _, ok := want[addr]; !ok && !slices.ContainsFunc(cfg.Neighbors, func(n Neighbor) bool { return n.Address == addr }) {
			out = append(out, SessionChange{Neighbor: peers[addr].name, Address: addr, Action: "-"})
		}
	}
	slices.SortFunc(out, func(a, b SessionChange) int { return a.Address.Compare(b.Address) })
	return out, want, errors.Join(errs...)
}

// currentPeers are the neighbors the routes now go to: the configured
// ones, or in a planned restart before the first Apply, those that Apply
// will add. Called with mu held.
func (s *Speaker) currentPeers() map[netip.Addr]peer {
	if !s.deferred {
		return s.peers
	}
	peers := map[netip.Addr]peer{}
	for _, n := range s.cfg.Neighbors {
		if sess, err := resolveNeighbor(n, nil); err == nil {
			peers[n.Address] = peer{name: cmpName(n), session: sess}
		}
	}
	return peers
}

// Field is one attribute of a route as a neighbor receives it.
type Field struct {
	Name string `json:"name"`
	From string `json:"from"`
	To   string `json:"to"`
}

// RoutePlan is a route one neighbor is sent (+), no longer sent (-) or
// sent again with other attributes (~, Fields say which, from and to).
type RoutePlan struct {
	Prefix netip.Prefix `json:"prefix"`
	Action string       `json:"action"`
	Fields []Field      `json:"fields,omitempty"`
}

// NeighborPlan is what one neighbor gets from a change: its session added
// (+), removed (-), reset (~) or kept (" "), and its routes.
type NeighborPlan struct {
	Neighbor string      `json:"neighbor"`
	Address  netip.Addr  `json:"address"`
	EBGP     bool        `json:"ebgp"`
	Session  string      `json:"session"`
	Changed  string      `json:"changed,omitempty"`
	Routes   []RoutePlan `json:"routes,omitempty"`
}

// Plan is what SetConfig(cfg) then Apply(routes) would change.
type Plan struct {
	Sessions  []SessionChange
	Neighbors []NeighborPlan // those with a session or route change, by address
}

// Plan returns what SetConfig(cfg) followed by Apply(routes) would change,
// without changing anything: the sessions (PlanConfig) and, per neighbor,
// the routes it would be sent, no longer sent or sent again with other
// attributes, each as that neighbor receives it. Both sides go through the
// same export: the view SetConfig builds (peerExport), its policy, and
// sentTo, which runs that policy's statements. A neighbor whose export
// and session stay is compared on the routes that change only; a new one
// is sent every route; a removed one loses its session, and its routes
// with it.
func (s *Speaker) Plan(cfg Config, routes []Route) (Plan, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping || s.closed {
		return Plan{}, ErrStopped
	}
	sessions, want, err := s.planSessions(cfg)
	if sessions == nil && want == nil && err != nil {
		return Plan{}, err
	}
	errs := []error{err}
	g, _ := resolveGlobal(cfg)
	next, nerrs := normalizeAll(routes)
	errs = append(errs, nerrs...)
	before, after := s.exportNow(), exportSide{g: g, peers: want, routes: next}
	after.view, _ = viewOf(g, slices.Collect(maps.Values(want)), s.withPrepends(next).prepends)
	after.pol = after.view.policy()

	// The prefixes whose route changes, for neighbors whose export stays;
	// every prefix, for the others.
	changed, all := prefixesOf(before.routes, next)
	act := map[netip.Addr]SessionChange{}
	for _, c := range sessions {
		act[c.Address] = c
	}
	var out []NeighborPlan
	for _, addr := range sortedAddrs(want) {
		np, err := planNeighbor(addr, before, after, act, changed, all)
		if err != nil {
			return Plan{}, err
		}
		if np.Session != " " || len(np.Routes) > 0 {
			out = append(out, np)
		}
	}
	for _, c := range sessions {
		if c.Action == "-" {
			out = append(out, NeighborPlan{Neighbor: c.Neighbor, Address: c.Address, EBGP: before.peers[c.Address].session.asn != before.g.asn, Session: "-"})
		}
	}
	slices.SortFunc(out, func(a, b NeighborPlan) int { return a.Address.Compare(b.Address) })
	return Plan{Sessions: sessions, Neighbors: out}, errors.Join(errs...)
}

// exportSide is one side of a plan: the global settings, the neighbors,
// the routes and the export policy they make.
type exportSide struct {
	g      globalState
	peers  map[netip.Addr]peer
	routes map[netip.Prefix]Route
	view   exportView
	pol    *api.SetPoliciesRequest
}

// exportNow is the side before a plan: what the speaker has, its view as
// SetConfig builds it, with the next hop rules GoBGP has. Called with mu
// held.
func (s *Speaker) exportNow() exportSide {
	x := exportSide{g: s.global, peers: s.currentPeers(), routes: s.routes}
	if s.deferred {
		x.g, _ = resolveGlobal(s.cfg)
	}
	x.view, _ = viewOf(x.g, slices.Collect(maps.Values(x.peers)), s.withPrepends(s.routes).prepends)
	if s.exportSet {
		x.view.nextHops = s.export.nextHops // what GoBGP has
	}
	x.pol = x.view.policy()
	return x
}

// normalizeAll is routes normalized as Apply does, the first entry of a
// prefix listed twice kept, and why those left out were.
func normalizeAll(routes []Route) (map[netip.Prefix]Route, []error) {
	var errs []error
	next := make(map[netip.Prefix]Route, len(routes))
	for _, r := range routes {
		n, err := normalize(r)
		if err != nil {
			errs = append(errs, fmt.Errorf("announce %s: %w", r.Prefix, err))
			continue
		}
		if _, ok := next[n.Prefix]; !ok {
			next[n.Prefix] = n
		}
	}
	return next, errs
}

// prefixesOf is the prefixes whose route differs between have and next,
// and a function that lists every prefix of either, made at its first
// call.
func prefixesOf(have, next map[netip.Prefix]Route) (changed []netip.Prefix, all func() []netip.Prefix) {
	for p, r := range next {
		if cur, ok := have[p]; !ok || !equal(cur, r) {
			changed = append(changed, p)
		}
	}
	for p := range have {
		if _, ok := next[p]; !ok {
			changed = append(changed, p)
		}
	}
	var every []netip.Prefix
	return changed, func() []netip.Prefix {
		if every == nil {
			every = slices.Collect(maps.Keys(next))
			for p := range have {
				if _, ok := next[p]; !ok {
					every = append(every, p)
				}
			}
		}
		return every
	}
}

// planNeighbor is what the neighbor at addr (one of after's) gets: its
// session change from act, and its routes as it receives them before and
// after. A neighbor whose export stays is compared on the prefixes
// changed only; a new one, or one whose export changes, on all.
func planNeighbor(addr netip.Addr, before, after exportSide, act map[netip.Addr]SessionChange,
	changed []netip.Prefix, all func() []netip.Prefix) (NeighborPlan, error) {
	p := after.peers[addr]
	np := NeighborPlan{Neighbor: p.name, Address: addr, EBGP: p.session.asn != after.g.asn, Session: " "}
	if c, ok := act[addr]; ok {
		np.Session, np.Changed = c.Action, c.Changed
	}
	newPeer := exportPeerOf(after.g, p.session)
	old, had := before.peers[addr]
	oldPeer := exportPeerOf(before.g, old.session)
	prefixes := changed
	if !had || oldPeer != newPeer || before.g.asn != after.g.asn ||
		!slices.Equal(rulesOf(before.view.nextHops, addr), rulesOf(after.view.nextHops, addr)) {
		prefixes = all()
	}
	for _, pf := range prefixes {
		var b, a sent
		var okB, okA bool
		var err error
		if r, ok := before.routes[pf]; ok && had {
			if b, okB, err = sentTo(before.pol, before.g.asn, oldPeer, r); err != nil {
				return NeighborPlan{}, err
			}
		}
		if r, ok := after.routes[pf]; ok {
			if a, okA, err = sentTo(after.pol, after.g.asn, newPeer, r); err != nil {
				return NeighborPlan{}, err
			}
		}
		switch {
		case okA && !okB:
			np.Routes = append(np.Routes, RoutePlan{Prefix: pf, Action: "+", Fields: sent{}.fields(a)})
		case okB && !okA:
			np.Routes = append(np.Routes, RoutePlan{Prefix: pf, Action: "-"})
		case okA && okB:
			if f := b.fields(a); len(f) > 0 {
				np.Routes = append(np.Routes, RoutePlan{Prefix: pf, Action: "~", Fields: f})
			}
		}
	}
	slices.SortFunc(np.Routes, func(a, b RoutePlan) int { return comparePrefix(a.Prefix, b.Prefix) })
	return np, nil
}

// viewOf is the export view of the neighbors peers under the global
// settings g (peerExport), with prepends, and per neighbor that carries a
// family it cannot be given a next hop of, why.
func viewOf(g globalState, peers []peer, prepends []int) (exportView, []error) {
	v := exportView{asn: g.asn, prepends: prepends}
	var errs []error
	for _, p := range peers {
		sess := p.session
		ebgp, rules, nhErrs := peerExport(g, sess)
		for i, err := range nhErrs {
			if err != nil {
				errs = append(errs, fmt.Errorf("neighbor %q (%s): %s over an %s session needs a next hop of its family: %w; "+
					"only routes with an explicit next_hop are sent (add such an address to the link, or set next_hop)",
					p.name, sess.address, rules[i].family, sessionFamily(sess.address), err))
			}
		}
		if ebgp {
			v.ebgp = append(v.ebgp, sess.address)
		}
		v.nextHops = append(v.nextHops, rules...)
	}
	v.sort()
	return v, errs
}

func cmpName(n Neighbor) string {
	if n.Name == "" {
		return n.Address.String()
	}
	return n.Name
}
