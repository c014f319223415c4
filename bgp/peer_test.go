package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v3/api"
)

// peerSummary renders the session settings of a GoBGP peer on one line. An
// unset local address reads as GoBGP's default (any) does.
func peerSummary(p *api.Peer) string {
	c, tr, tm := p.GetConf(), p.GetTransport(), p.GetTimers().GetConfig()
	var b strings.Builder
	fmt.Fprintf(&b, "neighbor %s as %d port %d", c.GetNeighborAddress(), c.GetPeerAsn(), tr.GetRemotePort())
	if la := tr.GetLocalAddress(); la != "" && la != "0.0.0.0" && la != "::" {
		fmt.Fprintf(&b, " local %s", la)
	}
	if tr.GetPassiveMode() {
		b.WriteString(" passive")
	}
	if mh := p.GetEbgpMultihop(); mh.GetEnabled() {
		fmt.Fprintf(&b, " multihop ttl %d", mh.GetMultihopTtl())
	}
	fmt.Fprintf(&b, " hold %d keepalive %d connect-retry %d", tm.GetHoldTime(), tm.GetKeepaliveInterval(), tm.GetConnectRetry())
	if gr := p.GetGracefulRestart(); gr.GetEnabled() {
		fmt.Fprintf(&b, " graceful-restart %d", gr.GetRestartTime())
	}
	var fams []string
	for _, af := range p.GetAfiSafis() {
		if !af.GetConfig().GetEnabled() {
			continue
		}
		f := af.GetConfig().GetFamily()
		name := fmt.Sprintf("%s/%s", f.GetAfi(), f.GetSafi())
		for _, k := range []Family{IPv4Unicast, IPv6Unicast} {
			if a := apiFamily(k); a.Afi == f.GetAfi() && a.Safi == f.GetSafi() {
				name = k.String()
			}
		}
		if af.GetMpGracefulRestart().GetConfig().GetEnabled() {
			name += "+gr"
		}
		fams = append(fams, name)
	}
	fmt.Fprintf(&b, " families %s", strings.Join(fams, ","))
	return b.String()
}

// TestNeighborToAPI: every session setting of a neighbor reaches the GoBGP
// peer it is configured as, defaults filled in.
func TestNeighborToAPI(t *testing.T) {
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		in       Neighbor
		want     string
		wantDesc string // Conf.Description, by which GoBGP names the peer
		wantPW   string
	}{
		{"directly connected eBGP: no multihop",
			filled(Neighbor{Address: addr("192.0.2.1"), ASN: 65000}),
			"neighbor 192.0.2.1 as 65000 port 179 hold 9 keepalive 3 connect-retry 1 families ipv4-unicast",
			"192.0.2.1", ""},
		{"eBGP multihop from a loopback, every setting given",
			filled(Neighbor{Name: "rr1", Address: addr("198.51.100.1"), ASN: 65100, Port: 1179, LocalAddress: addr("10.255.0.1"),
				MultihopTTL: 4, HoldTime: 30 * time.Second, Keepalive: 10 * time.Second, ConnectRetry: 7 * time.Second,
				Families: []Family{IPv6Unicast, IPv4Unicast}}),
			"neighbor 198.51.100.1 as 65100 port 1179 local 10.255.0.1 multihop ttl 4 hold 30 keepalive 10 connect-retry 7 families ipv4-unicast,ipv6-unicast",
			"rr1", ""},
		{"multihop at the largest TTL",
			filled(Neighbor{Address: addr("198.51.100.2"), ASN: 65100, MultihopTTL: 255}),
			"neighbor 198.51.100.2 as 65100 port 179 multihop ttl 255 hold 9 keepalive 3 connect-retry 1 families ipv4-unicast",
			"198.51.100.2", ""},
		{"passive multihop: waits for the router",
			filled(Neighbor{Name: "tor2", Address: addr("192.0.2.2"), ASN: 65000, Passive: true, MultihopTTL: 2, HoldTime: 9 * time.Second, ConnectRetry: 5 * time.Second}),
			"neighbor 192.0.2.2 as 65000 port 179 passive multihop ttl 2 hold 9 keepalive 3 connect-retry 5 families ipv4-unicast",
			"tor2", ""},
		{"IPv6 neighbor with a local address",
			filled(Neighbor{Address: addr("2001:db8::1"), ASN: 65000, LocalAddress: addr("2001:db8::2"), ConnectRetry: 1500 * time.Millisecond}),
			"neighbor 2001:db8::1 as 65000 port 179 local 2001:db8::2 hold 9 keepalive 3 connect-retry 2 families ipv6-unicast",
			"2001:db8::1", ""},
		{"graceful restart on every family, TCP-MD5",
			filled(Neighbor{Address: addr("192.0.2.3"), ASN: 65000, GracefulRestart: true, RestartTime: 120 * time.Second,
				Families: []Family{IPv4Unicast, IPv6Unicast}, PasswordFile: pw}),
			"neighbor 192.0.2.3 as 65000 port 179 hold 9 keepalive 3 connect-retry 1 graceful-restart 120 families ipv4-unicast+gr,ipv6-unicast+gr",
			"192.0.2.3", "s3cret"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sess, err := resolveNeighbor(tt.in, nil)
			if err != nil {
				t.Fatal(err)
			}
			name := tt.in.Name
			if name == "" {
				name = tt.in.Address.String()
			}
			p := sess.toAPI(name, false)
			if got := peerSummary(p); got != tt.want {
				t.Errorf("peer:\n got %s\nwant %s", got, tt.want)
			}
			if got := p.GetConf().GetDescription(); got != tt.wantDesc {
				t.Errorf("description %q, want %q", got, tt.wantDesc)
			}
			if got := p.GetConf().GetAuthPassword(); got != tt.wantPW {
				t.Errorf("password %q, want %q", got, tt.wantPW)
			}
			if tt.in.MultihopTTL == 0 && p.GetEbgpMultihop() != nil {
				t.Errorf("multihop set for a directly connected neighbor: %v", p.GetEbgpMultihop())
			}
		})
	}
}

// TestNeighborInGoBGP: the peers a speaker configures are, as GoBGP lists
// them back, what toAPI made: GoBGP keeps the multihop TTL, passive mode,
// timers, local address, remote port and families. The neighbors are on
// loopback with nothing listening: the sessions never come up, which does
// not matter here.
func TestNeighborInGoBGP(t *testing.T) {
	local, routers := nextLoopback(), []netip.Addr{nextLoopback(), nextLoopback()}
	neighbors := []Neighbor{
		filled(Neighbor{Name: "rr1", Address: routers[0], ASN: 65100, Port: uint16(freePort(t, routers[0])), LocalAddress: local,
			MultihopTTL: 3, HoldTime: 30 * time.Second, Keepalive: 10 * time.Second, ConnectRetry: 7 * time.Second,
			Families: []Family{IPv4Unicast, IPv6Unicast}}),
		filled(Neighbor{Name: "rr2", Address: routers[1], ASN: 65200, Passive: true, MultihopTTL: 255, HoldTime: 9 * time.Second,
			GracefulRestart: true}),
	}
	s, err := New(context.Background(), Config{ASN: localASN, RouterID: addr("10.255.255.2"),
		ListenPort: freePort(t, local), ListenAddresses: []netip.Addr{local}, Neighbors: neighbors}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	listed := map[string]string{}
	err = s.srv.ListPeer(context.Background(), &api.ListPeerRequest{}, func(p *api.Peer) {
		listed[p.GetConf().GetNeighborAddress()] = peerSummary(p)
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(listed) != len(neighbors) {
		t.Errorf("GoBGP lists %d peers, want %d: %v", len(listed), len(neighbors), listed)
	}
	for _, n := range neighbors {
		sess, err := resolveNeighbor(n, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := listed[n.Address.String()], peerSummary(sess.toAPI(n.Name, false)); got != want {
			t.Errorf("%s in GoBGP:\n got %s\nwant %s", n.Name, got, want)
		}
	}
}
