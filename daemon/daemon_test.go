package daemon

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kglb/kglb/bgp"
	"github.com/kglb/kglb/config"
)

func TestDeleteGuard(t *testing.T) {
	mk := func(names ...string) *config.Config {
		c := &config.Config{}
		for i, n := range names {
			c.Services = append(c.Services, &config.Service{Name: n, VIP: netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)})})
		}
		return c
	}
	tests := []struct {
		name     string
		old, new *config.Config
		share    float64
		wantErr  string
	}{
		{"add", mk("a"), mk("a", "b"), 50, ""},
		{"half deleted is allowed at 50%", mk("a", "b"), mk("a"), 50, ""},
		{"emptied directory", mk("a", "b", "c"), mk(), 50, "delete 3 of 3 services"},
		{"100% allows anything", mk("a", "b", "c"), mk(), 100, ""},
		{"renamed services keep VIPs but count as deleted", mk("a", "b", "c"), mk("x", "y", "z"), 50, "delete 3 of 3 services"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := DeleteGuard(tt.old, tt.new, tt.share)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("DeleteGuard = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestWriteStatus(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	st := Status{
		Config: ConfigStatus{LastReloadError: "web.hcl:3:5: bad"},
		VIPs:   []VIPStatus{{VIP: netip.MustParseAddr("192.0.2.1"), Announced: true, Reason: "healthy", Services: []string{"web"}}},
		Services: []ServiceStatus{{Name: "web", Endpoint: "tcp/192.0.2.1:80", Healthy: 1, Total: 2, Qualified: true, Reason: "healthy",
			Reals: []RealStatus{
				{Address: "10.0.0.1:80", Enabled: true, State: "up", Weight: 100, Checks: []CheckStatus{{Type: "tcp", State: "up", Reason: "connected", Since: now.Add(-time.Minute)}}},
				{Address: "10.0.0.2:80", Enabled: true, State: "down", Weight: 0, Checks: []CheckStatus{{Type: "tcp", State: "down", Reason: "connection refused", Since: now.Add(-5 * time.Second)}}},
			}}},
	}
	up := time.Hour + 2*time.Minute + 3500*time.Millisecond
	st.BGP = &bgp.Status{ASN: 65010, RouterID: netip.MustParseAddr("10.255.255.2"), Peers: []bgp.PeerStatus{
		{Name: "tor1", Address: netip.MustParseAddr("10.255.0.1"), ASN: 65000, State: "established", Established: true,
			Families: []bgp.Family{bgp.IPv4Unicast}, Since: now.Add(-up), Uptime: up, UptimeSeconds: up.Seconds(),
			PrefixesSent: 2, UpdatesSent: 5, Flaps: 1},
		{Name: "tor2", Address: netip.MustParseAddr("10.255.0.2"), ASN: 65000, State: "active",
			Families: []bgp.Family{bgp.IPv4Unicast}, Flaps: 3,
			LastError: "dial tcp 10.255.0.2:179: connect: connection refused", LastErrorAt: now.Add(-time.Second)},
	}}
	// kglb status reads the status as JSON from /status.
	js, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var got Status
	if err := json.Unmarshal(js, &got); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	WriteStatus(&b, got, now)
	out := b.String()
	for _, want := range []string{"CONFIG REJECTED", "web.hcl:3:5: bad", "192.0.2.1  yes", "1/2 healthy", "10.0.0.2:80  down", "5s ago", "tcp: connection refused"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}

	// The BGP table comes last, after a blank line: one row per peer, the
	// uptime in whole seconds.
	wantBGP := []string{
		"BGP PEER  ADDRESS     ASN    STATE        UPTIME  SENT  FLAPS  LAST ERROR",
		"tor1      10.255.0.1  65000  established  1h2m3s  2     1",
		"tor2      10.255.0.2  65000  active       0s      0     3      dial tcp 10.255.0.2:179: connect: connection refused",
	}
	i := strings.Index(out, "\n\nBGP PEER")
	if i < 0 {
		t.Fatalf("no BGP table after a blank line:\n%s", out)
	}
	var rows []string
	for _, l := range strings.Split(strings.TrimSuffix(out[i+2:], "\n"), "\n") {
		rows = append(rows, strings.TrimRight(l, " "))
	}
	if !slices.Equal(rows, wantBGP) {
		t.Errorf("BGP table:\n%s\nwant:\n%s", strings.Join(rows, "\n"), strings.Join(wantBGP, "\n"))
	}
}

func TestTunnelSysctlProblem(t *testing.T) {
	svc := func(addr string, tunnel bool) *config.Service {
		return &config.Service{Name: addr, Enabled: true,
			Reals:  []config.Real{{Addr: netip.MustParseAddr(addr), Port: 80}},
			Checks: []config.Check{{Type: config.CheckTCP, Tunnel: tunnel}}}
	}
	value := func(v string) func(string) ([]byte, error) {
		return func(p string) ([]byte, error) {
			if p != acceptLocalPath {
				t.Errorf("read %s", p)
			}
			return []byte(v + "\n"), nil
		}
	}
	missing := func(string) ([]byte, error) { return nil, os.ErrNotExist }
	tests := []struct {
		name     string
		services []*config.Service
		read     func(string) ([]byte, error)
		want     string
	}{
		{"no tunnelled checks", []*config.Service{svc("192.0.2.1", false)}, value("0"), ""},
		{"tunnelled, accept_local on", []*config.Service{svc("192.0.2.1", true)}, value("1"), ""},
		{"tunnelled, accept_local off", []*config.Service{svc("192.0.2.1", true)}, value("0"), "accept_local is 0"},
		{"tunnelled IPv6 only", []*config.Service{svc("2001:db8::1", true)}, value("0"), ""},
		{"cannot read", []*config.Service{svc("192.0.2.1", true)}, missing, "cannot read"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tunnelSysctlProblem(&config.Config{Services: tt.services}, tt.read)
			if (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
				t.Errorf("got %q, want one containing %q", got, tt.want)
			}
		})
	}
}

// TestSinceFork: the kernel tells how long ago this process began, which
// the start line reports as its "init" step.
func TestSinceFork(t *testing.T) {
	d, ok := sinceFork()
	if !ok || d < 0 {
		t.Fatalf("sinceFork() = %v, %v; want a duration >= 0 from /proc/self/stat", d, ok)
	}
	if args := newStages().args; len(args) != 2 || args[0] != "init" {
		t.Errorf("stages begin with %v, want [init <duration>]", args)
	}
}
