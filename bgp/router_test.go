package bgp

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/apiutil"
	packet "github.com/osrg/gobgp/v3/pkg/packet/bgp"
	"github.com/osrg/gobgp/v3/pkg/server"
)

// testRouter is a second GoBGP server in the test process acting as the
// router kglb peers with, on loopback. It records the best paths it holds
// (from WatchEvent, so a test can wait for an UPDATE) and a log of events
// in arrival order.
type testRouter struct {
	srv  *server.BgpServer
	asn  uint32
	port int

	mu     sync.Mutex
	rib    map[netip.Prefix]gotRoute
	events []string
	notify chan struct{} // closed and replaced on every change
	// onChange, when set, is called for every path the router receives,
	// with the time it arrived (the benchmarks use it).
	onChange func(p netip.Prefix, withdraw bool, at time.Time)
	// quiet stops recording the event log (the benchmarks send many).
	quiet bool
}

// gotRoute is a path as the router received it.
type gotRoute struct {
	Prefix      netip.Prefix
	NextHop     netip.Addr
	ASPath      []uint32
	Origin      int
	MED         uint32
	HasMED      bool
	LocalPref   uint32
	Communities []Community
	Large       []LargeCommunity
	Received    time.Time
}

// String renders a received route like a router's RIB line, so tests can
// compare text.
func (g gotRoute) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s via %s as-path %v origin %d", g.Prefix, g.NextHop, g.ASPath, g.Origin)
	if g.HasMED {
		fmt.Fprintf(&b, " med %d", g.MED)
	}
	if g.LocalPref != 0 {
		fmt.Fprintf(&b, " local-pref %d", g.LocalPref)
	}
	if len(g.Communities) > 0 {
		fmt.Fprintf(&b, " communities %v", g.Communities)
	}
	if len(g.Large) > 0 {
		fmt.Fprintf(&b, " large %v", g.Large)
	}
	return b.String()
}

// loopback hands out distinct 127.0.x.y addresses so that each test's
// sessions are separate from leftovers of earlier tests.
var loopbackSeq atomic.Uint32

func nextLoopback() netip.Addr {
	n := loopbackSeq.Add(1)
	return netip.AddrFrom4([4]byte{127, 0, byte(10 + n/200), byte(2 + n%200)})
}

// freePort finds a TCP port free on addr.
func freePort(t testing.TB, addr netip.Addr) int {
	t.Helper()
	l, err := net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// newRouter starts a router with the given ASN listening on addr.
func newRouter(t testing.TB, asn uint32, addr netip.Addr) *testRouter {
	t.Helper()
	return newRouterID(t, asn, addr, "10.255.255.1")
}

// newRouterID is newRouter with the router id id; routers that must learn
// each other's paths (through kglb) need distinct ones.
func newRouterID(t testing.TB, asn uint32, addr netip.Addr, id string) *testRouter {
	t.Helper()
	r := &testRouter{asn: asn, rib: map[netip.Prefix]gotRoute{}, notify: make(chan struct{})}
	lg := &gobgpLogger{log: hclog.NewNullLogger()}
	r.srv = server.NewBgpServer(server.LoggerOption(lg))
	go r.srv.Serve()
	r.port = freePort(t, addr)
	ctx := context.Background()
	if err := r.srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn: asn, RouterId: id, ListenPort: int32(r.port), ListenAddresses: []string{addr.String()},
	}}); err != nil {
		t.Fatalf("start router: %v", err)
	}
	wctx, cancel := context.WithCancel(context.Background())
	err := r.srv.WatchEvent(wctx, &api.WatchEventRequest{
		Peer:  &api.WatchEventRequest_Peer{},
		Table: &api.WatchEventRequest_Table{Filters: []*api.WatchEventRequest_Table_Filter{{Type: api.WatchEventRequest_Table_Filter_BEST, Init: true}}},
	}, r.onEvent)
	if err != nil {
		t.Fatalf("watch router: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		r.srv.StopBgp(context.Background(), &api.StopBgpRequest{})
	})
	return r
}

// addNeighbor makes the router accept a session from addr (passive), or
// connect to it at port when port > 0.
func (r *testRouter) addNeighbor(t testing.TB, addr netip.Addr, asn uint32, port int, password string, families ...*api.Family) {
	t.Helper()
	p := &api.Peer{
		Conf:      &api.PeerConf{NeighborAddress: addr.String(), PeerAsn: asn, AuthPassword: password},
		Timers:    &api.Timers{Config: &api.TimersConfig{ConnectRetry: 1, HoldTime: 9, KeepaliveInterval: 3}},
		Transport: &api.Transport{PassiveMode: port == 0},
	}
	if port > 0 {
		p.Transport.RemotePort = uint32(port)
		p.Transport.LocalAddress = "127.0.0.1"
	}
	for _, f := range families {
		p.AfiSafis = append(p.AfiSafis, &api.AfiSafi{Config: &api.AfiSafiConfig{Family: f, Enabled: true}})
	}
	if err := r.srv.AddPeer(context.Background(), &api.AddPeerRequest{Peer: p}); err != nil {
		t.Fatalf("router: add neighbor %s: %v", addr, err)
	}
}

func (r *testRouter) onEvent(ev *api.WatchEventResponse) {
	r.mu.Lock()
	defer r.mu.Unlock()
	changed := false
	if pe := ev.GetPeer(); pe != nil && pe.GetType() == api.WatchEventResponse_PeerEvent_STATE {
		r.events = append(r.events, fmt.Sprintf("peer %s %s", pe.GetPeer().GetState().GetNeighborAddress(),
			stateName(pe.GetPeer().GetState().GetSessionState())))
		changed = true
	}
	for _, p := range ev.GetTable().GetPaths() {
		g, err := decodePath(p)
		if err != nil {
			r.events = append(r.events, "bad path: "+err.Error())
			continue
		}
		if r.onChange != nil {
			r.onChange(g.Prefix, p.GetIsWithdraw(), g.Received)
		}
		if p.GetIsWithdraw() {
			delete(r.rib, g.Prefix)
			if !r.quiet {
				r.events = append(r.events, "withdraw "+g.Prefix.String())
			}
		} else {
			r.rib[g.Prefix] = g
			if !r.quiet {
				r.events = append(r.events, "update "+g.String())
			}
		}
		changed = true
	}
	if changed {
		close(r.notify)
		r.notify = make(chan struct{})
	}
}

func decodePath(p *api.Path) (gotRoute, error) {
	g := gotRoute{Received: time.Now()}
	nlri, err := apiutil.GetNativeNlri(p)
	if err != nil {
		return g, err
	}
	pfx, err := netip.ParsePrefix(nlri.String())
	if err != nil {
		return g, err
	}
	g.Prefix = pfx
	attrs, err := apiutil.GetNativePathAttributes(p)
	if err != nil {
		return g, err
	}
	for _, a := range attrs {
		switch a := a.(type) {
		case *packet.PathAttributeOrigin:
			g.Origin = int(a.Value)
		case *packet.PathAttributeNextHop:
			g.NextHop, _ = netip.AddrFromSlice(a.Value)
			g.NextHop = g.NextHop.Unmap()
		case *packet.PathAttributeMpReachNLRI:
			g.NextHop, _ = netip.AddrFromSlice(a.Nexthop)
		case *packet.PathAttributeAsPath:
			for _, seg := range a.Value {
				g.ASPath = append(g.ASPath, seg.GetAS()...)
			}
		case *packet.PathAttributeMultiExitDisc:
			g.MED, g.HasMED = a.Value, true
		case *packet.PathAttributeLocalPref:
			g.LocalPref = a.Value
		case *packet.PathAttributeCommunities:
			for _, c := range a.Value {
				g.Communities = append(g.Communities, Community(c))
			}
		case *packet.PathAttributeLargeCommunities:
			for _, c := range a.Values {
				g.Large = append(g.Large, LargeCommunity{c.ASN, c.LocalData1, c.LocalData2})
			}
		}
	}
	return g, nil
}

// wait blocks until cond holds (checked on a copy of the RIB after every
// change) or the safety deadline passes, which fails the test. The
// deadline is a guard against hanging, not an assertion on speed.
func (r *testRouter) wait(t testing.TB, what string, cond func(rib map[netip.Prefix]gotRoute) bool) {
	t.Helper()
	deadline := time.NewTimer(60 * time.Second)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		rib := maps.Clone(r.rib)
		ch := r.notify
		r.mu.Unlock()
		if cond(rib) {
			return
		}
		select {
		case <-ch:
		case <-time.After(200 * time.Millisecond): // peer counters are not events
		case <-deadline.C:
			t.Fatalf("router: gave up waiting for %s; rib:\n%s\nevents:\n%s", what, r.ribText(), strings.Join(r.eventLog(), "\n"))
		}
	}
}

// waitRIB waits until the router's RIB renders as want.
func (r *testRouter) waitRIB(t testing.TB, want string) {
	t.Helper()
	r.wait(t, "rib:\n"+want, func(rib map[netip.Prefix]gotRoute) bool { return renderRIB(rib) == want })
}

func renderRIB(rib map[netip.Prefix]gotRoute) string {
	lines := make([]string, 0, len(rib))
	for _, g := range rib {
		lines = append(lines, g.String())
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func (r *testRouter) ribText() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return renderRIB(r.rib)
}

func (r *testRouter) eventLog() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// sessionState is the router's view of its session with addr.
func (r *testRouter) sessionState(addr netip.Addr) (api.PeerState_SessionState, uint64) {
	var st api.PeerState_SessionState
	var updates uint64
	r.srv.ListPeer(context.Background(), &api.ListPeerRequest{Address: addr.String()}, func(p *api.Peer) {
		st = p.GetState().GetSessionState()
		updates = p.GetState().GetMessages().GetReceived().GetUpdate()
	})
	return st, updates
}

// waitEstablished waits for the router's session with addr.
func (r *testRouter) waitEstablished(t testing.TB, addr netip.Addr) {
	t.Helper()
	r.wait(t, "session with "+addr.String(), func(map[netip.Prefix]gotRoute) bool {
		st, _ := r.sessionState(addr)
		return st == api.PeerState_ESTABLISHED
	})
}
