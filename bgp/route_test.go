package bgp

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseCommunity(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr bool
	}{
		{"65001:100", "65001:100", false},
		{"0:0", "0:0", false},
		{"65535:65535", "65535:65535", false},
		{"graceful-shutdown", "65535:0", false},
		{"no-export", "65535:65281", false},
		{"65536:1", "", true},
		{"1:2:3", "", true},
		{"x:1", "", true},
		{"100", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			c, err := ParseCommunity(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseCommunity(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			}
			if err == nil && c.String() != tt.want {
				t.Errorf("ParseCommunity(%q) = %s, want %s", tt.in, c, tt.want)
			}
		})
	}
}

func TestParseLargeCommunity(t *testing.T) {
	tests := []struct {
		in      string
		want    LargeCommunity
		wantErr bool
	}{
		{"65001:1:2", LargeCommunity{65001, 1, 2}, false},
		{"4294967295:0:4294967295", LargeCommunity{4294967295, 0, 4294967295}, false},
		{"4294967296:0:0", LargeCommunity{}, true},
		{"1:2", LargeCommunity{}, true},
		{"a:b:c", LargeCommunity{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			c, err := ParseLargeCommunity(tt.in)
			if (err != nil) != tt.wantErr || c != tt.want {
				t.Errorf("ParseLargeCommunity(%q) = %v, %v; want %v, error %v", tt.in, c, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestNormalize(t *testing.T) {
	tests := []struct {
		name    string
		in, out Route
		wantErr string
	}{
		{"masks the prefix and drops an unsent MED",
			Route{Prefix: pfx("203.0.113.7/24"), MED: 5},
			Route{Prefix: pfx("203.0.113.0/24")}, ""},
		{"sorts and deduplicates communities",
			Route{Prefix: pfx("203.0.113.1/32"), Communities: []Community{3, 1, 3},
				LargeCommunities: []LargeCommunity{{2, 0, 0}, {1, 5, 5}, {2, 0, 0}}},
			Route{Prefix: pfx("203.0.113.1/32"), Communities: []Community{1, 3},
				LargeCommunities: []LargeCommunity{{1, 5, 5}, {2, 0, 0}}}, ""},
		{"invalid prefix", Route{}, Route{}, "invalid prefix"},
		{"mapped prefix", Route{Prefix: pfx("::ffff:203.0.113.1/128")}, Route{}, "IPv4-mapped"},
		{"unspecified next hop", Route{Prefix: pfx("203.0.113.1/32"), NextHop: addr("0.0.0.0")}, Route{}, "not usable"},
		{"negative prepend", Route{Prefix: pfx("203.0.113.1/32"), Prepend: -1}, Route{}, "prepend"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := normalize(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("normalize error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || !equal(got, tt.out) {
				t.Errorf("normalize = %+v, %v; want %+v", got, err, tt.out)
			}
		})
	}
}

func TestRouteJSON(t *testing.T) {
	r := Route{Prefix: pfx("203.0.113.1/32"), NextHop: addr("192.0.2.1"),
		Communities: []Community{NewCommunity(65001, 100)}, LargeCommunities: []LargeCommunity{{65001, 1, 2}},
		MED: 10, HasMED: true, LocalPref: 200, Prepend: 2}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"prefix":"203.0.113.1/32","next_hop":"192.0.2.1","communities":["65001:100"],"large_communities":["65001:1:2"],"med":10,"has_med":true,"local_pref":200,"prepend":2}`
	if string(b) != want {
		t.Errorf("json = %s\nwant   %s", b, want)
	}
	var back Route
	if err := json.Unmarshal(b, &back); err != nil || !equal(back, r) {
		t.Errorf("round trip = %+v, %v", back, err)
	}
}

func TestResolveNeighbor(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	os.WriteFile(pw, []byte("  secret \n"), 0o600)
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, []byte("\n"), 0o600)
	base := Neighbor{Address: addr("192.0.2.1"), ASN: 65000, Port: 179, HoldTime: 90 * time.Second, Keepalive: 30 * time.Second,
		ConnectRetry: 5 * time.Second, Families: []Family{IPv4Unicast}, RestartTime: 120 * time.Second}
	with := func(f func(*Neighbor)) Neighbor { n := base; f(&n); return n }
	tests := []struct {
		name    string
		in      Neighbor
		want    session
		wantErr string
	}{
		{"what config gives", base, session{address: addr("192.0.2.1"), asn: 65000, port: 179, hold: 90, keepalive: 30,
			connectRetry: 5, ipv4: true}, ""},
		{"timers round up", with(func(n *Neighbor) { n.HoldTime = 2500 * time.Millisecond * 2; n.Keepalive = 1500 * time.Millisecond }),
			session{address: addr("192.0.2.1"), asn: 65000, port: 179, hold: 5, keepalive: 2, connectRetry: 5, ipv4: true}, ""},
		{"graceful restart on both families", with(func(n *Neighbor) {
			n.GracefulRestart, n.HoldTime, n.Keepalive, n.Families = true, 9*time.Second, 3*time.Second, []Family{IPv6Unicast, IPv4Unicast}
		}), session{address: addr("192.0.2.1"), asn: 65000, port: 179, hold: 9, keepalive: 3, connectRetry: 5,
			ipv4: true, ipv6: true, graceful: true, restartTime: 120}, ""},
		{"password trimmed", with(func(n *Neighbor) { n.PasswordFile = pw }),
			session{address: addr("192.0.2.1"), asn: 65000, port: 179, hold: 90, keepalive: 30, connectRetry: 5,
				ipv4: true, password: "secret"}, ""},
		{"hold time 0 is refused, not turned into 90s", with(func(n *Neighbor) { n.HoldTime, n.Keepalive = 0, 0 }), session{}, "hold time 0s"},
		{"no keepalive", with(func(n *Neighbor) { n.Keepalive = 0 }), session{}, "keepalive"},
		{"no port", with(func(n *Neighbor) { n.Port = 0 }), session{}, "no port"},
		{"no families", with(func(n *Neighbor) { n.Families = nil }), session{}, "no families"},
		{"no connect retry", with(func(n *Neighbor) { n.ConnectRetry = 0 }), session{}, "connect retry"},
		{"restart time over 4095s", with(func(n *Neighbor) { n.GracefulRestart, n.RestartTime = true, 4096*time.Second }), session{}, "restart time"},
		{"empty password file", with(func(n *Neighbor) { n.PasswordFile = empty }), session{}, "is empty"},
		{"missing password file", with(func(n *Neighbor) { n.PasswordFile = filepath.Join(dir, "nope") }), session{}, "read password file"},
		{"hold time too short", with(func(n *Neighbor) { n.HoldTime = 2 * time.Second }), session{}, "hold time"},
		{"keepalive longer than hold", with(func(n *Neighbor) { n.HoldTime, n.Keepalive = 3*time.Second, 5*time.Second }), session{}, "keepalive"},
		{"no asn", with(func(n *Neighbor) { n.ASN = 0 }), session{}, "no asn"},
		{"local address of another family", with(func(n *Neighbor) { n.LocalAddress = addr("2001:db8::2") }), session{}, "family"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := resolveNeighbor(tt.in, nil)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "secret") {
					t.Errorf("error shows the password: %v", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("resolveNeighbor = %+v, %v\nwant %+v", got, err, tt.want)
			}
		})
	}
}

// filled gives n the values config.Load writes for a neighbor block that
// leaves them out (the speaker applies no defaults of its own), except a
// 9 s hold time and a 1 s connect retry, which keep the tests fast.
func filled(n Neighbor) Neighbor {
	if n.Port == 0 {
		n.Port = 179
	}
	if n.HoldTime == 0 {
		n.HoldTime = 9 * time.Second
	}
	if n.Keepalive == 0 {
		n.Keepalive = n.HoldTime / 3
	}
	if n.ConnectRetry == 0 {
		n.ConnectRetry = time.Second
	}
	if len(n.Families) == 0 {
		n.Families = []Family{IPv4Unicast}
		if n.Address.Is6() {
			n.Families = []Family{IPv6Unicast}
		}
	}
	if n.RestartTime == 0 {
		n.RestartTime = 120 * time.Second
	}
	return n
}
