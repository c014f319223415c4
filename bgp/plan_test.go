package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v3/api"
)

// TestPlanConfigSessions: the sessions SetConfig would add, remove and
// reset, and nothing changes.
func TestPlanConfigSessions(t *testing.T) {
	r := newRig(t)
	tor1 := r.cfg.Neighbors[0]
	tor2 := filled(Neighbor{Name: "tor2", Address: netip.MustParseAddr("127.0.0.3"), ASN: 65002, Port: 1179, LocalAddress: r.local})
	plan := func(mod func(*Config)) string {
		t.Helper()
		cfg := r.cfg
		mod(&cfg)
		out, err := r.s.PlanConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprint(out)
	}
	peers := func() string { // names and addresses: the session state may move meanwhile
		var s string
		for _, p := range r.s.Status().Peers {
			s += p.Name + "=" + p.Address.String() + " "
		}
		return s
	}
	before := peers()
	for _, tt := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"same", func(*Config) {}, "[]"},
		{"add", func(c *Config) { c.Neighbors = []Neighbor{tor1, tor2} }, "[{tor2 127.0.0.3 + }]"},
		{"hold", func(c *Config) { n := tor1; n.HoldTime = 12 * time.Second; c.Neighbors = []Neighbor{n} }, "[{" + tor1.Name + " " + tor1.Address.String() + " ~ hold_time}]"},
		{"remove", func(c *Config) { c.Neighbors = nil }, "[{" + tor1.Name + " " + tor1.Address.String() + " - }]"},
		{"router id", func(c *Config) { c.RouterID = addr("10.255.255.3") }, "[{" + tor1.Name + " " + tor1.Address.String() + " ~ global settings (asn, router_id or listen_port): the server restarts}]"},
	} {
		if got := plan(tt.mod); got != tt.want {
			t.Errorf("%s: plan %s, want %s", tt.name, got, tt.want)
		}
	}
	if after := peers(); after != before || len(r.s.peers) != 1 {
		t.Errorf("plan changed the peers: %s, was %s", after, before)
	}
}

// planRig is a speaker with an eBGP neighbor (AS 65000) and an iBGP one
// (its own AS), neither of which answers: Plan needs no session up.
func planRig(t *testing.T) (*Speaker, Config) {
	t.Helper()
	cfg := Config{ASN: localASN, RouterID: addr("10.255.255.2"), Neighbors: []Neighbor{
		filled(Neighbor{Name: "tor-e", Address: addr("127.0.0.61"), ASN: 65000, Port: 1, ConnectRetry: time.Hour}),
		filled(Neighbor{Name: "tor-i", Address: addr("127.0.0.62"), ASN: localASN, Port: 1, ConnectRetry: time.Hour}),
	}}
	s, err := New(context.Background(), cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, cfg
}

// TestPlanPerNeighbor: what each neighbor is sent follows its kind of
// session: a prepend reaches the eBGP neighbor only, a local_pref the iBGP
// one only, a MED and a next hop both; a new neighbor is sent every
// route, a removed one loses its session; and Plan changes nothing.
func TestPlanPerNeighbor(t *testing.T) {
	s, cfg := planRig(t)
	web := Route{Prefix: pfx("203.0.113.10/32"), Communities: []Community{NewCommunity(65001, 100)}, MED: 50, HasMED: true}
	dns := Route{Prefix: pfx("203.0.113.11/32")}
	if err := s.Apply(context.Background(), []Route{web, dns}); err != nil {
		t.Fatal(err)
	}
	plan := func(c Config, routes ...Route) string {
		t.Helper()
		p, err := s.Plan(c, routes)
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		for _, n := range p.Neighbors {
			fmt.Fprintf(&b, "%s%s ebgp=%v:", n.Session, n.Neighbor, n.EBGP)
			for _, r := range n.Routes {
				fmt.Fprintf(&b, " %s%s%v", r.Action, r.Prefix, r.Fields)
			}
			b.WriteString("\n")
		}
		return b.String()
	}
	degraded := web
	degraded.MED, degraded.Prepend = 500, 2
	pref := web
	pref.LocalPref = 300
	hop := dns
	hop.NextHop = addr("192.0.2.99")
	tor3 := filled(Neighbor{Name: "tor-3", Address: addr("127.0.0.63"), ASN: 65003, Port: 1, ConnectRetry: time.Hour})
	withTor3 := cfg
	withTor3.Neighbors = append(slices.Clone(cfg.Neighbors), tor3)
	onlyE := cfg
	onlyE.Neighbors = cfg.Neighbors[:1]
	for _, tt := range []struct {
		name   string
		cfg    Config
		routes []Route
		want   string
	}{
		{"nothing", cfg, []Route{web, dns}, ""},
		{"prepend and med: as_path to eBGP only", cfg, []Route{degraded, dns},
			" tor-e ebgp=true: ~203.0.113.10/32[{as_path 65001 65001 65001 65001} {med 50 500}]\n" +
				" tor-i ebgp=false: ~203.0.113.10/32[{med 50 500}]\n"},
		{"local_pref: iBGP only", cfg, []Route{pref, dns},
			" tor-i ebgp=false: ~203.0.113.10/32[{local_pref 100 300}]\n"},
		{"next hop", cfg, []Route{web, hop},
			" tor-e ebgp=true: ~203.0.113.11/32[{next_hop self 192.0.2.99}]\n" +
				" tor-i ebgp=false: ~203.0.113.11/32[{next_hop self 192.0.2.99}]\n"},
		{"withdraw and announce", cfg, []Route{dns, {Prefix: pfx("203.0.113.12/32")}},
			" tor-e ebgp=true: -203.0.113.10/32[] +203.0.113.12/32[{next_hop  self} {as_path  65001}]\n" +
				" tor-i ebgp=false: -203.0.113.10/32[] +203.0.113.12/32[{next_hop  self} {local_pref  100}]\n"},
		{"neighbor added", withTor3, []Route{web, dns},
			"+tor-3 ebgp=true: +203.0.113.10/32[{next_hop  self} {as_path  65001} {med  50} {communities  65001:100}] +203.0.113.11/32[{next_hop  self} {as_path  65001}]\n"},
		{"neighbor removed", onlyE, []Route{web, dns}, "-tor-i ebgp=false:\n"},
	} {
		if got := plan(tt.cfg, tt.routes...); got != tt.want {
			t.Errorf("%s: plan\n%s\nwant\n%s", tt.name, got, tt.want)
		}
	}
	if len(s.routes) != 2 || !equal(s.routes[web.Prefix], func() Route { r, _ := normalize(web); return r }()) || len(s.peers) != 2 {
		t.Errorf("plan changed the speaker: routes %v peers %v", s.routes, s.peers)
	}
}

// TestSentToReadsEveryStatement: the plan reads every statement the
// export policy can hold (prepends, the marker removal, next hop rules,
// a rejection), and refuses one it does not know rather than guess.
func TestSentToReadsEveryStatement(t *testing.T) {
	v := exportView{asn: localASN, ebgp: []netip.Addr{addr("192.0.2.1")}, prepends: []int{1, 3},
		nextHops: []nextHopRule{{peer: addr("192.0.2.1"), family: IPv6Unicast, nextHop: addr("2001:db8::1")},
			{peer: addr("192.0.2.2"), family: IPv6Unicast}}}
	v.sort()
	pol := v.policy()
	e := exportPeer{addr: addr("192.0.2.1"), ebgp: true, ipv4: true, ipv6: true}
	i := exportPeer{addr: addr("192.0.2.2"), ipv4: true, ipv6: true}
	r := Route{Prefix: pfx("203.0.113.1/32"), Prepend: 3, LargeCommunities: []LargeCommunity{{1, 2, 3}}}
	got, ok, err := sentTo(pol, localASN, e, r)
	if err != nil || !ok || got.asPath != "65001 65001 65001 65001" || got.largeCommunities != "1:2:3" {
		t.Errorf("eBGP prepend 3: %+v %v %v", got, ok, err)
	}
	got, ok, err = sentTo(pol, localASN, i, r)
	if err != nil || !ok || got.asPath != "" || got.largeCommunities != "1:2:3" || got.localPref != "100" {
		t.Errorf("iBGP prepend 3: %+v %v %v", got, ok, err)
	}
	v6 := Route{Prefix: pfx("2001:db8:ff::1/128")}
	if got, ok, err = sentTo(pol, localASN, e, v6); err != nil || !ok || got.nextHop != "2001:db8::1" {
		t.Errorf("IPv6 over IPv4 with a link address: %+v %v %v", got, ok, err)
	}
	if _, ok, err = sentTo(pol, localASN, i, v6); err != nil || ok {
		t.Errorf("IPv6 over IPv4 without one: sent %v %v", ok, err)
	}
	v6.NextHop = addr("2001:db8::7")
	if got, ok, err = sentTo(pol, localASN, i, v6); err != nil || !ok || got.nextHop != "2001:db8::7" {
		t.Errorf("IPv6 over IPv4 with its own next hop: %+v %v %v", got, ok, err)
	}
	if _, ok, _ = sentTo(pol, localASN, exportPeer{addr: addr("192.0.2.3"), ipv4: true}, v6); ok {
		t.Errorf("IPv6 route sent to an IPv4-only neighbor")
	}
	pol.Policies[0].Statements[0].Actions.Med = &api.MedAction{Value: 1}
	if _, _, err = sentTo(pol, localASN, e, r); err == nil {
		t.Errorf("an action the plan cannot read was read")
	}
}

// TestPlanRefusesWhatSetConfigRefuses: a neighbor SetConfig refuses (a
// passive one without a listen port, one listed twice) is an error of the
// plan too, never a session it adds.
func TestPlanRefusesWhatSetConfigRefuses(t *testing.T) {
	s, cfg := planRig(t) // no listen port
	passive := filled(Neighbor{Name: "tor-p", Address: addr("127.0.0.63"), ASN: 65000, Port: 1, ConnectRetry: time.Hour, Passive: true})
	cfg.Neighbors = append(cfg.Neighbors, passive, cfg.Neighbors[0])
	want := []string{"passive neighbor needs a listen port", "listed twice"}
	out, err := s.PlanConfig(cfg)
	for _, w := range want {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("plan error %v, want one that says %q", err, w)
		}
	}
	if len(out) != 0 {
		t.Errorf("plan %v, want no session change", out)
	}
	err = s.SetConfig(context.Background(), cfg)
	for _, w := range want {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("SetConfig error %v, want one that says %q (the plan's rule)", err, w)
		}
	}
	if _, ok := s.peers[passive.Address]; ok {
		t.Error("SetConfig added the passive neighbor")
	}
}
