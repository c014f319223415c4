package main

import (
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kglb/kglb/daemon"
)

// fakeDaemon answers the control socket's reload as a daemon would, with
// the answer given, and /status with one service.
func fakeDaemon(t *testing.T, code int, answer daemon.ReloadAnswer) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "control.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /reload", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(answer)
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(daemon.Status{Services: []daemon.ServiceStatus{{Name: "web", Endpoint: "198.51.100.10:80"}}})
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return sock
}

// status and reload read no config: a broken /etc/kglb (here, a -config
// flag they no longer have) cannot stop them. Exit codes: 0 applied or
// unchanged, 1 rejected with the positions, 2 usage, 3 no daemon.
func TestReloadAndStatusExitCodes(t *testing.T) {
	positioned := "/etc/kglb/web.hcl:2:10: invalid IP address \"198.51.100.999\""
	tests := []struct {
		name     string
		args     []string
		sock     string
		want     int
		wantOut  string
		wantErr  string
		noSocket bool
	}{
		{name: "applied", args: []string{"reload"}, sock: fakeDaemon(t, 200, daemon.ReloadAnswer{Result: "success"}), want: exitOK, wantOut: "config success"},
		{name: "unchanged", args: []string{"reload", "-force"}, sock: fakeDaemon(t, 200, daemon.ReloadAnswer{Result: "unchanged"}), want: exitOK, wantOut: "config unchanged"},
		{name: "invalid", args: []string{"reload"}, sock: fakeDaemon(t, 422, daemon.ReloadAnswer{Result: "failure", Error: positioned}), want: exitInvalid, wantErr: positioned},
		{name: "guard", args: []string{"reload"}, sock: fakeDaemon(t, 422, daemon.ReloadAnswer{Result: "refused", Error: "reload would delete 7 of 7 services"}), want: exitInvalid, wantErr: "7 of 7"},
		{name: "status", args: []string{"status"}, sock: fakeDaemon(t, 200, daemon.ReloadAnswer{}), want: exitOK, wantOut: "198.51.100.10:80"},
		{name: "no daemon reload", args: []string{"reload"}, noSocket: true, want: exitNoDaemon, wantErr: "no kglb daemon answers"},
		{name: "no daemon status", args: []string{"status"}, noSocket: true, want: exitNoDaemon, wantErr: "is kglb running?"},
		{name: "argument", args: []string{"reload", "/etc/kglb"}, noSocket: true, want: exitUsage},
		{name: "config flag is gone", args: []string{"status", "-config", "/etc/kglb"}, noSocket: true, want: exitUsage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sock := tt.sock
			if tt.noSocket {
				sock = filepath.Join(t.TempDir(), "control.sock")
			}
			args := append([]string{tt.args[0], "-socket", sock}, tt.args[1:]...)
			code, out, errOut := runCmd(args...)
			if code != tt.want || !strings.Contains(out, tt.wantOut) || !strings.Contains(errOut, tt.wantErr) {
				t.Errorf("kglb %v = %d\nstdout: %s\nstderr: %s\nwant %d, %q, %q", tt.args, code, out, errOut, tt.want, tt.wantOut, tt.wantErr)
			}
		})
	}
}
