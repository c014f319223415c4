package daemon

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// The servers free the stats address and remove the control socket once
// their context ends: a daemon restarted in the same process binds again.
func TestServeFreesAddresses(t *testing.T) {
	addr, sock := freeAddr(t), filepath.Join(t.TempDir(), "control.sock")
	lns, err := listen(addr, sock)
	if err != nil {
		t.Fatal(err)
	}
	d := &daemon{reg: prometheus.NewRegistry(), log: hclog.NewNullLogger()}
	ctx, cancel := context.WithCancel(context.Background())
	errs, closed := d.serve(ctx, lns)
	for _, c := range [][2]string{{"tcp", addr}, {"unix", sock}} {
		if conn, err := net.Dial(c[0], c[1]); err != nil {
			t.Fatalf("not listening on %s: %v", c[1], err)
		} else {
			conn.Close()
		}
	}
	cancel()
	<-closed
	select {
	case err := <-errs:
		t.Errorf("server reported %v on a clean shutdown", err)
	default:
	}
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("control socket left behind: %v", err)
	}
	lns, err = listen(addr, sock)
	if err != nil {
		t.Fatalf("addresses still held after shutdown: %v", err)
	}
	lns.close()
}

// A taken stats address, or a control socket someone answers on, stops
// the start with the address and the reason; a stale socket is replaced.
func TestListenRefusesTakenAddresses(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	_, err = listen(busy.Addr().String(), "")
	if err == nil || !strings.Contains(err.Error(), "listen on stats_address "+busy.Addr().String()+": bind: address already in use") {
		t.Errorf("taken stats address: %v", err)
	}

	sock := filepath.Join(t.TempDir(), "control.sock")
	squat, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	squat.(*net.UnixListener).SetUnlinkOnClose(false)
	if _, err := listen(freeAddr(t), sock); err == nil || !strings.Contains(err.Error(), "another process answers on it") {
		t.Errorf("live control socket: %v", err)
	}
	squat.Close() // the file stays: a stale socket, as after a crash
	lns, err := listen(freeAddr(t), sock)
	if err != nil {
		t.Fatalf("stale control socket: %v", err)
	}
	defer lns.close()
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode().Perm() != 0o660 {
		t.Errorf("control socket mode: %v, %v; want 0660", fi.Mode(), err)
	}
}

// The stats listener only reads: every other method gets 405, on every
// path (POST /reload included), and GET still answers.
func TestStatsListenerReadOnly(t *testing.T) {
	d := &daemon{reg: prometheus.NewRegistry()}
	h := readOnly(d.statsHandler())
	for _, m := range []string{"POST", "PUT", "DELETE", "PATCH"} {
		for _, path := range []string{"/reload?force=1", "/reload", "/metrics", "/status", "/healthz", "/"} {
			w := httptest.NewRecorder()
			h.ServeHTTP(w, httptest.NewRequest(m, path, nil))
			if w.Code != http.StatusMethodNotAllowed || w.Header().Get("Allow") != "GET, HEAD" {
				t.Errorf("%s %s: %d (Allow %q), want 405", m, path, w.Code, w.Header().Get("Allow"))
			}
		}
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	if w.Code != http.StatusOK {
		t.Errorf("GET /metrics: %d", w.Code)
	}
}

// The stats listener's /metrics is one page Prometheus reads: the
// registry's families and each real's series from the health scheduler and
// the kernel's counters, every family once, a series per real and label.
func TestMetricsPage(t *testing.T) {
	reg, sched, ir := scrapeFixture(t, 2, 3, 0)
	d := &daemon{reg: reg, sched: sched, ipvs: ir}
	w := httptest.NewRecorder()
	readOnly(d.statsHandler()).ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	if w.Code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", w.Code, w.Body.String())
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	page, err := p.TextToMetricFamilies(w.Body)
	if err != nil {
		t.Fatalf("parse the page: %v", err)
	}
	want := map[string]int{ // 2 services x 3 reals, one check each, none probed yet
		"kglb_health_state":                   6,
		"kglb_ipvs_service_connections_total": 2,
		"kglb_ipvs_service_packets_total":     4,
		"kglb_ipvs_service_bytes_total":       4,
		"kglb_ipvs_real_connections":          12,
		"kglb_ipvs_real_bytes_total":          12,
		"kglb_ipvs_real_packets_total":        12,
		"kglb_ipvs_real_weight":               6,
		"kglb_health_targets":                 3, // the registry's, beside them
	}
	for name, n := range want {
		if got := len(page[name].GetMetric()); got != n {
			t.Errorf("%s: %d series, want %d", name, got, n)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	labels := map[string]string{}
	for _, lp := range page["kglb_ipvs_real_weight"].GetMetric()[0].GetLabel() {
		labels[lp.GetName()] = lp.GetValue()
	}
	if labels["service"] != "tcp 198.51.100.0:1000" || labels["real"] != "10.1.0.0:80" {
		t.Errorf("first kglb_ipvs_real_weight series: labels %v", labels)
	}
	if v := page["kglb_health_state"].GetMetric()[0].GetGauge().GetValue(); v != -1 {
		t.Errorf("kglb_health_state of an unprobed real: %v, want -1", v)
	}
}

func TestControlPolicy(t *testing.T) {
	p := controlPolicy{uids: []uint32{0, 998}, gids: []uint32{998}}
	tests := []struct {
		name string
		peer peer
		want bool
	}{
		{"root", peer{UID: 0, GID: 0}, true},
		{"the daemon's user", peer{UID: 998, GID: 998}, true},
		{"primary group kglb", peer{UID: 1000, GID: 998}, true},
		{"member of kglb", peer{UID: 1000, GID: 1000, Groups: []uint32{27, 998}}, true},
		{"nobody", peer{UID: 65534, GID: 65534}, false},
		{"other groups", peer{UID: 1000, GID: 1000, Groups: []uint32{27, 100}}, false},
	}
	for _, tt := range tests {
		if got := p.allows(tt.peer); got != tt.want {
			t.Errorf("%s: allows = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// The control server reads the peer's credentials from the kernel and
// refuses a peer the policy does not allow, whatever the socket's mode.
func TestControlChecksPeerCredentials(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "control.sock")
	ln, err := listenControl(sock)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(sock, 0o666); err != nil { // as if someone loosened it
		t.Fatal(err)
	}
	d := &daemon{reg: prometheus.NewRegistry()}
	// A policy that knows only another user: this test's process is refused.
	srv := d.controlServer(controlPolicy{uids: []uint32{12345}}, hclog.NewNullLogger())
	go srv.Serve(ln)
	defer srv.Close()
	c := controlClient(sock, 0)
	resp, err := c.Post("http://kglb/reload?force=1", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("POST /reload from a peer outside the policy: %s, want 403", resp.Status)
	}
	if _, err := RequestReload(sock, false); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("RequestReload from a refused peer: %v", err)
	}

	// The credentials are the kernel's: this process's pid and uid.
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	p, err := peerOf(conn) // the server's end, seen from here: the same process
	if err != nil {
		t.Fatal(err)
	}
	if int(p.PID) != os.Getpid() || int(p.UID) != os.Geteuid() || int(p.GID) != os.Getegid() {
		t.Errorf("peer = %+v; want pid %d uid %d gid %d", p, os.Getpid(), os.Geteuid(), os.Getegid())
	}
}

// A client finds no daemon: the error says so and wraps ErrNoDaemon.
func TestClientNoDaemon(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "control.sock")
	if _, err := RequestReload(sock, false); !errors.Is(err, ErrNoDaemon) || !strings.Contains(err.Error(), sock) {
		t.Errorf("RequestReload with no socket: %v", err)
	}
	if _, err := FetchControl(sock); !errors.Is(err, ErrNoDaemon) {
		t.Errorf("FetchControl with no socket: %v", err)
	}
	if _, err := Fetch(freeAddr(t)); !errors.Is(err, ErrNoDaemon) {
		t.Errorf("Fetch with nothing listening: %v", err)
	}
}

// openFDs is how many file descriptors this process has open.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestStatsListenerBoundsConnections: the stats listener is open to anyone
// who reaches its address, and every input is untrusted. Clients that
// connect and send nothing (or trickle headers) must not each take one of
// the daemon's file descriptors, which netlink, the health probes, BGP and
// config reads share under LimitNOFILE: the listener holds a bounded number
// of connections, the others wait in the kernel's backlog, and a scrape
// gets through once they are gone.
func TestStatsListenerBoundsConnections(t *testing.T) {
	addr := freeAddr(t)
	lns, err := listen(addr, "")
	if err != nil {
		t.Fatal(err)
	}
	d := &daemon{reg: prometheus.NewRegistry(), log: hclog.NewNullLogger()}
	ctx, cancel := context.WithCancel(context.Background())
	_, closed := d.serve(ctx, lns)
	defer func() { cancel(); <-closed }()

	base := openFDs(t)
	const clients = 300
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range clients {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	// Let the server accept what it will: the count stops moving.
	held, last := 0, -1
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		held = openFDs(t) - base - clients
		if held == last {
			break
		}
		last = held
	}
	if held > maxStatsConns+4 { // a few for the runtime's own
		t.Errorf("the stats listener holds %d idle connections of %d, want at most maxStatsConns (%d)", held, clients, maxStatsConns)
	}
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("a scrape once the idle clients left: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("a scrape once the idle clients left: %s", resp.Status)
	}
}
