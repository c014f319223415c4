package bgp

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
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
