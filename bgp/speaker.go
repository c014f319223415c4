// Package bgp owns kglb's BGP speaker: an embedded GoBGP v3 server, its
// sessions with the routers, and the routes kglb announces to them.
//
// The speaker is declarative. SetConfig takes the whole BGP configuration
// (local ASN, router id, listener, neighbors) and converges the running
// server to it by diff: new neighbors are added, removed ones deleted, and
// a neighbor whose session settings changed is re-created (its session
// resets). Apply takes the whole set of routes that should be announced
// and converges GoBGP's RIB to it: it announces new prefixes, re-announces
// prefixes whose attributes changed (a new MED or prepend for a degraded
// tier is an implicit replace, one UPDATE), withdraws prefixes that are
// gone, and writes nothing when nothing changed. Which routes to announce,
// and with which attributes, is the engine's decision; this package only
// carries it out.
//
// Stopping is ordered by the daemon: WithdrawAll (optionally first
// re-announcing every route with the GRACEFUL_SHUTDOWN community and
// waiting), then the daemon's hold time, then the data plane, then Close,
// which ends the sessions. Shutdown does WithdrawAll and Close in one call.
// A crash withdraws nothing, so each neighbor's hold time bounds how long
// routers keep kglb's routes, unless that neighbor opted in to graceful
// restart.
//
// GoBGP notes that shape the code (see shared/reference/libraries.md 1):
// every call goes through the server's Serve loop, started before
// anything else; a listen port of 0 means 179 to GoBGP, so "no listener"
// is passed as -1; ORIGIN is never added by GoBGP; DeletePath without a
// path deletes every local path, so the speaker always names the prefix;
// Serve never returns, so a Speaker is created once per process.
package bgp

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"
	"github.com/prometheus/client_golang/prometheus"
)

// ErrStopped is returned by Apply and SetConfig once WithdrawAll, Shutdown
// or Close has begun: a stopping speaker announces nothing new.
var ErrStopped = errors.New("bgp speaker is stopping")

// Options configure a Speaker.
type Options struct {
	// Logger gets session and route state changes at Info and GoBGP's own
	// messages at Debug; nil logs nothing.
	Logger hclog.Logger
	// Registerer gets the kglb_bgp_* metrics; nil registers none.
	Registerer prometheus.Registerer
	// Restarting says the previous process ended in a planned restart
	// (see Abandon): routers with graceful restart hold its routes as
	// stale and its data plane stayed in place. The speaker then connects
	// to its neighbors only at the first Apply, so that the routes are in
	// its RIB before it sends End-of-RIB, and tells each graceful-restart
	// neighbor that it restarted with its forwarding state preserved (the
	// R and F bits of RFC 4724), so routers keep the stale routes until
	// that End-of-RIB instead of flushing them on reconnect.
	Restarting bool
}

// ShutdownMessage is the shutdown communication (RFC 9003) sent with the
// Cease / Administrative Shutdown notification (RFC 4486) that ends every
// session at a stop.
const ShutdownMessage = "kglb stopping: routes withdrawn"

// Speaker is kglb's BGP speaker. Its methods are safe for concurrent use.
type Speaker struct {
	log     hclog.Logger
	srv     *server.BgpServer
	metrics *metrics

	// mu serializes every change to the server and guards the fields
	// below it.
	mu       sync.Mutex
	cfg      Config
	global   globalState
	running  bool // StartBgp succeeded and Close has not run
	stopping bool
	closed   bool
	peers    map[netip.Addr]peer
	routes   map[netip.Prefix]Route // what GoBGP's RIB holds, normalized
	want     map[netip.Prefix]int   // Apply's scratch set, empty between calls
	// export is the export policy GoBGP has (see export.go).
	export    exportView
	exportSet bool
	// deferred: Options.Restarting and no Apply yet, so no neighbor is
	// configured in GoBGP; cfg holds the ones to add.
	deferred bool
	// restarting: peers added now say they restarted (Options.Restarting
	// until the first Apply has added them).
	restarting bool
	// secrets are the passwords read since New or the last SetConfig (a
	// reload's), by neighbor and file. RetryConfig takes them rather
	// than read the files again, so that a key written for a neighbor
	// ahead of its reload does not go live with a retry caused by
	// another neighbor; a file that could not be read is not here, and
	// the retry reads it.
	secrets map[secretKey]string

	stopWatch context.CancelFunc

	// liveMu guards live, updated by the WatchEvent callback.
	liveMu sync.Mutex
	live   map[string]*liveState // by neighbor address as GoBGP prints it
}

// peer is a configured neighbor.
type peer struct {
	name    string
	session session
}

// liveState is what the speaker has seen of a session.
type liveState struct {
	name        string
	state       api.PeerState_SessionState
	since       time.Time // when it reached Established
	flaps       uint64
	lastError   string
	lastErrorAt time.Time
}

// New starts a speaker with cfg. No routes are announced until Apply.
func New(ctx context.Context, cfg Config, opts Options) (*Speaker, error) {
	lg := opts.Logger
	if lg == nil {
		lg = hclog.NewNullLogger()
	}
	s := &Speaker{
		log:        lg,
		peers:      map[netip.Addr]peer{},
		routes:     map[netip.Prefix]Route{},
		want:       map[netip.Prefix]int{},
		live:       map[string]*liveState{},
		deferred:   opts.Restarting,
		restarting: opts.Restarting,
		secrets:    map[secretKey]string{},
	}
	s.metrics = newMetrics(opts.Registerer, s)
	gl := &gobgpLogger{log: lg.Named("gobgp"), onPeerEvent: s.notePeerError}
	s.srv = server.NewBgpServer(server.LoggerOption(gl))
	// Serve first: every other call is a message to its loop.
	go s.srv.Serve()

	g, err := resolveGlobal(cfg)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cfg = cfg
	if err := s.start(ctx, g); err != nil {
		return nil, err
	}
	// Watch before adding peers so no transition is missed.
	wctx, cancel := context.WithCancel(context.Background())
	s.stopWatch = cancel
	if err := s.srv.WatchEvent(wctx, &api.WatchEventRequest{Peer: &api.WatchEventRequest_Peer{}}, s.onEvent); err != nil {
		cancel()
		s.stop(ctx)
		return nil, fmt.Errorf("watch bgp peer events: %w", err)
	}
	if s.deferred {
		s.log.Info("planned restart: neighbors are connected once the routes are known", "neighbors", len(cfg.Neighbors))
		return s, nil
	}
	if err := s.setConfig(ctx, cfg); err != nil {
		// The server runs; the neighbors that were fine are up. The
		// caller decides whether a partial start is acceptable.
		return s, err
	}
	return s, nil
}

// start runs StartBgp for g. Called with mu held.
func (s *Speaker) start(ctx context.Context, g globalState) error {
	gl := &api.Global{Asn: g.asn, RouterId: g.routerID.String(), ListenPort: -1}
	if g.port > 0 {
		gl.ListenPort = int32(g.port)
		for _, a := range s.cfg.ListenAddresses {
			gl.ListenAddresses = append(gl.ListenAddresses, a.String())
		}
	}
	if err := s.srv.StartBgp(ctx, &api.StartBgpRequest{Global: gl}); err != nil {
		return fmt.Errorf("start bgp as %d router id %s: %w", g.asn, g.routerID, err)
	}
	s.global = g
	s.running = true
	s.log.Info("bgp started", "asn", g.asn, "router_id", g.routerID.String(), "listen_port", g.port)
	return nil
}

// stop ends every session with Cease / Administrative Shutdown and
// ShutdownMessage, then closes the listeners. Called with mu held.
func (s *Speaker) stop(ctx context.Context) error {
	if !s.running {
		return nil
	}
	s.shutdownPeers(ctx, sortedAddrs(s.peers), ShutdownMessage)
	s.running = false
	if err := s.srv.StopBgp(ctx, &api.StopBgpRequest{}); err != nil {
		return fmt.Errorf("stop bgp: %w", err)
	}
	return nil
}

// SetConfig converges the speaker to cfg. Neighbors are matched by
// address: new ones are added, missing ones removed (their sessions end
// with a CEASE), and ones whose session settings changed (timers, ASN,
// password file content, families, ...) are re-created, which resets
// their session. A change of ASN, router id or listener restarts the BGP
// server: every session resets and the current routes are re-announced.
// It carries on past a neighbor that fails (for example an unreadable
// password file: an existing session then keeps its old settings, but
// after a restart of the server there is none, and the neighbor has no
// kglb_bgp_peer_* series until a SetConfig adds it) and returns
// errors.Join of the failures. A neighbor that carries a family it cannot
// be given a next hop of is no failure: it is set up, and the log says
// which routes it is not sent. Every neighbor's password file is read (in
// a planned restart, at the first Apply): SetConfig is a reload's.
func (s *Speaker) SetConfig(ctx context.Context, cfg Config) error {
	return s.configure(ctx, cfg, true)
}

// RetryConfig is SetConfig again after it failed, for the same reload: each
// neighbor keeps the password read from its file since the last SetConfig,
// and only the files that could not be read then are read now. So an
// operator who fixes the file that failed needs no other reload, and a
// key written for another neighbor, ahead of the reload that goes with
// the router's change, waits for that reload.
func (s *Speaker) RetryConfig(ctx context.Context, cfg Config) error {
	return s.configure(ctx, cfg, false)
}

// configure is SetConfig, or with reread false RetryConfig.
func (s *Speaker) configure(ctx context.Context, cfg Config, reread bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping || s.closed {
		return ErrStopped
	}
	if reread {
		clear(s.secrets)
	}
	if s.deferred {
		// Checked and applied at the first Apply.
		if _, err := resolveGlobal(cfg); err != nil {
			return err
		}
		s.cfg = cfg
		return nil
	}
	return s.setConfig(ctx, cfg)
}

func (s *Speaker) setConfig(ctx context.Context, cfg Config) error {
	g, err := resolveGlobal(cfg)
	if err != nil {
		return err
	}
	cfg.ListenAddresses = slices.Clone(cfg.ListenAddresses)
	cfg.Neighbors = slices.Clone(cfg.Neighbors)
	next, errs := resolveNeighbors(g, cfg.Neighbors, s.secrets)
	// The routes the export policy must serve: after a server restart
	// below, those re-announced once this call ends.
	viewRoutes := s.routes
	if g != s.global || !s.running {
		held, err := s.restartServer(ctx, g, cfg, next)
		if err != nil {
			return err
		}
		defer s.reannounce(held)
	}
	s.cfg = cfg

	if g.port > 0 && listenersUseMPTCP() {
		for _, p := range next {
			if p.session.password != "" {
				s.log.Warn("TCP-MD5 is not set on the listener (MPTCP socket): the session works only when kglb connects out",
					"peer", p.name)
			}
		}
	}
	// A neighbor still listed but left out by resolveNeighbors (say, its
	// password file unreadable) keeps its session and settings (see
	// removePeers; after a restart it has none, and is not in s.peers),
	// so the export policy keeps serving it as before:
	// without it, its routes would lose their prepends (eBGP) or their
	// derived next hop (the other family) at the next change.
	served := slices.Clone(next)
	for _, a := range sortedAddrs(s.peers) {
		listed := slices.ContainsFunc(cfg.Neighbors, func(n Neighbor) bool { return n.Address == a })
		resolved := slices.ContainsFunc(next, func(p peer) bool { return p.session.address == a })
		if listed && !resolved {
			served = append(served, s.peers[a])
		}
	}
	view, viewErrs := viewOf(g, served, s.withPrepends(viewRoutes).prepends)
	// A family a neighbor carries but cannot be given a next hop of is a
	// matter of the host's addresses, not a failure to apply: the session
	// is set up, and only the routes of that family with an explicit
	// next_hop go to it. So it is said here, not returned: a caller takes
	// what SetConfig returns as not applied, and retries it.
	for _, err := range viewErrs {
		s.log.Warn("routes held back from a neighbor", "err", err)
	}
	// The policy before the peers: a new session's first UPDATEs already
	// carry its attributes.
	oldRules := s.export.nextHops
	if err := s.syncExport(ctx, view); err != nil {
		errs = append(errs, err)
	}
	for _, p := range next {
		a := p.session.address
		resend := !slices.Equal(rulesOf(oldRules, a), rulesOf(view.nextHops, a))
		if err := s.syncPeer(ctx, p, resend); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, s.removePeers(ctx, cfg.Neighbors)...)
	return errors.Join(errs...)
}

// restartServer restarts GoBGP's server with the global settings g: its
// peers, RIB and policies are gone. It keeps the series of the peers the
// caller adds again (next, by address and name: their flaps go on); the
// others' go, as a removed neighbor's do, for they have no session now,
// even one cfg still lists but resolveNeighbors left out (its password
// file unreadable). It returns the routes the RIB held, for the caller to
// announce again once the neighbors are configured.
func (s *Speaker) restartServer(ctx context.Context, g globalState, cfg Config, next []peer) (map[netip.Prefix]Route, error) {
	s.log.Warn("bgp global settings changed, restarting the server: every session resets",
		"asn", g.asn, "router_id", g.routerID.String(), "listen_port", g.port)
	if err := s.stop(ctx); err != nil {
		return nil, err
	}
	s.cfg = cfg
	if err := s.start(ctx, g); err != nil {
		return nil, err
	}
	s.exportSet = false
	old := s.peers
	s.peers = map[netip.Addr]peer{}
	for addr, p := range old {
		if !slices.ContainsFunc(next, func(n peer) bool { return n.session.address == addr && n.name == p.name }) {
			s.forgetPeer(addr, p.name)
		}
	}
	held := s.routes
	s.routes = map[netip.Prefix]Route{}
	return held, nil
}

// reannounce announces routes again after a server restart.
func (s *Speaker) reannounce(routes map[netip.Prefix]Route) {
	for _, r := range sortedRoutes(routes) {
		if err := s.announce(r); err != nil {
			s.log.Error("re-announce after restart failed", "vip", r.Prefix.String(), "err", err)
		}
	}
}

// resolveNeighbors is the sessions of the neighbors ns under the global
// settings g, in their order, and why those left out were: listed twice,
// unresolvable (an unreadable password file) or unfit for g. SetConfig
// and Plan both decide with it; secrets are resolveNeighbor's (nil reads
// every password file and keeps none).
func resolveNeighbors(g globalState, ns []Neighbor, secrets map[secretKey]string) ([]peer, []error) {
	var out []peer
	var errs []error
	seen := map[netip.Addr]bool{}
	for _, n := range ns {
		if seen[n.Address] {
			errs = append(errs, errListedTwice(n.Address))
			continue
		}
		seen[n.Address] = true
		sess, err := resolveNeighbor(n, secrets)
		if err == nil {
			err = neighborFits(g, sess)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("neighbor %q (%s): %w", cmpName(n), n.Address, err))
			continue
		}
		out = append(out, peer{name: cmpName(n), session: sess})
	}
	return out, errs
}

// rulesOf is the next hop rules towards the neighbor at a.
func rulesOf(rules []nextHopRule, a netip.Addr) []nextHopRule {
	return slices.DeleteFunc(slices.Clone(rules), func(r nextHopRule) bool { return r.peer != a })
}

// syncPeer converges GoBGP's neighbor p.session.address to p: added when
// new, re-created (its session reset) when its session settings changed,
// renamed when only its name did; with resend, an unchanged session is
// sent its routes again through the new export policy, without a reset.
func (s *Speaker) syncPeer(ctx context.Context, p peer, resend bool) error {
	name, sess := p.name, p.session
	cur, ok := s.peers[sess.address]
	switch {
	case !ok:
		return s.addPeer(ctx, name, sess)
	case cur.session != sess:
		s.log.Info("neighbor settings changed, resetting its session", "peer", name, "changed", cur.session.changed(sess))
		s.closeQuietly(ctx, cur, "kglb: neighbor settings changed ("+cur.session.changed(sess)+")")
		if err := s.deletePeer(ctx, sess.address, cur.name); err != nil {
			return err
		}
		return s.addPeer(ctx, name, sess)
	case cur.name != name:
		s.renamePeer(sess.address, cur.name, name)
		s.peers[sess.address] = p
	}
	if resend {
		// Same session, another derived next hop.
		s.log.Info("next hop of the other family changed, sending the routes again", "peer", name)
		if err := s.srv.ResetPeer(ctx, &api.ResetPeerRequest{Address: sess.address.String(), Soft: true, Direction: api.ResetPeerRequest_OUT}); err != nil {
			return fmt.Errorf("neighbor %q (%s): resend routes: %w", name, sess.address, err)
		}
	}
	return nil
}

// removePeers ends the sessions of the neighbors ns no longer lists. One
// listed but left out by resolveNeighbors keeps its session and settings.
func (s *Speaker) removePeers(ctx context.Context, ns []Neighbor) []error {
	var errs []error
	for _, addr := range sortedAddrs(s.peers) {
		if slices.ContainsFunc(ns, func(n Neighbor) bool { return n.Address == addr }) {
			continue
		}
		s.shutdownPeers(ctx, []netip.Addr{addr}, "kglb: neighbor removed from the configuration")
		if err := s.deletePeer(ctx, addr, s.peers[addr].name); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

func (s *Speaker) addPeer(ctx context.Context, name string, sess session) error {
	s.liveMu.Lock()
	s.live[sess.address.String()] = &liveState{name: name, state: api.PeerState_IDLE}
	s.liveMu.Unlock()
	s.metrics.peerUp.WithLabelValues(name).Set(0)
	s.metrics.peerState.WithLabelValues(name).Set(float64(api.PeerState_IDLE))
	s.metrics.peerFlaps.WithLabelValues(name)
	if err := s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: sess.toAPI(name, s.restarting)}); err != nil {
		s.forgetPeer(sess.address, name)
		return fmt.Errorf("add neighbor %q (%s): %w", name, sess.address, err)
	}
	s.peers[sess.address] = peer{name: name, session: sess}
	s.log.Info("neighbor added", "peer", name, "address", sess.address.String(), "asn", sess.asn)
	return nil
}

func (s *Speaker) deletePeer(ctx context.Context, addr netip.Addr, name string) error {
	// Forget first, so the session's last state events are not counted as
	// a flap.
	s.forgetPeer(addr, name)
	delete(s.peers, addr)
	if err := s.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: addr.String()}); err != nil {
		return fmt.Errorf("delete neighbor %q (%s): %w", name, addr, err)
	}
	s.log.Info("neighbor removed", "peer", name, "address", addr.String())
	return nil
}

func (s *Speaker) forgetPeer(addr netip.Addr, name string) {
	s.liveMu.Lock()
	delete(s.live, addr.String())
	s.liveMu.Unlock()
	s.metrics.forget(name)
}

func (s *Speaker) renamePeer(addr netip.Addr, from, to string) {
	s.liveMu.Lock()
	if l := s.live[addr.String()]; l != nil {
		l.name = to
		up := 0.0
		if l.state == api.PeerState_ESTABLISHED {
			up = 1
		}
		s.metrics.peerUp.WithLabelValues(to).Set(up)
		s.metrics.peerState.WithLabelValues(to).Set(float64(l.state))
		s.metrics.peerFlaps.WithLabelValues(to).Add(float64(l.flaps))
	}
	s.liveMu.Unlock()
	s.metrics.forget(from)
}

// toAPI is the GoBGP peer for a session. Hold time is always explicit: it
// is what bounds a crashed node's routes. Graceful restart is set only when
// chosen, without RFC 8538 notification support, so a clean stop (CEASE)
// always makes routers drop kglb's routes at once. restarting sets the
// Restart State bit and, through GoBGP, the Forwarding State bit of every
// family (GoBGP sets F exactly when it restarts): kglb restarts that way
// only when its data plane stayed in place (see Options.Restarting).
func (s session) toAPI(name string, restarting bool) *api.Peer {
	p := &api.Peer{
		Conf: &api.PeerConf{
			NeighborAddress: s.address.String(),
			PeerAsn:         s.asn,
			AuthPassword:    s.password,
			Description:     name,
		},
		Timers: &api.Timers{Config: &api.TimersConfig{
			ConnectRetry:      s.connectRetry,
			HoldTime:          s.hold,
			KeepaliveInterval: s.keepalive,
		}},
		Transport: &api.Transport{
			RemotePort:  uint32(s.port),
			PassiveMode: s.passive,
		},
	}
	if s.localAddress.IsValid() {
		p.Transport.LocalAddress = s.localAddress.String()
	}
	if s.multihopTTL > 0 {
		p.EbgpMultihop = &api.EbgpMultihop{Enabled: true, MultihopTtl: uint32(s.multihopTTL)}
	}
	if s.graceful {
		p.GracefulRestart = &api.GracefulRestart{Enabled: true, RestartTime: uint32(s.restartTime), LocalRestarting: restarting}
	}
	for _, f := range s.families() {
		af := &api.AfiSafi{Config: &api.AfiSafiConfig{Family: apiFamily(f), Enabled: true}}
		if s.graceful {
			af.MpGracefulRestart = &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}}
		}
		p.AfiSafis = append(p.AfiSafis, af)
	}
	return p
}

// Apply converges the announced routes to exactly routes: it announces new
// prefixes, re-announces prefixes whose attributes changed (an implicit
// replace: one UPDATE, no withdrawal in between), and withdraws prefixes
// no longer listed, in that order. Called again with the same routes it
// writes nothing. It carries on past a route that fails and returns
// errors.Join of the failures; a prefix listed twice with different
// attributes is an error and its first entry wins. The routes are sent to
// every Established peer whose families include theirs.
func (s *Speaker) Apply(ctx context.Context, routes []Route) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping || s.closed {
		return ErrStopped
	}
	changed, gone, errs := s.diff(routes)
	// The prepend statements for the counts the new routes use, and for
	// those the old ones still carry until they are replaced.
	both := s.routes
	if len(changed) > 0 {
		both = maps.Clone(s.routes)
		for _, c := range changed {
			both[c.route.Prefix] = c.route
		}
	}
	if err := s.syncExport(ctx, s.withPrepends(both)); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, s.write(ctx, changed, gone)...)
	if err := s.syncExport(ctx, s.withPrepends(s.routes)); err != nil {
		errs = append(errs, err)
	}
	if s.deferred {
		// A planned restart: the routes are in the RIB, so the End-of-RIB
		// each neighbor gets after them ends the routers' stale period
		// with nothing lost.
		s.deferred = false
		if err := s.setConfig(ctx, s.cfg); err != nil {
			errs = append(errs, err)
		}
		s.restarting = false
		s.log.Info("planned restart: neighbors connected", "neighbors", len(s.peers), "routes", len(s.routes))
	}
	if n := len(errs); n > 0 {
		s.metrics.applyErrors.Add(float64(n))
	}
	return errors.Join(errs...)
}

// diff is Apply's plan: the routes to announce or re-announce, in the
// order listed, the prefixes to withdraw, sorted, and the routes refused.
// It changes nothing. Called with mu held.
func (s *Speaker) diff(routes []Route) ([]change, []netip.Prefix, []error) {
	var errs []error
	// want maps each prefix listed to its first entry in routes. It is a
	// scratch set, kept between calls and emptied after each, so that an
	// Apply of routes already held allocates nothing.
	want := s.want
	defer clear(want)
	var changed []change
	added := 0
	for i, r := range routes {
		n, err := normalize(r)
		if err != nil {
			errs = append(errs, fmt.Errorf("announce %s: %w", r.Prefix, err))
			continue
		}
		if first, ok := want[n.Prefix]; ok {
			if prev, _ := normalize(routes[first]); !equal(prev, n) {
				errs = append(errs, fmt.Errorf("announce %s: listed twice with different attributes", n.Prefix))
			}
			continue
		}
		want[n.Prefix] = i
		cur, held := s.routes[n.Prefix]
		if !held {
			added++
		}
		if !held || !equal(cur, n) {
			changed = append(changed, change{route: n, replace: held})
		}
	}
	var gone []netip.Prefix
	if len(want)-added < len(s.routes) { // some route held is not wanted
		for p := range s.routes {
			if _, ok := want[p]; !ok {
				gone = append(gone, p)
			}
		}
		slices.SortFunc(gone, comparePrefix)
	}
	return changed, gone, errs
}

// write announces changed, then withdraws gone, until ctx ends. Called
// with mu held.
func (s *Speaker) write(ctx context.Context, changed []change, gone []netip.Prefix) []error {
	var errs []error
	// Per-route lines at Info are state changes; a cold start of thousands
	// of VIPs logs them at Debug under one summary instead.
	verbose := len(changed)+len(gone) <= 100
	for _, c := range changed {
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		if err := s.announce(c.route); err != nil {
			errs = append(errs, err)
			continue
		}
		s.logRoute(verbose, c.verb(), c.route)
	}
	for _, p := range gone {
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		if err := s.withdraw(p); err != nil {
			errs = append(errs, err)
			continue
		}
		s.logRoute(verbose, "route withdrawn", Route{Prefix: p})
	}
	if !verbose {
		s.log.Info("routes converged", "changed", len(changed), "withdrawn", len(gone), "announced", len(s.routes))
	}
	return errs
}

type change struct {
	route   Route
	replace bool
}

func (c change) verb() string {
	if c.replace {
		return "route re-announced"
	}
	return "route announced"
}

func (s *Speaker) logRoute(verbose bool, msg string, r Route) {
	kv := []any{"vip", r.Prefix.String()}
	if msg != "route withdrawn" {
		kv = append(kv, routeLogFields(r)...)
	}
	if verbose {
		s.log.Info(msg, kv...)
	} else {
		s.log.Debug(msg, kv...)
	}
}

func routeLogFields(r Route) []any {
	var kv []any
	if r.NextHop.IsValid() {
		kv = append(kv, "next_hop", r.NextHop.String())
	}
	if r.HasMED {
		kv = append(kv, "med", r.MED)
	}
	if r.HasLocalPref {
		kv = append(kv, "local_pref", r.LocalPref)
	}
	if r.Prepend != 0 {
		kv = append(kv, "prepend", r.Prepend)
	}
	if len(r.Communities) > 0 {
		kv = append(kv, "communities", fmt.Sprint(r.Communities))
	}
	if len(r.LargeCommunities) > 0 {
		kv = append(kv, "large_communities", fmt.Sprint(r.LargeCommunities))
	}
	return kv
}

// announce adds or replaces one normalized route in the RIB. Called with
// mu held.
func (s *Speaker) announce(r Route) error {
	p, err := toPath(r, s.global.asn)
	if err == nil {
		// GoBGP ignores the context of AddPath.
		_, err = s.srv.AddPath(context.Background(), &api.AddPathRequest{Path: p})
	}
	if err != nil {
		return fmt.Errorf("announce %s: %w", r.Prefix, err)
	}
	s.routes[r.Prefix] = owned(r)
	s.metrics.announcements.Inc()
	s.metrics.routes.Set(float64(len(s.routes)))
	return nil
}

// withdraw removes one prefix from the RIB. It always names the prefix:
// a DeletePath without a path would delete every local path. Called with
// mu held.
func (s *Speaker) withdraw(prefix netip.Prefix) error {
	p, err := withdrawPath(prefix)
	if err == nil {
		err = s.srv.DeletePath(context.Background(), &api.DeletePathRequest{Family: p.Family, Path: p})
	}
	if err != nil {
		return fmt.Errorf("withdraw %s: %w", prefix, err)
	}
	delete(s.routes, prefix)
	s.metrics.withdrawals.Inc()
	s.metrics.routes.Set(float64(len(s.routes)))
	return nil
}

// WithdrawAll withdraws every route and makes later Apply and SetConfig
// calls return ErrStopped; the sessions stay up, so routers hear the
// withdrawals and the daemon can wait its hold time before touching the
// data plane and calling Close.
//
// With Config.GracefulShutdown it first re-announces every route with the
// GRACEFUL_SHUTDOWN community (65535:0, RFC 8326), which routers
// configured for it turn into the lowest preference, and waits
// Config.GracefulShutdownWait for traffic to move. If ctx ends during that
// wait, the wait is cut short; the withdrawal itself always happens.
func (s *Speaker) WithdrawAll(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrStopped
	}
	wait, graceful := s.gracefulShutdown()
	s.stopping = true
	var errs []error
	if graceful {
		for _, r := range sortedRoutes(s.routes) {
			if err := s.announce(withCommunity(r, GracefulShutdownCommunity)); err != nil {
				errs = append(errs, err)
			}
		}
		s.log.Info("routes re-announced with the graceful-shutdown community", "routes", len(s.routes), "wait", wait.String())
		// Do not hold mu while waiting: Status and metrics stay readable.
		s.mu.Unlock()
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			s.log.Warn("graceful-shutdown wait cut short", "err", ctx.Err())
		}
		s.mu.Lock()
	}
	defer s.mu.Unlock()
	n := len(s.routes)
	for _, p := range sortedPrefixes(s.routes) {
		if err := s.withdraw(p); err != nil {
			errs = append(errs, err)
		}
	}
	if n > 0 {
		s.log.Info("all routes withdrawn", "routes", n-len(s.routes))
	}
	return errors.Join(errs...)
}

// ShutdownWait is how long WithdrawAll will wait with the routes
// re-announced with GRACEFUL_SHUTDOWN: Config.GracefulShutdownWait of the
// config the speaker holds, when that sets GracefulShutdown and routes are
// announced; 0 otherwise, and once WithdrawAll or Close has begun. A stop
// counts it in its deadline. It is the speaker's own, not the running
// config's: a reload that removes the bgp block leaves the speaker the
// block it had (the daemon hands it none), and a SetConfig that fails
// before it takes the new config (a server restart that cannot stop the
// old one) leaves the old wait.
func (s *Speaker) ShutdownWait() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	wait, _ := s.gracefulShutdown()
	return wait
}

// gracefulShutdown reports whether WithdrawAll re-announces the routes with
// GRACEFUL_SHUTDOWN first, and how long it then waits: the one rule of
// WithdrawAll and ShutdownWait. Called with mu held.
func (s *Speaker) gracefulShutdown() (time.Duration, bool) {
	if s.stopping || s.closed || !s.cfg.GracefulShutdown || len(s.routes) == 0 {
		return 0, false
	}
	return s.cfg.GracefulShutdownWait, true
}

// Close ends every session with Cease / Administrative Shutdown and
// ShutdownMessage and closes the listeners: what a stop says. Routers drop
// whatever kglb still announced (unless they run graceful restart with
// RFC 8538, which kglb does not negotiate). Call WithdrawAll and wait the
// hold time first for a clean drain. GoBGP's server loop cannot be stopped
// in v3: the process keeps one idle goroutine, and the Speaker cannot be
// used again.
func (s *Speaker) Close() error { return s.close(false) }

// CloseForRestart is Close for a planned restart without graceful
// restart: the sessions end with their TCP connections closed, without a
// NOTIFICATION, as a reload's reset does (closeQuietly). The routes were
// withdrawn before, so the router loses nothing it would keep; a router
// that counts notifications as errors (OpenBGPD) then takes the new
// process's session at once, however many restarts come in a row.
func (s *Speaker) CloseForRestart() error { return s.close(true) }

func (s *Speaker) close(quiet bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.stopping = true
	if s.running && s.deferred {
		s.dropPlannedRestart(context.Background())
	}
	// The administrative shutdown first, while the watcher still reports
	// the sessions going down; then cancel the watcher before StopBgp:
	// its cleanup runs through the server loop.
	if s.running {
		if quiet {
			for _, a := range sortedAddrs(s.peers) {
				s.closeQuietly(context.Background(), s.peers[a], ShutdownMessage)
			}
		} else {
			s.shutdownPeers(context.Background(), sortedAddrs(s.peers), ShutdownMessage)
		}
	}
	if s.stopWatch != nil {
		s.stopWatch()
	}
	err := s.stop(context.Background())
	s.routes = map[netip.Prefix]Route{}
	s.metrics.routes.Set(0)
	for addr, p := range s.peers {
		s.forgetPeer(addr, p.name)
	}
	s.peers = map[netip.Addr]peer{}
	s.log.Info("bgp stopped")
	return err
}

// dropPlannedRestart is close's first step for a speaker started after a
// planned restart (Options.Restarting) that stops before its first Apply:
// no neighbor is configured yet, and the routers running graceful restart
// still hold the previous process's routes as stale. Left alone, they
// would keep them for the whole restart time, towards a node that has
// stopped. It adds the neighbors now, not restarting (so without the
// Forwarding State bit) and with what the RIB holds (nothing, or what
// WithdrawAll left), so that each router drops its stale routes as the
// session comes up, and waits up to ten seconds for the graceful-restart
// sessions to do so; the shutdown that follows ends them. Called with mu
// held.
func (s *Speaker) dropPlannedRestart(ctx context.Context) {
	s.deferred, s.restarting = false, false
	if err := s.setConfig(ctx, s.cfg); err != nil {
		s.log.Warn("planned restart: connecting the neighbors to end it failed", "err", err)
	}
	var waiting []string
	for _, a := range sortedAddrs(s.peers) {
		if s.peers[a].session.graceful {
			waiting = append(waiting, a.String())
		}
	}
	s.log.Info("stopping before the first announcement after a planned restart: ending the routers' graceful restart",
		"neighbors", len(waiting))
	deadline := time.Now().Add(10 * time.Second)
	for len(waiting) > 0 && time.Now().Before(deadline) {
		s.liveMu.Lock()
		waiting = slices.DeleteFunc(waiting, func(a string) bool {
			l := s.live[a]
			return l != nil && l.state == api.PeerState_ESTABLISHED
		})
		s.liveMu.Unlock()
		if len(waiting) > 0 {
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// Abandon ends the speaker for a planned restart with graceful restart:
// it withdraws nothing and sends no NOTIFICATION. The caller exits right
// after, the kernel closes the TCP sessions, and each router that
// negotiated graceful restart keeps kglb's routes as stale for the restart
// time while the next process starts with Options.Restarting. Routers
// without graceful restart drop the routes when the session closes, as
// after a crash.
func (s *Speaker) Abandon() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopping, s.closed = true, true
	if s.stopWatch != nil {
		s.stopWatch()
	}
	s.log.Info("bgp left for a planned restart: routes stay with graceful-restart routers", "routes", len(s.routes))
}

// shutdownPeers ends the sessions of addrs with Cease / Administrative
// Shutdown carrying msg (RFC 4486, RFC 9003), the notification routers
// expect from an operator's action, and waits up to three seconds for
// them to leave Established, so that a DeletePeer or StopBgp after it
// does not send a second notification (Peer De-configured) that strict
// routers count as an error. Called with mu held.
func (s *Speaker) shutdownPeers(ctx context.Context, addrs []netip.Addr, msg string) {
	var up []string
	for _, a := range addrs {
		if err := s.srv.DisablePeer(ctx, &api.DisablePeerRequest{Address: a.String(), Communication: msg}); err != nil {
			s.log.Warn("administrative shutdown", "address", a.String(), "err", err)
			continue
		}
		up = append(up, a.String())
	}
	deadline := time.Now().Add(3 * time.Second)
	for len(up) > 0 && time.Now().Before(deadline) {
		s.liveMu.Lock()
		up = slices.DeleteFunc(up, func(a string) bool {
			l := s.live[a]
			return l == nil || l.state != api.PeerState_ESTABLISHED
		})
		s.liveMu.Unlock()
		if len(up) > 0 {
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// closeQuietly ends p's session for a reset by a reload: it closes the
// TCP connection without a NOTIFICATION, as a planned restart does, and
// the caller re-creates the neighbor. A router with graceful restart keeps
// the routes as stale until the new session is up (whose OPEN does not
// claim preserved forwarding, so the router drops them then and takes them
// again from the UPDATEs that follow at once); one without drops them, as
// it would at a notification. Routers that count notifications as errors and hold
// off reconnects after two (OpenBGPD) then accept the new session at
// once. If the process's descriptors cannot be read or a connection not
// shut, it falls back to the administrative shutdown with msg; with no
// connection open (the session is not up) there is nothing to close.
// Called with mu held.
func (s *Speaker) closeQuietly(ctx context.Context, p peer, msg string) {
	n, err := dropSessions(p.session.address, int(p.session.port), s.global.port)
	if err != nil {
		s.log.Warn("closing the session without a notification failed; sending an administrative shutdown",
			"peer", p.name, "err", err)
		s.shutdownPeers(ctx, []netip.Addr{p.session.address}, msg)
		return
	}
	s.log.Debug("session closed without a notification", "peer", p.name, "connections", n)
}

// Shutdown is WithdrawAll followed by Close, for callers with no data
// plane to order in between.
func (s *Speaker) Shutdown(ctx context.Context) error {
	err := s.WithdrawAll(ctx)
	if errors.Is(err, ErrStopped) {
		err = nil
	}
	return errors.Join(err, s.Close())
}

// onEvent handles GoBGP's peer events. It runs on GoBGP's watcher
// goroutine and must not block.
func (s *Speaker) onEvent(r *api.WatchEventResponse) {
	pe := r.GetPeer()
	if pe == nil || pe.GetType() != api.WatchEventResponse_PeerEvent_STATE {
		return
	}
	addr := pe.GetPeer().GetState().GetNeighborAddress()
	st := pe.GetPeer().GetState().GetSessionState()
	s.liveMu.Lock()
	defer s.liveMu.Unlock()
	l := s.live[addr]
	if l == nil || l.state == st {
		return
	}
	prev := l.state
	l.state = st
	s.metrics.peerState.WithLabelValues(l.name).Set(float64(st))
	switch {
	case st == api.PeerState_ESTABLISHED:
		l.since = time.Now()
		s.metrics.peerUp.WithLabelValues(l.name).Set(1)
		s.log.Info("bgp session established", "peer", l.name, "address", addr)
	case prev == api.PeerState_ESTABLISHED:
		l.flaps++
		l.since = time.Time{}
		s.metrics.peerUp.WithLabelValues(l.name).Set(0)
		s.metrics.peerFlaps.WithLabelValues(l.name).Inc()
		kv := []any{"peer", l.name, "address", addr, "state", stateName(st)}
		if l.lastError != "" {
			kv = append(kv, "err", l.lastError)
		}
		s.log.Warn("bgp session down", kv...)
	default:
		s.log.Debug("bgp session state", "peer", l.name, "address", addr, "state", stateName(st))
	}
}

// notePeerError records the last problem GoBGP logged for a peer.
func (s *Speaker) notePeerError(addr, msg string) {
	s.liveMu.Lock()
	defer s.liveMu.Unlock()
	if l := s.live[addr]; l != nil {
		l.lastError = msg
		l.lastErrorAt = time.Now()
	}
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

func sortedPrefixes(m map[netip.Prefix]Route) []netip.Prefix {
	ps := make([]netip.Prefix, 0, len(m))
	for p := range m {
		ps = append(ps, p)
	}
	slices.SortFunc(ps, comparePrefix)
	return ps
}

func sortedRoutes(m map[netip.Prefix]Route) []Route {
	rs := make([]Route, 0, len(m))
	for _, p := range sortedPrefixes(m) {
		rs = append(rs, m[p])
	}
	return rs
}

func sortedAddrs(m map[netip.Addr]peer) []netip.Addr {
	as := make([]netip.Addr, 0, len(m))
	for a := range m {
		as = append(as, a)
	}
	slices.SortFunc(as, netip.Addr.Compare)
	return as
}
