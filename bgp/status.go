package bgp

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"time"

	api "github.com/osrg/gobgp/v3/api"
)

// Status is a snapshot of the speaker for /status and `kglb status`.
type Status struct {
	ASN      uint32       `json:"asn"`
	RouterID netip.Addr   `json:"router_id"`
	Stopping bool         `json:"stopping,omitempty"`
	Peers    []PeerStatus `json:"peers"`
	// Routes are the announced routes, sorted by prefix.
	Routes []Route `json:"routes"`
}

// PeerStatus is one neighbor's session.
type PeerStatus struct {
	Name    string     `json:"name"`
	Address netip.Addr `json:"address"`
	ASN     uint32     `json:"asn"`
	// State is the BGP FSM state: idle, connect, active, opensent,
	// openconfirm or established.
	State       string   `json:"state"`
	Established bool     `json:"established"`
	Families    []Family `json:"families"`
	// Since is when the session reached Established (zero when it is not);
	// Uptime is the time since then.
	Since         time.Time     `json:"since,omitzero"`
	Uptime        time.Duration `json:"-"`
	UptimeSeconds float64       `json:"uptime_seconds"`
	// PrefixesSent is what kglb advertises to the peer now;
	// PrefixesReceived is what the peer sends kglb.
	PrefixesSent     uint64 `json:"prefixes_sent"`
	PrefixesReceived uint64 `json:"prefixes_received"`
	UpdatesSent      uint64 `json:"updates_sent"`
	UpdatesReceived  uint64 `json:"updates_received"`
	// Flaps counts the times the session left Established.
	Flaps uint64 `json:"flaps"`
	// LastError is the last problem GoBGP reported for the peer (a
	// session going down and why, a notification, a failed setting).
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
}

// stateName is the lower-case FSM state name.
func stateName(s api.PeerState_SessionState) string {
	return strings.ToLower(s.String())
}

// Status returns a snapshot of the peers and announced routes.
func (s *Speaker) Status() Status {
	s.mu.Lock()
	st := Status{
		ASN:      s.global.asn,
		RouterID: s.global.routerID,
		Stopping: s.stopping,
		Routes:   sortedRoutes(s.routes),
	}
	peers := make(map[netip.Addr]peer, len(s.peers))
	for a, p := range s.peers {
		peers[a] = p
	}
	s.mu.Unlock()

	byAddr := map[string]counters{}
	for _, c := range s.listPeers(context.Background()) {
		byAddr[c.addr] = c.counters
	}
	now := time.Now()
	s.liveMu.Lock()
	for _, addr := range sortedAddrs(peers) {
		p := peers[addr]
		ps := PeerStatus{
			Name:     p.name,
			Address:  addr,
			ASN:      p.session.asn,
			State:    stateName(api.PeerState_UNKNOWN),
			Families: p.session.families(),
		}
		if l := s.live[addr.String()]; l != nil {
			ps.State = stateName(l.state)
			ps.Established = l.state == api.PeerState_ESTABLISHED
			ps.Flaps = l.flaps
			ps.LastError, ps.LastErrorAt = l.lastError, l.lastErrorAt
			if ps.Established && !l.since.IsZero() {
				ps.Since = l.since
				ps.Uptime = now.Sub(l.since)
				ps.UptimeSeconds = ps.Uptime.Seconds()
			}
		}
		c := byAddr[addr.String()]
		ps.PrefixesSent, ps.PrefixesReceived = c.advertised, c.received
		ps.UpdatesSent, ps.UpdatesReceived = c.updatesSent, c.updatesReceived
		st.Peers = append(st.Peers, ps)
	}
	s.liveMu.Unlock()
	return st
}

type addrCounters struct {
	addr string
	counters
}

// listPeers reads GoBGP's counters of every peer. It goes through the
// server loop and does not need mu.
func (s *Speaker) listPeers(ctx context.Context) []addrCounters {
	var out []addrCounters
	_ = s.srv.ListPeer(ctx, &api.ListPeerRequest{EnableAdvertised: true}, func(p *api.Peer) {
		addr := p.GetState().GetNeighborAddress()
		if addr == "" {
			addr = p.GetConf().GetNeighborAddress()
		}
		out = append(out, addrCounters{addr: addr, counters: countersOf(p)})
	})
	return out
}

// peerCounters returns the counters of the configured peers, labelled by
// name, for the metrics collector.
func (s *Speaker) peerCounters(ctx context.Context) []counters {
	list := s.listPeers(ctx)
	s.liveMu.Lock()
	defer s.liveMu.Unlock()
	out := make([]counters, 0, len(list))
	for _, p := range list {
		l := s.live[p.addr]
		if l == nil {
			continue
		}
		c := p.counters
		c.name = l.name
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b counters) int { return strings.Compare(a.name, b.name) })
	return out
}
