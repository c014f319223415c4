package main

import (
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kglb/kglb/daemon"
	"github.com/kglb/kglb/lb"
)

// planDaemon answers POST /plan with a.
func planDaemon(t *testing.T, a daemon.PlanAnswer) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "control.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /plan", func(w http.ResponseWriter, r *http.Request) {
		a.Dir = r.URL.Query().Get("dir")
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(a)
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return sock
}

// kglb plan's exit codes: 0 done, 1 invalid or refused, 2 usage, 3 no
// daemon, 4 changes with -detailed-exitcode.
func TestPlanExitCodes(t *testing.T) {
	changes := &lb.Review{VIPs: []lb.VIPChange{{VIP: "198.51.100.30", Action: lb.ActAdd}}, Writes: []lb.KernelWrite{{Op: "add_vip", VIP: "198.51.100.30"}},
		Sessions: []lb.SessionChange{{Neighbor: "tor-a", Address: "192.0.2.1", Action: lb.ActChange, Changed: "hold_time"}}}
	none := &lb.Review{}
	planned := func(r *lb.Review, changed bool) daemon.PlanAnswer {
		return daemon.PlanAnswer{Result: "planned", Guard: "pass", Plan: r, Changes: changed, Summary: r.Summary()}
	}
	tests := []struct {
		name    string
		args    []string
		answer  *daemon.PlanAnswer
		want    int
		wantOut string
		wantErr string
	}{
		{name: "no changes", args: []string{"/etc/kglb"}, answer: ptr(planned(none, false)), want: exitOK, wantOut: "no changes"},
		{name: "no changes detailed", args: []string{"-detailed-exitcode"}, answer: ptr(planned(none, false)), want: exitOK, wantOut: "kglb plan /etc/kglb"},
		{name: "changes", args: nil, answer: ptr(planned(changes, true)), want: exitOK, wantOut: "+ 198.51.100.30 (made local)"},
		{name: "sessions", args: nil, answer: ptr(planned(changes, true)), want: exitOK, wantOut: "bgp sessions\n  ~ tor-a (192.0.2.1): reset, changed hold_time\n"},
		{name: "changes detailed", args: []string{"-detailed-exitcode"}, answer: ptr(planned(changes, true)), want: exitChanges},
		{name: "json", args: []string{"-json"}, answer: ptr(planned(changes, true)), want: exitOK, wantOut: `"action": "+"`},
		{name: "invalid", args: nil, answer: &daemon.PlanAnswer{Result: "failure", Error: "/etc/kglb/web.hcl:2:10: invalid IP address"}, want: exitInvalid, wantOut: "web.hcl:2:10"},
		{name: "refused", args: []string{"-detailed-exitcode"}, answer: &daemon.PlanAnswer{Result: "refused", Guard: "reload would delete 2 of 2 services", Error: "reload would delete 2 of 2 services", Plan: none}, want: exitInvalid, wantErr: "2 of 2"},
		{name: "no daemon", args: nil, want: exitNoDaemon, wantErr: "no kglb daemon answers"},
		{name: "two dirs", args: []string{"/a", "/b"}, want: exitUsage},
		{name: "bad flag", args: []string{"-frob"}, want: exitUsage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "control.sock")
			if tt.answer != nil {
				sock = planDaemon(t, *tt.answer)
			}
			args := append([]string{"plan", "-socket", sock}, tt.args...)
			code, out, errOut := runCmd(args...)
			if code != tt.want || !strings.Contains(out, tt.wantOut) || !strings.Contains(errOut, tt.wantErr) {
				t.Errorf("kglb plan %v = %d\nstdout: %s\nstderr: %s\nwant %d, %q, %q", tt.args, code, out, errOut, tt.want, tt.wantOut, tt.wantErr)
			}
			if strings.Contains(out, "\x1b[") {
				t.Errorf("colour when stdout is no terminal: %q", out)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }
