package bgp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/kglb/kglb/config"
	api "github.com/osrg/gobgp/v3/api"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

const (
	routerASN = 65000
	localASN  = 65001
)

// syncBuffer is a log sink safe for GoBGP's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// rig is a speaker peered with an in-process router on loopback.
type rig struct {
	router *testRouter
	s      *Speaker
	local  netip.Addr // the speaker's address
	cfg    Config
	reg    *prometheus.Registry
	logs   *syncBuffer
}

type rigOption func(*rigSetup)

type rigSetup struct {
	routerASN uint32
	neighbor  Neighbor
	cfg       Config
	families  []*api.Family
	password  string
}

func withIBGP() rigOption {
	return func(r *rigSetup) { r.routerASN = localASN; r.neighbor.ASN = localASN }
}

func withBothFamilies() rigOption {
	return func(r *rigSetup) {
		r.neighbor.Families = []Family{IPv4Unicast, IPv6Unicast}
		r.families = []*api.Family{apiFamily(IPv4Unicast), apiFamily(IPv6Unicast)}
	}
}

func withGracefulShutdown(wait time.Duration) rigOption {
	return func(r *rigSetup) { r.cfg.GracefulShutdown, r.cfg.GracefulShutdownWait = true, wait }
}

func withPassword(t testing.TB, pw string) rigOption {
	return func(r *rigSetup) {
		f := filepath.Join(t.TempDir(), "password")
		if err := os.WriteFile(f, []byte(pw+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		r.neighbor.PasswordFile = f
		r.password = pw
	}
}

// newRig starts a router on 127.0.0.1 and a speaker on a fresh loopback
// address that connects to it, and waits for the session.
func newRig(t testing.TB, opts ...rigOption) *rig {
	t.Helper()
	routerAddr := netip.MustParseAddr("127.0.0.1")
	local := nextLoopback()
	setup := rigSetup{routerASN: routerASN}
	setup.neighbor = Neighbor{Name: "tor1", Address: routerAddr, ASN: routerASN, LocalAddress: local,
		HoldTime: 9 * time.Second, ConnectRetry: time.Second}
	setup.cfg = Config{ASN: localASN, RouterID: netip.MustParseAddr("10.255.255.2")}
	for _, o := range opts {
		o(&setup)
	}
	router := newRouter(t, setup.routerASN, routerAddr)
	router.addNeighbor(t, local, localASN, 0, setup.password, setup.families...)
	setup.neighbor.Port = uint16(router.port)
	cfg := setup.cfg
	cfg.Neighbors = []Neighbor{filled(setup.neighbor)}
	logs := &syncBuffer{}
	reg := prometheus.NewRegistry()
	s, err := New(context.Background(), cfg, Options{
		Logger:     hclog.New(&hclog.LoggerOptions{Name: "bgp", Level: hclog.Trace, Output: logs}),
		Registerer: reg,
	})
	// The loopback rig has no IPv6 address to derive a next hop for IPv6
	// over its IPv4 session: the speaker logs it and runs
	// (TestNoNextHopIsNotAnError).
	if err != nil {
		t.Fatalf("new speaker: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	rg := &rig{router: router, s: s, local: local, cfg: cfg, reg: reg, logs: logs}
	router.waitEstablished(t, local)
	return rg
}

func (r *rig) apply(t testing.TB, routes ...Route) {
	t.Helper()
	if err := r.s.Apply(context.Background(), routes); err != nil {
		t.Fatalf("apply: %v", err)
	}
}

// eventually polls cond until it holds; the deadline is a guard against
// hanging, not an assertion on speed.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func addr(s string) netip.Addr  { return netip.MustParseAddr(s) }

func TestAnnounceAttributes(t *testing.T) {
	r := newRig(t, withBothFamilies())
	self := r.local.String()
	tests := []struct {
		name  string
		route Route
		want  string
	}{
		{"next hop self", Route{Prefix: pfx("203.0.113.1/32")},
			"203.0.113.1/32 via " + self + " as-path [65001] origin 0"},
		{"explicit next hop", Route{Prefix: pfx("203.0.113.2/32"), NextHop: addr("192.0.2.7")},
			"203.0.113.2/32 via 192.0.2.7 as-path [65001] origin 0"},
		{"communities sorted and deduplicated", Route{Prefix: pfx("203.0.113.3/32"),
			Communities: []Community{NewCommunity(65001, 200), NewCommunity(65001, 100), NewCommunity(65001, 200)}},
			"203.0.113.3/32 via " + self + " as-path [65001] origin 0 communities [65001:100 65001:200]"},
		{"large communities", Route{Prefix: pfx("203.0.113.4/32"),
			LargeCommunities: []LargeCommunity{{65001, 2, 3}, {65001, 1, 2}}},
			"203.0.113.4/32 via " + self + " as-path [65001] origin 0 large [65001:1:2 65001:2:3]"},
		{"med zero is sent", Route{Prefix: pfx("203.0.113.5/32"), HasMED: true},
			"203.0.113.5/32 via " + self + " as-path [65001] origin 0 med 0"},
		{"med", Route{Prefix: pfx("203.0.113.6/32"), MED: 50, HasMED: true},
			"203.0.113.6/32 via " + self + " as-path [65001] origin 0 med 50"},
		{"prepend repeats the own asn", Route{Prefix: pfx("203.0.113.7/32"), Prepend: 2},
			"203.0.113.7/32 via " + self + " as-path [65001 65001 65001] origin 0"},
		{"local pref is not sent over ebgp", Route{Prefix: pfx("203.0.113.8/32"), LocalPref: 200},
			"203.0.113.8/32 via " + self + " as-path [65001] origin 0"},
		{"unmasked prefix is masked", Route{Prefix: pfx("198.51.100.77/24")},
			"198.51.100.0/24 via " + self + " as-path [65001] origin 0"},
		{"ipv6 over the ipv4 session with an explicit next hop", Route{Prefix: pfx("2001:db8:ff::1/128"), NextHop: addr("2001:db8::7")},
			"2001:db8:ff::1/128 via 2001:db8::7 as-path [65001] origin 0"},
		{"ipv6 over the ipv4 session, next hop self, no ipv6 address to derive one: not sent, never ipv4-mapped",
			Route{Prefix: pfx("2001:db8:ff::2/128")}, ""},
		{"everything", Route{Prefix: pfx("203.0.113.9/32"), Communities: []Community{NewCommunity(65001, 1)},
			LargeCommunities: []LargeCommunity{{65001, 9, 9}}, MED: 10, HasMED: true, Prepend: 1},
			"203.0.113.9/32 via " + self + " as-path [65001 65001] origin 0 med 10 communities [65001:1] large [65001:9:9]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r.apply(t, tt.route)
			r.router.waitRIB(t, tt.want)
		})
	}
}

func TestLocalPrefOverIBGP(t *testing.T) {
	r := newRig(t, withIBGP())
	r.apply(t, Route{Prefix: pfx("203.0.113.1/32"), LocalPref: 200, MED: 5, HasMED: true},
		Route{Prefix: pfx("203.0.113.2/32")})
	r.router.waitRIB(t, strings.Join([]string{
		"203.0.113.1/32 via " + r.local.String() + " as-path [] origin 0 med 5 local-pref 200",
		"203.0.113.2/32 via " + r.local.String() + " as-path [] origin 0 local-pref 100",
	}, "\n"))
}

// TestApplyStates runs a list of desired states in order and in shuffled
// order: whatever the router held before, after Apply it holds exactly
// the new state, and an Apply of the same state again sends nothing and
// leaves the session alone (the engine hands the routes on every pass).
func TestApplyStates(t *testing.T) {
	r := newRig(t)
	self := r.local.String()
	v := func(last byte, extra ...func(*Route)) Route {
		rt := Route{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{203, 0, 113, last}), 32)}
		for _, e := range extra {
			e(&rt)
		}
		return rt
	}
	med := func(m uint32) func(*Route) { return func(r *Route) { r.MED, r.HasMED = m, true } }
	prepend := func(n int) func(*Route) { return func(r *Route) { r.Prepend = n } }
	comm := func(c uint16) func(*Route) {
		return func(r *Route) { r.Communities = append(r.Communities, NewCommunity(localASN, c)) }
	}
	states := []struct {
		name   string
		routes []Route
		want   string
	}{
		{"one", []Route{v(1)}, "203.0.113.1/32 via " + self + " as-path [65001] origin 0"},
		{"three", []Route{v(1), v(2), v(3)}, strings.Join([]string{
			"203.0.113.1/32 via " + self + " as-path [65001] origin 0",
			"203.0.113.2/32 via " + self + " as-path [65001] origin 0",
			"203.0.113.3/32 via " + self + " as-path [65001] origin 0"}, "\n")},
		{"degraded tier", []Route{v(1, med(100), prepend(3)), v(2)}, strings.Join([]string{
			"203.0.113.1/32 via " + self + " as-path [65001 65001 65001 65001] origin 0 med 100",
			"203.0.113.2/32 via " + self + " as-path [65001] origin 0"}, "\n")},
		{"communities change", []Route{v(2, comm(7)), v(3, comm(8), comm(9))}, strings.Join([]string{
			"203.0.113.2/32 via " + self + " as-path [65001] origin 0 communities [65001:7]",
			"203.0.113.3/32 via " + self + " as-path [65001] origin 0 communities [65001:8 65001:9]"}, "\n")},
		{"none", nil, ""},
	}
	run := func(t *testing.T, order []int) {
		for _, i := range order {
			st := states[i]
			r.apply(t, st.routes...)
			r.router.waitRIB(t, st.want)
			_, before := r.router.sessionState(r.local)
			ann := testutil.ToFloat64(r.s.metrics.announcements)
			wd := testutil.ToFloat64(r.s.metrics.withdrawals)
			// The same state again, in another order: no writes.
			again := slices.Clone(st.routes)
			slices.Reverse(again)
			r.apply(t, again...)
			if got := testutil.ToFloat64(r.s.metrics.announcements); got != ann {
				t.Errorf("state %q applied twice: announcements %v -> %v", st.name, ann, got)
			}
			if got := testutil.ToFloat64(r.s.metrics.withdrawals); got != wd {
				t.Errorf("state %q applied twice: withdrawals %v -> %v", st.name, wd, got)
			}
			// Every UPDATE of the first Apply has arrived (the RIB
			// matched); a no-op Apply must not have sent another.
			if state, after := r.router.sessionState(r.local); after != before || state != api.PeerState_ESTABLISHED {
				t.Errorf("state %q applied twice: router received %d more UPDATEs, session %v", st.name, after-before, state)
			}
		}
	}
	all := make([]int, len(states))
	for i := range all {
		all[i] = i
	}
	t.Run("in order", func(t *testing.T) { run(t, all) })
	for seed := range uint64(3) {
		order := slices.Clone(all)
		rand.New(rand.NewPCG(seed, 1)).Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		t.Run(fmt.Sprintf("shuffled %v", order), func(t *testing.T) { run(t, order) })
	}
}

func TestApplyErrors(t *testing.T) {
	r := newRig(t)
	tests := []struct {
		name   string
		routes []Route
		want   string // error substring
		rib    string
	}{
		{"invalid prefix", []Route{{}, {Prefix: pfx("203.0.113.1/32")}}, "invalid prefix",
			"203.0.113.1/32 via " + r.local.String() + " as-path [65001] origin 0"},
		{"next hop of another family", []Route{{Prefix: pfx("203.0.113.2/32"), NextHop: addr("2001:db8::1")}},
			"next hop 2001:db8::1 is of another family", ""},
		{"conflicting duplicates keep the first", []Route{
			{Prefix: pfx("203.0.113.3/32"), MED: 1, HasMED: true},
			{Prefix: pfx("203.0.113.3/32"), MED: 2, HasMED: true}},
			"listed twice", "203.0.113.3/32 via " + r.local.String() + " as-path [65001] origin 0 med 1"},
		{"prepend too long", []Route{{Prefix: pfx("203.0.113.4/32"), Prepend: MaxPrepend + 1}}, "prepend", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := r.s.Apply(context.Background(), tt.routes)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Apply error = %v, want it to contain %q", err, tt.want)
			}
			r.router.waitRIB(t, tt.rib)
		})
	}
}

func TestWithdrawAllStopsApply(t *testing.T) {
	r := newRig(t)
	r.apply(t, Route{Prefix: pfx("203.0.113.1/32")}, Route{Prefix: pfx("2001:db8:ff::1/128"), NextHop: addr("2001:db8::1")})
	r.router.waitRIB(t, "203.0.113.1/32 via "+r.local.String()+" as-path [65001] origin 0")
	if err := r.s.WithdrawAll(context.Background()); err != nil {
		t.Fatalf("WithdrawAll: %v", err)
	}
	r.router.waitRIB(t, "")
	if st, _ := r.router.sessionState(r.local); st != api.PeerState_ESTABLISHED {
		t.Errorf("session after WithdrawAll is %s, want it still established until Close", st)
	}
	if got := len(r.s.Status().Routes); got != 0 {
		t.Errorf("status lists %d routes after WithdrawAll", got)
	}
	if err := r.s.Apply(context.Background(), []Route{{Prefix: pfx("203.0.113.1/32")}}); !errors.Is(err, ErrStopped) {
		t.Errorf("Apply after WithdrawAll = %v, want ErrStopped", err)
	}
	if err := r.s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	r.router.wait(t, "session down", func(map[netip.Prefix]gotRoute) bool {
		st, _ := r.router.sessionState(r.local)
		return st != api.PeerState_ESTABLISHED
	})
}

// TestShutdownOrder checks what the router sees during Shutdown with
// graceful shutdown: every route again with 65535:0, then the
// withdrawals, and only then the session going down.
func TestShutdownOrder(t *testing.T) {
	r := newRig(t, withGracefulShutdown(time.Hour))
	routes := []Route{
		{Prefix: pfx("203.0.113.1/32"), Communities: []Community{NewCommunity(localASN, 1)}},
		{Prefix: pfx("203.0.113.2/32"), MED: 7, HasMED: true},
	}
	r.apply(t, routes...)
	r.router.waitRIB(t, strings.Join([]string{
		"203.0.113.1/32 via " + r.local.String() + " as-path [65001] origin 0 communities [65001:1]",
		"203.0.113.2/32 via " + r.local.String() + " as-path [65001] origin 0 med 7",
	}, "\n"))
	mark := len(r.router.eventLog())

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.s.Shutdown(ctx) }()
	// The hour-long wait is cut short by the context once the router has
	// seen the graceful-shutdown community.
	r.router.waitRIB(t, strings.Join([]string{
		"203.0.113.1/32 via " + r.local.String() + " as-path [65001] origin 0 communities [65001:1 65535:0]",
		"203.0.113.2/32 via " + r.local.String() + " as-path [65001] origin 0 med 7 communities [65535:0]",
	}, "\n"))
	if st := r.s.Status(); !st.Stopping {
		t.Errorf("status during the graceful-shutdown wait: Stopping = false")
	}
	if err := r.s.Apply(context.Background(), routes); !errors.Is(err, ErrStopped) {
		t.Errorf("Apply during shutdown = %v, want ErrStopped", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	down := "peer " + r.local.String() + " idle"
	r.router.wait(t, "session down", func(map[netip.Prefix]gotRoute) bool {
		return slices.Contains(r.router.eventLog()[mark:], down)
	})
	var got []string
	for _, e := range r.router.eventLog()[mark:] {
		switch {
		case strings.Contains(e, "65535:0"):
			e = "graceful-shutdown " + strings.Fields(e)[1]
		case strings.HasPrefix(e, "peer "):
			if strings.HasSuffix(e, " established") {
				continue
			}
			e = "session down"
		}
		if len(got) == 0 || got[len(got)-1] != e {
			got = append(got, e)
		}
	}
	want := []string{
		"graceful-shutdown 203.0.113.1/32", "graceful-shutdown 203.0.113.2/32",
		"withdraw 203.0.113.1/32", "withdraw 203.0.113.2/32",
		"session down",
	}
	if !slices.Equal(got, want) {
		t.Errorf("router saw\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestShutdownWait: ShutdownWait is the wait WithdrawAll will do, from the
// config the speaker holds and the routes it announces, through a list of
// steps in order; a stop counts it in its deadline.
func TestShutdownWait(t *testing.T) {
	base := Config{ASN: localASN, RouterID: addr("10.255.255.2")}
	graceful := func(wait time.Duration) Config {
		c := base
		c.GracefulShutdown, c.GracefulShutdownWait = true, wait
		return c
	}
	s, err := New(context.Background(), graceful(10*time.Minute), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	route := Route{Prefix: pfx("203.0.113.1/32")}
	for _, step := range []struct {
		name string
		do   func() error
		want time.Duration
	}{
		{"nothing announced: nothing to wait for", func() error { return nil }, 0},
		{"a route announced", func() error { return s.Apply(context.Background(), []Route{route}) }, 10 * time.Minute},
		{"a shorter wait set", func() error { return s.SetConfig(context.Background(), graceful(time.Minute)) }, time.Minute},
		{"graceful shutdown turned off", func() error { return s.SetConfig(context.Background(), base) }, 0},
		{"turned on again", func() error { return s.SetConfig(context.Background(), graceful(3*time.Minute)) }, 3 * time.Minute},
		{"every route withdrawn", func() error { return s.Apply(context.Background(), nil) }, 0},
		{"announced again", func() error { return s.Apply(context.Background(), []Route{route}) }, 3 * time.Minute},
		{"withdrawn at a stop, its wait cut short", func() error {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return s.WithdrawAll(ctx)
		}, 0},
	} {
		if err := step.do(); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		if got := s.ShutdownWait(); got != step.want {
			t.Errorf("%s: ShutdownWait = %s, want %s", step.name, got, step.want)
		}
	}
}

func TestSetConfigDiff(t *testing.T) {
	r := newRig(t)
	r.apply(t, Route{Prefix: pfx("203.0.113.1/32")})
	r.router.waitRIB(t, "203.0.113.1/32 via "+r.local.String()+" as-path [65001] origin 0")

	// A second router on another loopback address.
	r2addr := netip.MustParseAddr("127.0.0.3")
	r2 := newRouter(t, 65002, r2addr)
	r2.addNeighbor(t, r.local, localASN, 0, "")
	tor2 := filled(Neighbor{Name: "tor2", Address: r2addr, ASN: 65002, Port: uint16(r2.port), LocalAddress: r.local})
	tor1 := r.cfg.Neighbors[0]

	set := func(t *testing.T, ns ...Neighbor) {
		t.Helper()
		cfg := r.cfg
		cfg.Neighbors = ns
		if err := r.s.SetConfig(context.Background(), cfg); err != nil {
			t.Fatalf("SetConfig: %v", err)
		}
	}
	flaps := func(name string) float64 { return testutil.ToFloat64(r.s.metrics.peerFlaps.WithLabelValues(name)) }

	t.Run("add a neighbor", func(t *testing.T) {
		set(t, tor1, tor2)
		r2.waitEstablished(t, r.local)
		eventually(t, "the speaker to see both sessions", func() bool {
			st := r.s.Status()
			return len(st.Peers) == 2 && st.Peers[0].Established && st.Peers[1].Established
		})
		// The new peer gets the routes already announced.
		r2.waitRIB(t, "203.0.113.1/32 via "+r.local.String()+" as-path [65001] origin 0")
	})
	t.Run("unchanged config writes nothing", func(t *testing.T) {
		_, before := r.router.sessionState(r.local)
		set(t, tor2, tor1)
		if _, after := r.router.sessionState(r.local); after != before {
			t.Errorf("router received %d UPDATEs", after-before)
		}
		if f := flaps("tor1") + flaps("tor2"); f != 0 {
			t.Errorf("flaps = %v, want 0", f)
		}
	})
	t.Run("rename keeps the session", func(t *testing.T) {
		renamed := tor2
		renamed.Name = "tor2-new"
		set(t, tor1, renamed)
		st := r.s.Status()
		if len(st.Peers) != 2 || st.Peers[1].Name != "tor2-new" || !st.Peers[1].Established {
			t.Errorf("status peers after rename: %+v", st.Peers)
		}
		tor2 = renamed
	})
	t.Run("changed hold time resets the session", func(t *testing.T) {
		changed := tor1
		changed.HoldTime = 12 * time.Second
		mark := len(r.router.eventLog())
		set(t, changed, tor2)
		r.router.wait(t, "session reset", func(map[netip.Prefix]gotRoute) bool {
			for _, e := range r.router.eventLog()[mark:] {
				if e == "peer "+r.local.String()+" idle" {
					return true
				}
			}
			return false
		})
		r.router.waitEstablished(t, r.local)
		r.router.waitRIB(t, "203.0.113.1/32 via "+r.local.String()+" as-path [65001] origin 0")
		var hold uint64
		r.router.srv.ListPeer(context.Background(), &api.ListPeerRequest{Address: r.local.String()}, func(p *api.Peer) {
			hold = p.GetTimers().GetState().GetNegotiatedHoldTime()
		})
		if hold != 9 { // the router proposes 9, the lower value wins
			t.Errorf("negotiated hold time %d", hold)
		}
		tor1 = changed
	})
	t.Run("remove a neighbor", func(t *testing.T) {
		set(t, tor2)
		r.router.wait(t, "session down", func(map[netip.Prefix]gotRoute) bool {
			st, _ := r.router.sessionState(r.local)
			return st != api.PeerState_ESTABLISHED
		})
		r.router.waitRIB(t, "")
		st := r.s.Status()
		if len(st.Peers) != 1 || st.Peers[0].Name != "tor2-new" {
			t.Errorf("status peers after removal: %+v", st.Peers)
		}
		if n, err := testutil.GatherAndCount(r.reg, "kglb_bgp_peer_up"); err != nil || n != 1 {
			t.Errorf("kglb_bgp_peer_up series = %d (%v), want 1", n, err)
		}
	})
	t.Run("bad password file keeps the others", func(t *testing.T) {
		bad := tor1
		bad.PasswordFile = filepath.Join(t.TempDir(), "missing")
		cfg := r.cfg
		cfg.Neighbors = []Neighbor{bad, tor2}
		err := r.s.SetConfig(context.Background(), cfg)
		if err == nil || !strings.Contains(err.Error(), "read password file") {
			t.Fatalf("SetConfig error = %v, want a password file error", err)
		}
		if st := r.s.Status(); len(st.Peers) != 1 || !st.Peers[0].Established {
			t.Errorf("status peers: %+v", st.Peers)
		}
	})
}

func TestPassiveNeighbor(t *testing.T) {
	routerAddr := netip.MustParseAddr("127.0.0.1")
	local := nextLoopback()
	router := newRouter(t, routerASN, routerAddr)
	listen := freePort(t, local)
	router.addNeighbor(t, local, localASN, listen, "")
	s, err := New(context.Background(), Config{ASN: localASN, RouterID: addr("10.255.255.2"),
		ListenPort: listen, ListenAddresses: []netip.Addr{local},
		Neighbors: []Neighbor{filled(Neighbor{Address: routerAddr, ASN: routerASN, Passive: true})},
	}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.Apply(context.Background(), []Route{{Prefix: pfx("203.0.113.1/32")}})
	router.waitRIB(t, "203.0.113.1/32 via "+local.String()+" as-path [65001] origin 0")

	// Without a listener a passive neighbor is a config error.
	err = s.SetConfig(context.Background(), Config{ASN: localASN, RouterID: addr("10.255.255.2"),
		Neighbors: []Neighbor{filled(Neighbor{Address: addr("127.0.0.9"), ASN: routerASN, Passive: true})}})
	if err == nil || !strings.Contains(err.Error(), "passive neighbor needs a listen port") {
		t.Errorf("SetConfig error = %v", err)
	}
}

func TestGlobalChangeRestarts(t *testing.T) {
	r := newRig(t, withIBGP())
	r.apply(t, Route{Prefix: pfx("203.0.113.1/32"), LocalPref: 150})
	r.router.waitRIB(t, "203.0.113.1/32 via "+r.local.String()+" as-path [] origin 0 local-pref 150")
	cfg := r.cfg
	cfg.RouterID = addr("10.255.255.3")
	if err := r.s.SetConfig(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	r.router.wait(t, "router id change", func(map[netip.Prefix]gotRoute) bool {
		var id string
		r.router.srv.ListPeer(context.Background(), &api.ListPeerRequest{Address: r.local.String()}, func(p *api.Peer) {
			if p.GetState().GetSessionState() == api.PeerState_ESTABLISHED {
				id = p.GetState().GetRouterId()
			}
		})
		return id == "10.255.255.3"
	})
	r.router.waitRIB(t, "203.0.113.1/32 via "+r.local.String()+" as-path [] origin 0 local-pref 150")
	if st := r.s.Status(); st.RouterID != cfg.RouterID || len(st.Routes) != 1 {
		t.Errorf("status after restart: %+v", st)
	}
}

func TestPasswordNeverLogged(t *testing.T) {
	const pw = "s3cret-md5-key"
	r := newRig(t, withPassword(t, pw))
	r.apply(t, Route{Prefix: pfx("203.0.113.1/32")})
	r.router.waitRIB(t, "203.0.113.1/32 via "+r.local.String()+" as-path [65001] origin 0")
	eventually(t, "the speaker to see the session", func() bool { return r.s.Status().Peers[0].Established })
	st := fmt.Sprintf("%+v", r.s.Status())
	if strings.Contains(r.logs.String(), pw) || strings.Contains(st, pw) {
		t.Errorf("the password appears in the logs or status")
	}
	if !strings.Contains(r.logs.String(), "bgp session established") {
		t.Errorf("logs lack the session state change:\n%s", r.logs.String())
	}
}

func TestStatusAndMetrics(t *testing.T) {
	r := newRig(t)
	r.apply(t, Route{Prefix: pfx("203.0.113.1/32")}, Route{Prefix: pfx("203.0.113.2/32")})
	r.router.wait(t, "two routes", func(rib map[netip.Prefix]gotRoute) bool { return len(rib) == 2 })
	eventually(t, "the speaker to see the session", func() bool { return r.s.Status().Peers[0].Established })
	st := r.s.Status()
	if len(st.Peers) != 1 {
		t.Fatalf("peers: %+v", st.Peers)
	}
	p := st.Peers[0]
	if p.Name != "tor1" || p.State != "established" || !p.Established || p.PrefixesSent != 2 ||
		p.UpdatesSent == 0 || p.Since.IsZero() || p.ASN != routerASN {
		t.Errorf("peer status: %+v", p)
	}
	if len(st.Routes) != 2 || st.Routes[0].Prefix != pfx("203.0.113.1/32") {
		t.Errorf("routes: %+v", st.Routes)
	}
	want := `
# HELP kglb_bgp_peer_up 1 while the BGP session with the peer is Established, else 0.
# TYPE kglb_bgp_peer_up gauge
kglb_bgp_peer_up{peer="tor1"} 1
# HELP kglb_bgp_routes_announced Prefixes kglb currently announces (in its RIB, sent to every Established peer).
# TYPE kglb_bgp_routes_announced gauge
kglb_bgp_routes_announced 2
# HELP kglb_bgp_peer_prefixes_advertised Prefixes kglb currently advertises to the peer.
# TYPE kglb_bgp_peer_prefixes_advertised gauge
kglb_bgp_peer_prefixes_advertised{peer="tor1"} 2
`
	if err := testutil.GatherAndCompare(r.reg, strings.NewReader(want),
		"kglb_bgp_peer_up", "kglb_bgp_routes_announced", "kglb_bgp_peer_prefixes_advertised"); err != nil {
		t.Error(err)
	}

	// The router drops the session: a flap with a reason.
	r.router.srv.ShutdownPeer(context.Background(), &api.ShutdownPeerRequest{Address: r.local.String(), Communication: "maintenance"})
	eventually(t, "the speaker to count the flap", func() bool {
		return testutil.ToFloat64(r.s.metrics.peerFlaps.WithLabelValues("tor1")) == 1
	})
	p = r.s.Status().Peers[0]
	if p.Established || p.Flaps != 1 || p.LastError == "" {
		t.Errorf("peer status after the router shut the session: %+v", p)
	}
}

// TestUnresolvableNeighborKeepsItsExport: a neighbor still listed whose
// password file cannot be read at a reload keeps its session and settings
// (SetConfig says so), so it must keep getting routes as before: a degraded
// tier's prepend towards an eBGP router must not be dropped because the
// export policy forgot the neighbor.
func TestUnresolvableNeighborKeepsItsExport(t *testing.T) {
	r := newRig(t)
	self := r.local.String()
	r.apply(t, Route{Prefix: pfx("203.0.113.1/32"), Prepend: 2})
	r.router.waitRIB(t, "203.0.113.1/32 via "+self+" as-path [65001 65001 65001] origin 0")

	bad := r.cfg
	bad.Neighbors = slices.Clone(bad.Neighbors)
	bad.Neighbors[0].PasswordFile = filepath.Join(t.TempDir(), "missing")
	if err := r.s.SetConfig(context.Background(), bad); err == nil || !strings.Contains(err.Error(), "read password file") {
		t.Fatalf("SetConfig error = %v, want a password file error", err)
	}
	if st, _ := r.router.sessionState(r.local); st != api.PeerState_ESTABLISHED {
		t.Fatalf("session %v, want it kept", st)
	}

	// Another service becomes degraded; the first one's tier changes.
	r.apply(t, Route{Prefix: pfx("203.0.113.1/32"), Prepend: 1}, Route{Prefix: pfx("203.0.113.2/32"), Prepend: 2})
	r.router.waitRIB(t, strings.Join([]string{
		"203.0.113.1/32 via " + self + " as-path [65001 65001] origin 0",
		"203.0.113.2/32 via " + self + " as-path [65001 65001 65001] origin 0",
	}, "\n"))
}

// TestLocalPrefZeroOverIBGP: LOCAL_PREF 0 is a valid value, the least
// preferred (a backup node's), and must reach an iBGP router as 0, not as
// GoBGP's default 100 that a route without LOCAL_PREF gets.
func TestLocalPrefZeroOverIBGP(t *testing.T) {
	r := newRig(t, withIBGP())
	r.apply(t, Route{Prefix: pfx("203.0.113.1/32"), LocalPref: 0, HasLocalPref: true},
		Route{Prefix: pfx("203.0.113.2/32")})
	// The router's line shows local-pref only when it is not 0.
	r.router.waitRIB(t, strings.Join([]string{
		"203.0.113.1/32 via " + r.local.String() + " as-path [] origin 0",
		"203.0.113.2/32 via " + r.local.String() + " as-path [] origin 0 local-pref 100",
	}, "\n"))
}

// TestPasswordFileSwappedAfterLoad: the loader refuses a password_file
// that is not a regular file, but the speaker reads it again at every
// SetConfig, long after the load. A file swapped since for a FIFO (whose
// open blocks until a writer comes), a device (which never ends) or a file
// over the size limit is refused with an error naming the file, the
// neighbor keeps its session, and the call returns.
func TestPasswordFileSwappedAfterLoad(t *testing.T) {
	tor := addr("127.0.0.1")
	n := filled(Neighbor{Name: "tor1", Address: tor, ASN: routerASN, Port: uint16(freePort(t, tor))})
	cfg := Config{ASN: localASN, RouterID: addr("10.255.255.2"), Neighbors: []Neighbor{n}}
	ctx := context.Background()
	s, err := New(ctx, cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })

	tests := []struct {
		name string
		swap func(t *testing.T, p string)
		want string
	}{
		{"a FIFO", func(t *testing.T, p string) {
			replace(t, p, func(tmp string) error { return syscall.Mkfifo(tmp, 0o600) })
			// Were the open to block, a writer ends it, so the test ends.
			t.Cleanup(func() {
				if f, err := os.OpenFile(p, os.O_RDWR, 0); err == nil {
					f.Close()
				}
			})
		}, "is a FIFO, not a regular file"},
		{"a device", func(t *testing.T, p string) {
			replace(t, p, func(tmp string) error { return os.Symlink("/dev/zero", tmp) })
		}, "is a device, not a regular file"},
		{"a file over the size limit", func(t *testing.T, p string) {
			if err := os.Truncate(p, config.MaxFileSize+1); err != nil { // sparse: costs no disk
				t.Fatal(err)
			}
		}, "is larger than the limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "tor1.secret")
			if err := os.WriteFile(p, []byte("s3cret\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			c := cfg
			c.Neighbors = []Neighbor{n}
			c.Neighbors[0].PasswordFile = p
			if err := s.SetConfig(ctx, c); err != nil {
				t.Fatalf("SetConfig with a regular password file: %v", err)
			}
			tt.swap(t, p)
			done := make(chan error, 1)
			go func() { done <- s.SetConfig(ctx, c) }()
			select {
			case err = <-done:
			case <-time.After(time.Minute): // a guard against a hang, not a speed limit
				t.Fatalf("SetConfig still blocked a minute after %s was swapped for %s", p, tt.name)
			}
			if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("SetConfig error = %v, want it to name %s and say %q", err, p, tt.want)
			}
			if st := s.Status(); len(st.Peers) != 1 || st.Peers[0].Name != "tor1" {
				t.Errorf("status peers: %+v, want tor1 kept", st.Peers)
			}
		})
	}
}

// TestRetryKeepsPasswordsRead: while the speaker refuses a start's or a
// reload's bgp block for one neighbor (its password file unreadable), the
// engine hands it the block again at each retry (RetryConfig). A key an
// operator writes meanwhile for another neighbor, ahead of the reload
// that goes with the router's change, must not go live with such a retry;
// the file that failed is read again, so fixing it needs no reload; and
// the reload (SetConfig) reads every file.
func TestRetryKeepsPasswordsRead(t *testing.T) {
	a, b := nextLoopback(), nextLoopback()
	dir := t.TempDir()
	fileA, fileB := filepath.Join(dir, "a.secret"), filepath.Join(dir, "b.secret")
	write := func(p, pw string) {
		t.Helper()
		if err := os.WriteFile(p, []byte(pw+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	refused := func(what string, err error) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), "read password file") || !strings.Contains(err.Error(), fileA) {
			t.Fatalf("%s: error = %v, want a's password file refused", what, err)
		}
	}
	cfg := Config{ASN: localASN, RouterID: addr("10.255.255.2"), Neighbors: []Neighbor{
		filled(Neighbor{Name: "a", Address: a, ASN: 65100, Port: uint16(freePort(t, a)), PasswordFile: fileA}),
		filled(Neighbor{Name: "b", Address: b, ASN: 65100, Port: uint16(freePort(t, b)), PasswordFile: fileB}),
	}}
	ctx := context.Background()

	// The start: a's file is missing.
	write(fileB, "b-key-1")
	s, err := New(ctx, cfg, Options{})
	if s == nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	refused("New", err)
	keys := func(what, wantA, wantB string) {
		t.Helper()
		if gotA, gotB := gobgpPassword(t, s, a), gobgpPassword(t, s, b); gotA != wantA || gotB != wantB {
			t.Errorf("%s: GoBGP has a=%q b=%q, want a=%q b=%q", what, gotA, gotB, wantA, wantB)
		}
	}
	keys("after New", "", "b-key-1")

	// b's next key, staged for the reload; a retry does not take it.
	write(fileB, "b-key-2")
	refused("retry", s.RetryConfig(ctx, cfg))
	keys("after a retry with a's file still missing", "", "b-key-1")
	write(fileA, "a-key-1")
	if err := s.RetryConfig(ctx, cfg); err != nil {
		t.Fatalf("retry with a's file fixed: %v", err)
	}
	keys("after a retry with a's file fixed", "a-key-1", "b-key-1")

	// The reload reads every file; a refuses it again, and keeps its
	// session and key. Its retries keep the key the reload read for b.
	if err := os.Remove(fileA); err != nil {
		t.Fatal(err)
	}
	refused("reload", s.SetConfig(ctx, cfg))
	keys("after the reload", "a-key-1", "b-key-2")
	write(fileB, "b-key-3")
	refused("retry of the reload", s.RetryConfig(ctx, cfg))
	keys("after a retry of the reload", "a-key-1", "b-key-2")
}

// gobgpPassword is the TCP-MD5 password GoBGP has for its neighbor at a,
// "" when it has no such neighbor.
func gobgpPassword(t *testing.T, s *Speaker, a netip.Addr) string {
	t.Helper()
	var pw string
	err := s.srv.ListPeer(context.Background(), &api.ListPeerRequest{Address: a.String()}, func(p *api.Peer) {
		pw = p.GetConf().GetAuthPassword()
	})
	if err != nil {
		t.Fatalf("list neighbor %s: %v", a, err)
	}
	return pw
}

// replace puts what create makes at a temporary name over p, in one rename,
// as an operator's tool or an attacker would swap a file.
func replace(t *testing.T, p string, create func(tmp string) error) {
	t.Helper()
	tmp := p + ".new"
	if err := create(tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, p); err != nil {
		t.Fatal(err)
	}
}

// TestUnresolvableNeighborAfterRestart: a change of the global settings
// restarts the server, which ends every session; a neighbor still listed
// whose password file cannot be read then is not added again, so it has no
// session at all. Its series go, as a removed neighbor's do: a
// kglb_bgp_peer_up left from before would show a session that is not
// there.
func TestUnresolvableNeighborAfterRestart(t *testing.T) {
	r := newRig(t)
	eventually(t, "the speaker to see the session", func() bool {
		return testutil.ToFloat64(r.s.metrics.peerUp.WithLabelValues("tor1")) == 1
	})
	cfg := r.cfg
	cfg.RouterID = addr("10.255.255.3")
	cfg.Neighbors = slices.Clone(cfg.Neighbors)
	cfg.Neighbors[0].PasswordFile = filepath.Join(t.TempDir(), "missing")
	if err := r.s.SetConfig(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "read password file") {
		t.Fatalf("SetConfig error = %v, want a password file error", err)
	}
	if st := r.s.Status(); len(st.Peers) != 0 {
		t.Errorf("status peers after the restart: %+v, want none", st.Peers)
	}
	for _, name := range []string{"kglb_bgp_peer_up", "kglb_bgp_peer_session_state", "kglb_bgp_peer_flaps_total"} {
		if n, err := testutil.GatherAndCount(r.reg, name); err != nil || n != 0 {
			out, _ := r.reg.Gather()
			var got []string
			for _, mf := range out {
				if mf.GetName() == name {
					for _, m := range mf.GetMetric() {
						got = append(got, m.String())
					}
				}
			}
			t.Errorf("%s series = %d (%v), want none: %s", name, n, err, strings.Join(got, "; "))
		}
	}

	// The file readable again: the neighbor is back, counted from scratch.
	cfg.Neighbors[0].PasswordFile = ""
	if err := r.s.SetConfig(context.Background(), cfg); err != nil {
		t.Fatalf("SetConfig: %v", err)
	}
	r.router.waitEstablished(t, r.local)
	eventually(t, "tor1 up again", func() bool {
		return testutil.ToFloat64(r.s.metrics.peerUp.WithLabelValues("tor1")) == 1
	})
}

// TestNoNextHopIsNotAnError: a neighbor that carries IPv6 over an IPv4
// session, on a host with no IPv6 address to give its routes as next hop,
// is set up; New and SetConfig say why those routes are held back in the
// log and return no error, which a caller would take for a config not
// applied and retry for ever (the engine's pass did, and /status said so).
func TestNoNextHopIsNotAnError(t *testing.T) {
	local, router := nextLoopback(), nextLoopback()
	cfg := Config{ASN: localASN, RouterID: addr("10.255.255.2"), Neighbors: []Neighbor{
		filled(Neighbor{Name: "tor", Address: router, ASN: 65100, Port: uint16(freePort(t, router)), LocalAddress: local,
			Families: []Family{IPv4Unicast, IPv6Unicast}}),
	}}
	logs := &syncBuffer{}
	s, err := New(context.Background(), cfg, Options{Logger: hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Info})})
	if s == nil {
		t.Fatalf("new speaker: %v", err)
	}
	defer s.Close()
	if err != nil {
		t.Errorf("New of a neighbor without an IPv6 next hop: %v, want none", err)
	}
	cfg.Neighbors[0].ConnectRetry = 7 * time.Second
	if err := s.SetConfig(context.Background(), cfg); err != nil {
		t.Errorf("SetConfig of a neighbor without an IPv6 next hop: %v, want none", err)
	}
	if n := strings.Count(logs.String(), "routes held back from a neighbor"); n != 2 {
		t.Errorf("%d warnings of the held back routes, want one per New and SetConfig:\n%s", n, logs)
	}
}
