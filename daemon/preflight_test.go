package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kglb/kglb/config"
)

// fakeProc is a /proc root holding net.ipv4.vs settings.
func fakeProc(t *testing.T, vals map[string]string) string {
	t.Helper()
	root := t.TempDir()
	dir := filepath.Join(root, "sys/net/ipv4/vs")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for k, v := range vals {
		if err := os.WriteFile(filepath.Join(dir, k), []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestClusterSysctlProblems(t *testing.T) {
	on := map[string]string{"sloppy_tcp": "1", "sloppy_sctp": "1", "schedule_icmp": "1", "expire_nodest_conn": "0"}
	with := func(k, v string) map[string]string {
		m := map[string]string{}
		for a, b := range on {
			m[a] = b
		}
		if v == "" {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}
	svc := func(name string, sched config.Scheduler, fwd config.Forward, proto config.Protocol) *config.Service {
		s := &config.Service{Name: name, Scheduler: sched, Forward: fwd, Protocol: proto}
		if proto == "" {
			s.FWMark = 10
		}
		return s
	}
	web := svc("web", config.SchedMH, config.ForwardTunnel, config.TCP)
	tests := []struct {
		name     string
		services []*config.Service
		proc     map[string]string
		want     []string // one substring per expected message
	}{
		{"all on", []*config.Service{web}, on, nil},
		{"sloppy_tcp off", []*config.Service{web}, with("sloppy_tcp", "0"), []string{`net.ipv4.vs.sloppy_tcp is 0 but service "web" (mh, tunnel)`}},
		{"schedule_icmp off", []*config.Service{web}, with("schedule_icmp", "0"), []string{"net.ipv4.vs.schedule_icmp is 0"}},
		{"expire_nodest_conn on", []*config.Service{web}, with("expire_nodest_conn", "1"), []string{"net.ipv4.vs.expire_nodest_conn is 1 but service \"web\" (mh, tunnel) looks clustered"}},
		{"ip_vs not loaded", []*config.Service{web}, nil, []string{"cannot read net.ipv4.vs.sloppy_tcp", "cannot read net.ipv4.vs.schedule_icmp", "cannot read net.ipv4.vs.expire_nodest_conn"}},
		{"sctp setting off, tcp service", []*config.Service{web}, with("sloppy_sctp", "0"), nil},
		{"sctp setting off, sctp service", []*config.Service{svc("sig", config.SchedMH, config.ForwardDR, config.SCTP)}, with("sloppy_sctp", "0"), []string{`net.ipv4.vs.sloppy_sctp is 0 but service "sig" (mh, dr)`}},
		{"fwmark service needs both", []*config.Service{svc("fw", config.SchedMH, config.ForwardTunnel, "")}, with("sloppy_sctp", "0"), []string{"sloppy_sctp"}},
		{"nat is not clustered", []*config.Service{svc("n", config.SchedMH, config.ForwardNAT, config.TCP)}, nil, nil},
		{"wrr is not clustered", []*config.Service{svc("w", config.SchedWRR, config.ForwardTunnel, config.TCP)}, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := clusterSysctlProblems(&config.Config{Services: tt.services}, fakeProc(t, tt.proc))
			if len(got) != len(tt.want) {
				t.Fatalf("got %d messages %q, want %d", len(got), got, len(tt.want))
			}
			for i, w := range tt.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("message %q does not contain %q", got[i], w)
				}
			}
		})
	}
}
