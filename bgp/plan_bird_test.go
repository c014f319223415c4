package bgp

import (
	"strings"
	"testing"
	"time"
)

// TestPlanAttributesBIRD: what Plan says each neighbor will receive is
// what BIRD then receives. A degraded tier (prepend and MED), a community
// added, LOCAL_PREF and a next hop changed are planned for an eBGP and an
// iBGP session, applied, and every attribute the plan lists for a
// neighbor is read back from that neighbor's session in BIRD.
func TestPlanAttributesBIRD(t *testing.T) {
	l := newLab(t, 1)
	n := l.nodes[0]
	l.startBIRD(birdPeers(n, true, false)...)
	cfg := speakerConfig(n, true, false)
	sp := l.startSpeaker(n, cfg)
	for _, p := range []string{"ebgp4_1", "ibgp4_1"} {
		l.waitProtocol(p, true)
	}
	web := Route{Prefix: pfx("203.0.113.10/32"), Communities: []Community{NewCommunity(65001, 100)}, MED: 50, HasMED: true}
	dns := Route{Prefix: pfx("203.0.113.11/32")}
	sp.apply(web, dns)
	l.waitRoutes(`
203.0.113.10/32 ebgp4_1 via 10.255.1.2 origin=IGP as_path=65001 next_hop=10.255.1.2 med=50 local_pref=100 community=(65001,100)
203.0.113.11/32 ebgp4_1 via 10.255.1.2 origin=IGP as_path=65001 next_hop=10.255.1.2 local_pref=100`, "ebgp4_1")

	degraded := web
	degraded.MED, degraded.Prepend, degraded.LocalPref = 500, 2, 300
	degraded.Communities = append(degraded.Communities, NewCommunity(65001, 200))
	moved := dns
	moved.NextHop = n.v4i // another address of the speaker, on the link
	p := sp.call(helperCmd{Op: "plan", Config: &cfg, Routes: []Route{degraded, moved}}).Plan
	// The plan: the prepend to eBGP only, LOCAL_PREF to iBGP only, the
	// MED, the community and the next hop to both.
	var b strings.Builder
	for _, np := range p.Neighbors {
		for _, r := range np.Routes {
			b.WriteString(np.Neighbor + " " + r.Action + r.Prefix.String())
			for _, f := range r.Fields {
				b.WriteString(" " + f.Name + "=" + f.To)
			}
			b.WriteString("\n")
		}
	}
	want := `ebgp4 ~203.0.113.10/32 as_path=65001 65001 65001 med=500 communities=65001:100 65001:200
ebgp4 ~203.0.113.11/32 next_hop=10.255.1.3
ibgp4 ~203.0.113.10/32 med=500 local_pref=300 communities=65001:100 65001:200
ibgp4 ~203.0.113.11/32 next_hop=10.255.1.3
`
	if b.String() != want {
		t.Fatalf("plan:\n%s\nwant:\n%s", b.String(), want)
	}

	// Applied, each session carries what the plan said it would.
	sp.apply(degraded, moved)
	birdAttr := map[string]string{"as_path": "BGP.as_path", "med": "BGP.med", "local_pref": "BGP.local_pref",
		"communities": "BGP.community", "next_hop": "BGP.next_hop"}
	for _, np := range p.Neighbors {
		for _, r := range np.Routes {
			for _, f := range r.Fields {
				want := f.To
				if f.Name == "communities" { // BIRD writes (65001,100)
					want = "(" + strings.ReplaceAll(strings.ReplaceAll(f.To, ":", ","), " ", ") (") + ")"
				}
				proto := np.Neighbor + "_1"
				var got string
				deadline := time.Now().Add(60 * time.Second) // a guard, not an assertion on speed
				for {
					out, err := l.birdc("show", "route", "all")
					got = "(none)"
					for _, br := range parseBIRDRoutes(out) {
						if err == nil && br.Prefix == r.Prefix.String() && br.Proto == proto {
							got = br.Attrs[birdAttr[f.Name]]
						}
					}
					if got == want || time.Now().After(deadline) {
						break
					}
					time.Sleep(100 * time.Millisecond)
				}
				if got != want {
					t.Errorf("%s %s: BIRD has %s %q, the plan said %q", proto, r.Prefix, f.Name, got, want)
				}
			}
		}
	}
}
