package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/hashicorp/go-hclog"
	"github.com/kglb/kglb/bgp"
	"github.com/kglb/kglb/config"
	"github.com/kglb/kglb/health"
	"github.com/kglb/kglb/ipvs"
	"github.com/kglb/kglb/lb"
	"github.com/kglb/kglb/vip"
	"github.com/prometheus/client_golang/prometheus"
)

// upProber says up for every target it was given, and reports each new
// target's first verdict as the scheduler does.
type upProber struct {
	mu      sync.Mutex
	targets []health.Target
	ch      chan []health.Change
}

func newUpProber() *upProber { return &upProber{ch: make(chan []health.Change, 16)} }

func (p *upProber) Update(ts []health.Target) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var news []health.Change
	for _, t := range ts {
		if !slices.Contains(p.targets, t) {
			news = append(news, health.Change{Key: t, State: health.Up})
		}
	}
	p.targets = ts
	if len(news) > 0 {
		p.ch <- news
	}
	return nil
}
func (p *upProber) Changes() <-chan []health.Change { return p.ch }
func (p *upProber) Lookup(t health.Target) (health.Status, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if slices.Contains(p.targets, t) {
		return health.Status{Target: t, State: health.Up}, true
	}
	return health.Status{}, false
}

type routes struct{ n int }

func (r *routes) Apply(context.Context, []lb.Route) error { r.n++; return nil }
func (r *routes) WithdrawAll(context.Context) error       { return nil }

const planRunning = `
service "web" {
  vip  = "198.51.100.10"
  port = 443
  real "203.0.113.11" {}
  real "203.0.113.12" {}
  real "203.0.113.13" {}
  check "tcp" {}
}

service "old" {
  vip  = "198.51.100.20"
  port = 80
  real "203.0.113.21" {}
  check "tcp" {}
}
`

const planCandidate = `
service "web" {
  vip       = "198.51.100.10"
  port      = 443
  scheduler = "mh"
  drain     = "30s"
  real "203.0.113.11" { weight = 50 }
  real "203.0.113.12" {}
  real "203.0.113.14" {}
  check "tcp" {}
  announce {
    med = 20
  }
}

service "dns" {
  vip      = "198.51.100.30"
  port     = 53
  protocol = "udp"
  real "203.0.113.31" {}
  real "203.0.113.32" {}
}
`

func writeDir(t *testing.T, hcl string) string {
	t.Helper()
	return writeDirBGP(t, "", hcl)
}

// writeDirBGP is writeDir with neighbors in the bgp block.
func writeDirBGP(t *testing.T, neighbors, hcl string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "kglb.hcl"), []byte("daemon {\n  state_dir = \""+t.TempDir()+"\"\n}\nbgp {\n  asn = 65010\n  router_id = \"192.0.2.10\"\n"+neighbors+"}\n"+hcl), 0o640); err != nil {
		t.Fatal(err)
	}
	return dir
}

// planDaemon runs an engine over fake kernels with the running config and
// serves the control socket; it returns the socket.
func planDaemon(t *testing.T) (string, *ipvs.Fake) {
	t.Helper()
	cfg, err := config.Load(writeDir(t, planRunning))
	if err != nil {
		t.Fatal(err)
	}
	return planDaemonWith(t, cfg, &routes{})
}

// planDaemonWith is planDaemon running cfg, announcing with ann.
func planDaemonWith(t *testing.T, cfg *config.Config, ann lb.Announcer) (string, *ipvs.Fake) {
	t.Helper()
	k := ipvs.NewFake()
	ir, err := ipvs.NewReconciler(k, ipvs.Options{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	links := vip.NewFake("kglb0")
	vr, err := vip.New(vip.Options{Kernel: links})
	if err != nil {
		t.Fatal(err)
	}
	e, err := lb.NewEngine(lb.Options{IPVS: ir, VIPs: vr, Announcer: ann, Prober: newUpProber()}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx, make(chan *config.Config)) }()
	t.Cleanup(func() { cancel(); <-done })
	// Every real up: the first pass, then the first verdicts, written to
	// the kernel. Status shows a health pass's decisions as the pass makes
	// them, before its writes: the kernel is the one to ask for the writes.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		st, _ := e.Status()
		if !slices.ContainsFunc(st.Services, func(s lb.ServiceStatus) bool { return s.Healthy < s.Total }) &&
			len(st.Services) == len(cfg.Services) && inKernel(k, st.IPVS) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("never: every real up")
		}
	}
	d := &daemon{reg: prometheus.NewRegistry(), engine: e, dir: "/etc/kglb",
		guard: func(old, new *config.Config) error { return DeleteGuard(old, new, old.Daemon.MaxDeleteShare) }}
	sock := filepath.Join(t.TempDir(), "control.sock")
	ln, err := listenControl(sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := d.controlServer(controlPolicy{uids: []uint32{uint32(os.Geteuid())}}, hclog.NewNullLogger())
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return sock, k
}

// inKernel reports whether k holds every real of want at its weight.
func inKernel(k *ipvs.Fake, want ipvs.Desired) bool {
	for _, svc := range want.Services {
		have, _ := k.Reals(svc.Key)
		for _, r := range svc.Reals {
			if !slices.ContainsFunc(have, func(h ipvs.Real) bool {
				return h.Addr == r.Addr && h.Port == r.Port && h.Weight == r.Weight
			}) {
				return false
			}
		}
	}
	return true
}

// TestPlanOverControlSocket asks a daemon (real engine and reconcilers over
// fake kernels) for the plan of an edit, and checks every kind of change
// in the review, that nothing was written, and the guard's verdict.
func TestPlanOverControlSocket(t *testing.T) {
	sock, k := planDaemon(t)
	// A real that holds connections is drained, not deleted at once.
	if err := k.SetConns(ipvs.AddrKey(ipvs.TCP, netip.MustParseAddr("198.51.100.10"), 443), ipvs.RealKey{Addr: netip.MustParseAddr("203.0.113.13"), Port: 443}, 3, 0); err != nil {
		t.Fatal(err)
	}
	before := k.String()
	k.ResetCounts()
	a, err := RequestPlan(sock, writeDir(t, planCandidate))
	if err != nil {
		t.Fatal(err)
	}
	if k.Writes().Total() != 0 || k.String() != before {
		t.Fatalf("plan wrote to the kernel: %v", k.Writes())
	}
	var b bytes.Buffer
	WritePlan(&b, a, false)
	out := b.String()
	if os.Getenv("KGLB_PRINT_PLAN") != "" {
		os.Stdout.WriteString(out)
	}
	if a.Result != "planned" || !a.Changes || a.Guard != "pass" {
		t.Errorf("answer %+v", a)
	}
	for _, want := range []string{
		"vip 198.51.100.10\n  ~ service web (tcp/198.51.100.10:443)\n      scheduler: wrr -> mh\n",
		"~ real 203.0.113.11:443: weight 100 -> 50, health up",
		"~ real 203.0.113.13:443: drained first: weight 0, deleted when idle or after 30s",
		"+ real 203.0.113.14:443: weight 0, health unknown",
		"health: 2 kept, 1 starting unknown",
		"vip 198.51.100.30\n  + service dns (udp/198.51.100.30:53)\n    + real 203.0.113.31:53: weight 100, health up\n",
		"- 198.51.100.20 (route withdrawn now; address and services removed after the hold",
		"+ 198.51.100.30 (made local)",
		"~ 198.51.100.10/32: med \"\" -> \"20\"",
		"- 198.51.100.20/32",
		"+ 198.51.100.30/32",
		"guard: pass",
		"plan: services 1 to add, 1 to change, 0 to remove; reals 3 to add, 1 to change, 1 to remove; vips 1 to add, 1 to remove; routes 1 to announce, 1 to change, 1 to withdraw;",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("plan lacks %q:\n%s", want, out)
		}
	}

	// Unchanged: "no changes".
	a, err = RequestPlan(sock, writeDir(t, planRunning))
	if err != nil {
		t.Fatal(err)
	}
	b.Reset()
	WritePlan(&b, a, false)
	if a.Changes || !strings.Contains(b.String(), "\nno changes\n") {
		t.Errorf("plan of the running config:\n%s", b.String())
	}

	// Everything deleted: the guard refuses, the plan is still there.
	a, err = RequestPlan(sock, writeDir(t, ""))
	if err != nil {
		t.Fatal(err)
	}
	if a.Result != "refused" || !strings.Contains(a.Guard, "would delete 2 of 2 services") || a.Plan == nil {
		t.Errorf("guard: %+v", a)
	}

	// Invalid: the positions.
	a, err = RequestPlan(sock, writeDir(t, "service \"x\" {\n  vip = \"198.51.100.999\"\n}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if a.Result != "failure" || !strings.Contains(a.Error, "kglb.hcl:") {
		t.Errorf("invalid: %+v", a)
	}

	// A relative directory is the client's mistake.
	if _, err := RequestPlan(sock, "etc/kglb"); err == nil {
		t.Error("relative dir accepted")
	}
	if _, err := RequestPlan(filepath.Join(t.TempDir(), "none.sock"), "/etc/kglb"); !errors.Is(err, ErrNoDaemon) {
		t.Errorf("no daemon: %v", err)
	}
}

// The -json answer (docs/plan.md) reads back as the same plan, so a
// pipeline decoding it sees everything kglb printed. KGLB_PRINT_PLAN=1
// prints it, for the docs.
func TestPlanJSONRoundTrip(t *testing.T) {
	sock, _ := planDaemon(t)
	a, err := RequestPlan(sock, writeDir(t, planCandidate))
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.MarshalIndent(a, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	var back PlanAnswer
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatalf("decode the -json answer: %v", err)
	}
	if d := cmp.Diff(a, back, equateAddrs); d != "" {
		t.Errorf("the -json answer does not read back as the plan (-plan +read back):\n%s", d)
	}
	if a.Result != "planned" || !a.Changes || a.Plan == nil || a.Plan.Empty() {
		t.Errorf("result %q, changes %v: want a plan with changes", a.Result, a.Changes)
	}
	if os.Getenv("KGLB_PRINT_PLAN") != "" {
		os.Stdout.Write(b)
	}
}

// planNeighbors is an eBGP and an iBGP neighbor, passive (kglb never
// connects to their documentation addresses; nothing connects to it): the
// plan needs no session up.
const planNeighbors = `  neighbor "tor-e" {
    address = "192.0.2.71"
    asn     = 65000
    passive = true
  }
  neighbor "tor-i" {
    address = "192.0.2.72"
    asn     = 65010
    passive = true
  }
`

// freePort is a TCP port nothing listens on now.
// planDaemonBGP is planDaemonWith over a real speaker with the eBGP and
// iBGP neighbors of planNeighbors, running planRunning; it returns the
// neighbors block for the candidates too.
func planDaemonBGP(t *testing.T) (string, *ipvs.Fake, string) {
	neighbors := "  listen_port = " + freePort(t) + "\n" + planNeighbors
	cfg, err := config.Load(writeDirBGP(t, neighbors, planRunning))
	if err != nil {
		t.Fatal(err)
	}
	sp, err := bgp.New(context.Background(), speakerConfig(cfg.BGP), bgp.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	sock, k := planDaemonWith(t, cfg, announcer{sp})
	return sock, k, neighbors
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

// TestPlanPerNeighborOverControlSocket plans through the daemon's own
// adapter of a real speaker (an eBGP and an iBGP neighbor): the routes are
// listed per neighbor as each receives them (the MED change reaches both,
// an added neighbor gets every route, a removed one loses its session).
func TestPlanPerNeighborOverControlSocket(t *testing.T) {
	sock, k, neighbors := planDaemonBGP(t)
	if err := k.SetConns(ipvs.AddrKey(ipvs.TCP, netip.MustParseAddr("198.51.100.10"), 443), ipvs.RealKey{Addr: netip.MustParseAddr("203.0.113.13"), Port: 443}, 3, 0); err != nil {
		t.Fatal(err)
	}
	a, err := RequestPlan(sock, writeDirBGP(t, neighbors, planCandidate))
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	WritePlan(&b, a, false)
	out := b.String()
	if os.Getenv("KGLB_PRINT_PLAN") != "" {
		os.Stdout.WriteString(out)
	}
	for _, want := range []string{
		"bgp neighbor tor-e (192.0.2.71, ebgp)\n" +
			"  ~ 198.51.100.10/32: med \"\" -> \"20\"\n" +
			"  - 198.51.100.20/32\n" +
			"  + 198.51.100.30/32: next_hop self, as_path 65010\n",
		"bgp neighbor tor-i (192.0.2.72, ibgp)\n" +
			"  ~ 198.51.100.10/32: med \"\" -> \"20\"\n" +
			"  - 198.51.100.20/32\n" +
			"  + 198.51.100.30/32: next_hop self, local_pref 100\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("plan lacks %q:\n%s", want, out)
		}
	}
	// One neighbor replaced by another.
	moved := strings.Replace(neighbors, `"tor-i" {
    address = "192.0.2.72"`, `"tor-n" {
    address = "192.0.2.73"`, 1)
	a, err = RequestPlan(sock, writeDirBGP(t, moved, planRunning))
	if err != nil {
		t.Fatal(err)
	}
	b.Reset()
	WritePlan(&b, a, false)
	out = b.String()
	for _, want := range []string{
		"bgp - neighbor tor-i (192.0.2.72, ibgp): session removed, its routes go with it\n",
		"bgp + neighbor tor-n (192.0.2.73, ibgp): session added, sent every route\n" +
			"  + 198.51.100.10/32: next_hop self, local_pref 100\n" +
			"  + 198.51.100.20/32: next_hop self, local_pref 100\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("plan lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "tor-e") {
		t.Errorf("an unchanged neighbor is listed:\n%s", out)
	}
}

// TestPlanSchemaDocumented: every field of the -json answer is in the
// schema of docs/plan.md, and a plan with BGP neighbors reads back whole.
func TestPlanSchemaDocumented(t *testing.T) {
	doc, err := os.ReadFile("../docs/plan.md")
	if err != nil && os.Getenv("KGLB_VM") == "1" {
		doc = nil // the VM holds the package's testdata only: the host run checks the docs
	} else if err != nil {
		t.Fatal(err)
	}
	seen := map[reflect.Type]bool{}
	var walk func(reflect.Type, string)
	walk = func(ty reflect.Type, at string) {
		for ty.Kind() == reflect.Pointer || ty.Kind() == reflect.Slice {
			ty = ty.Elem()
		}
		if ty.Kind() != reflect.Struct || seen[ty] || ty.PkgPath() == "net/netip" {
			return
		}
		seen[ty] = true
		for i := range ty.NumField() {
			f := ty.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "-" || !f.IsExported() {
				continue
			}
			if doc != nil && !bytes.Contains(doc, []byte(`"`+name+`"`)) {
				t.Errorf("docs/plan.md lacks %s.%s (%q)", at, f.Name, name)
			}
			walk(f.Type, at+"."+f.Name)
		}
	}
	walk(reflect.TypeOf(PlanAnswer{}), "PlanAnswer")

	sock, _, neighbors := planDaemonBGP(t)
	a, err := RequestPlan(sock, writeDirBGP(t, neighbors, planCandidate))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(a)
	var back PlanAnswer
	if err := json.Unmarshal(b, &back); err != nil || len(a.Plan.Neighbors) != 2 {
		t.Errorf("the -json answer with neighbors does not read back (%v):\n%s", err, b)
	}
	if d := cmp.Diff(a, back, equateAddrs); d != "" {
		t.Errorf("the -json answer with neighbors does not read back (-plan +read back):\n%s", d)
	}
}

// equateAddrs lets cmp compare netip values (their fields are unexported).
var equateAddrs = cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{}, netip.AddrPort{})
