package bgp

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
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
// read) and compared with the session it has.
func (s *Speaker) PlanConfig(cfg Config) ([]SessionChange, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping || s.closed {
		return nil, ErrStopped
	}
	g, err := resolveGlobal(cfg)
	if err != nil {
		return nil, err
	}
	peers := s.peers
	if s.deferred {
		// Nothing is configured in GoBGP until the first Apply; compare
		// with what that Apply would add.
		peers = map[netip.Addr]peer{}
		for _, n := range s.cfg.Neighbors {
			if sess, err := resolveNeighbor(n); err == nil {
				peers[n.Address] = peer{name: cmpName(n), session: sess}
			}
		}
	}
	restart := !s.deferred && (g != s.global || !s.running)
	var out []SessionChange
	var errs []error
	want := map[netip.Addr]bool{}
	for _, n := range cfg.Neighbors {
		name := cmpName(n)
		want[n.Address] = true
		sess, err := resolveNeighbor(n)
		if err != nil {
			errs = append(errs, fmt.Errorf("neighbor %q (%s): %w", name, n.Address, err))
			continue
		}
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
		if !want[addr] {
			out = append(out, SessionChange{Neighbor: peers[addr].name, Address: addr, Action: "-"})
		}
	}
	slices.SortFunc(out, func(a, b SessionChange) int { return a.Address.Compare(b.Address) })
	return out, errors.Join(errs...)
}

func cmpName(n Neighbor) string {
	if n.Name == "" {
		return n.Address.String()
	}
	return n.Name
}
