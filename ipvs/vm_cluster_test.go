//go:build vmtest

package ipvs

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/kglb/kglb/internal/nstest"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The cluster lab: kglb nodes behind a router that spreads flows over them
// by ECMP, as docs/cluster.md describes. Every piece is its own network
// namespace in the VM:
//
//	client 10.10.0.2 -- router -- node i 10.20.i.2 (its own IPVS, kglb, BGP session)
//	                       \---- real j 10.30.j.2 (tunl0 up, VIP on lo)
//
// The router runs BIRD 2 with one eBGP session per node (hold time 3 s) and
// a kernel protocol that merges the nodes' paths into one multipath route
// to the VIP, hashed on L4 (fib_multipath_hash_policy=1). Nodes tunnel to
// the reals through the router; reals answer the client straight from the
// VIP (direct return), never through a node. Each node has the package's
// IPVS sysctls (sloppy_tcp, schedule_icmp, expire_nodest_conn).
//
// The edit histories are compared first with a bare Reconciler on each
// node (it lets the test build a list in arrival order, as an older kglb
// or ipvsadm would). Then each node runs the real kglb daemon (the
// static binary vmtest packs from testdata/vm-binaries.txt) on the same
// state directory, which adopts that table and announces the VIP to BIRD.
// From there on every change is the daemon's: a node lost is a kill -9 of
// its kglb (the kernel closes its BGP session), a node that dies is a kill
// -9 behind an uplink that drops every packet (the hold timer ends the
// session), a drain is kglb's SIGTERM stop, a real is added by a config
// edit and `kglb reload`. kglb leaves IPVS in place after a kill (on_stop
// applies only to a clean stop), as it would on a real node.

const (
	clusterVIP   = "203.0.113.80"
	clusterNodes = 3
	clusterConns = 240   // long-lived client connections streaming data
	clusterFlows = 10000 // compared between nodes 1 and 2
	// Fewer for the third node and for the share that moves when a real
	// is added (its standard error at 4,000 flows is 0.007).
	clusterFewFlows = 2000
	clusterAddFlows = 4000

	routerASN = 65000
	nodeASN   = 65010
)

type clusterLab struct {
	tb     testing.TB
	dir    string
	client *nstest.NS
	router *nstest.NS
	nodes  []*clusterNode
	reals  []Real        // real j+1 is 10.30.(j+1).2
	realNS []*nstest.NS  // the reals' namespaces
	bird   *clusterProc  // BIRD in the router namespace
	stall  time.Duration // the longest wait for an echo in the last settle

	mu      sync.Mutex
	streams []*stream
	stop    chan struct{}
	wg      sync.WaitGroup
}

type clusterNode struct {
	i    int // 0-based
	ns   *nstest.NS
	k    *Netlink
	dir  string      // state directory; config in dir/conf, log in dir/kglb.log
	rec  *Reconciler // the bare reconciler, until kglb takes over
	kglb *clusterProc
}

// clusterProc is a process the test started (BIRD or kglb); it is only
// ever signalled by its own PID.
type clusterProc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func (p *clusterProc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// signal sends sig and waits until the process is gone; a process that
// outlives wait is killed, and reported so.
func (p *clusterProc) signal(sig syscall.Signal, wait time.Duration) error {
	if !p.running() {
		return fmt.Errorf("%s had already exited: %v", p.cmd.Path, p.cmd.ProcessState)
	}
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
		return nil
	case <-time.After(wait):
		p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not end within %v of %v: killed", p.cmd.Path, wait, sig)
	}
}

// program finds a program vmtest packs into the VM.
func program(tb testing.TB, name string) string {
	tb.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		tb.Fatalf("%s: %v (vmtest packs it from ipvs/testdata/vm-binaries.txt; outside the VM install it)", name, err)
	}
	return p
}

func newClusterLab(tb testing.TB, nReals int) *clusterLab {
	tb.Helper()
	nstest.Require(tb)
	program(tb, "bird")
	program(tb, "kglb")
	l := &clusterLab{tb: tb, dir: tb.TempDir(), client: nstest.New(tb), router: nstest.New(tb), stop: make(chan struct{})}
	r := l.router
	r.Sysctl(tb, "net.ipv4.ip_forward", "1")
	r.Sysctl(tb, "net.ipv4.fib_multipath_hash_policy", "1")
	r.Sysctl(tb, "net.ipv4.conf.all.rp_filter", "0")
	r.Sysctl(tb, "net.ipv4.conf.default.rp_filter", "0")
	nstest.Veth(tb, nstest.End{NS: l.client, Name: "c0", Addrs: []string{"10.10.0.2/24"}},
		nstest.End{NS: r, Name: "r0", Addrs: []string{"10.10.0.1/24"}})
	l.client.AddRoute(tb, "default", "10.10.0.1")
	// A veth pair hands the client socket's flow hash to the router, whose
	// multipath then uses it instead of hashing the 5-tuple, and TCP picks
	// a new hash at each retransmission timeout, so a stalled flow would
	// hop to another node by itself. Through a real router a flow keeps
	// its path until the router drops it: keep the hash.
	l.client.Sysctl(tb, "net.core.txrehash", "0")
	for i := 1; i <= clusterNodes; i++ {
		ns := nstest.New(tb)
		nstest.Veth(tb, nstest.End{NS: ns, Name: "n0", Addrs: []string{fmt.Sprintf("10.20.%d.2/24", i)}},
			nstest.End{NS: r, Name: fmt.Sprintf("n%d", i), Addrs: []string{fmt.Sprintf("10.20.%d.1/24", i)}})
		ns.AddRoute(tb, "default", fmt.Sprintf("10.20.%d.1", i))
		// The sources of the flow probes (flowChoices), and the VIP while
		// the bare reconcilers run (kglb makes it local itself).
		ns.AddDummy(tb, "probe0", clusterVIP+"/32", "10.99.0.1/32", "10.99.0.2/32", "10.99.0.3/32")
		// What the package's /usr/lib/sysctl.d/kglb.conf sets. (With
		// expire_nodest_conn=1 the re-adds of an mh insertion break
		// connections: see docs/cluster.md.)
		ns.Sysctl(tb, "net.ipv4.vs.sloppy_tcp", "1")
		ns.Sysctl(tb, "net.ipv4.vs.schedule_icmp", "1")
		ns.Sysctl(tb, "net.ipv4.vs.expire_nodest_conn", "0")
		k, err := NewNetlink(ns.Path)
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(k.Close)
		n := &clusterNode{i: i - 1, ns: ns, k: k, dir: tb.TempDir()}
		n.restart(tb)
		l.nodes = append(l.nodes, n)
	}
	for j := 1; j <= nReals; j++ {
		ns := nstest.New(tb)
		addr := fmt.Sprintf("10.30.%d.2", j)
		nstest.Veth(tb, nstest.End{NS: ns, Name: "e0", Addrs: []string{addr + "/24"}},
			nstest.End{NS: r, Name: fmt.Sprintf("s%d", j), Addrs: []string{fmt.Sprintf("10.30.%d.1/24", j)}})
		ns.AddRoute(tb, "default", fmt.Sprintf("10.30.%d.1", j))
		ns.TunnelUp(tb)
		ns.AddLoAddr(tb, clusterVIP+"/32")
		l.serveEcho(ns.Listen(tb, "tcp", clusterVIP+":80"), fmt.Sprintf("s%d", j))
		l.reals = append(l.reals, Real{Addr: netip.MustParseAddr(addr), Port: 80, Weight: 100, Forward: ForwardTunnel})
		l.realNS = append(l.realNS, ns)
	}
	// The reals answer the flow probes' SYNs (flowChoices) to 10.99.0.0/24:
	// the router drops them without a word.
	bh := &netlink.Route{Dst: &net.IPNet{IP: net.IPv4(10, 99, 0, 0).To4(), Mask: net.CIDRMask(24, 32)}, Type: unix.RTN_BLACKHOLE}
	if err := r.Netlink(tb).RouteAdd(bh); err != nil {
		tb.Fatalf("router: blackhole 10.99.0.0/24: %v", err)
	}
	tb.Cleanup(l.close)
	// Registered last, so run first: the processes end before their
	// namespaces go, and their logs are shown on a failure.
	tb.Cleanup(l.stopProcs)
	l.startBIRD()
	return l
}

// serveHealth answers the nodes' TCP checks on real j's own address.
func (l *clusterLab) serveHealth(j int) {
	l.serveEcho(l.realNS[j-1].Listen(l.tb, "tcp", l.reals[j-1].Addr.String()+":80"), "hc")
}

// restart is a restart of the bare reconciler on the node: a new
// Reconciler on the same state directory, which adopts what the kernel
// holds.
func (n *clusterNode) restart(tb testing.TB) {
	tb.Helper()
	rec, err := NewReconciler(n.k, Options{StateDir: n.dir})
	if err != nil {
		tb.Fatal(err)
	}
	n.rec = rec
}

// service is the cluster's service with the given reals (1-based).
func (l *clusterLab) service(reals ...int) Desired {
	s := Service{Key: tcp(clusterVIP, 80), Scheduler: "mh", Flags: FlagMHPort | FlagMHFallback}
	for _, j := range reals {
		s.Reals = append(s.Reals, l.reals[j-1])
	}
	return Desired{Services: []Service{s}}
}

func (l *clusterLab) apply(n *clusterNode, d Desired) Result {
	l.tb.Helper()
	res, err := n.rec.Apply(ctx, d)
	if err != nil {
		l.tb.Fatal(err)
	}
	return res
}

// birdConf is the router: one passive eBGP session per node with a 3 s
// hold time, and the nodes' equal paths merged into one multipath kernel
// route (docs/cluster.md shows the same for an operator's router).
var birdConf = template.Must(template.New("bird").Parse(`# generated by TestVMCluster
router id 10.10.0.1;
log "{{.Dir}}/bird.log" all;
protocol device { scan time 10; }
protocol kernel {
	ipv4 { import none; export all; };
	merge paths on;
}
{{range .Nodes}}
protocol bgp node{{.}} {
	local 10.20.{{.}}.1 as {{$.RouterASN}};
	neighbor 10.20.{{.}}.2 as {{$.NodeASN}};
	passive on;
	hold time 3;
	keepalive time 1;
	error wait time 1, 2;
	ipv4 { import all; export none; };
}
{{end}}`))

func (l *clusterLab) birdSock() string { return filepath.Join(l.dir, "bird.ctl") }

// startBIRD starts BIRD in the router namespace.
func (l *clusterLab) startBIRD() {
	tb := l.tb
	tb.Helper()
	var nodes []int
	for i := range l.nodes {
		nodes = append(nodes, i+1)
	}
	var b bytes.Buffer
	if err := birdConf.Execute(&b, map[string]any{"Dir": l.dir, "Nodes": nodes, "RouterASN": routerASN, "NodeASN": nodeASN}); err != nil {
		tb.Fatal(err)
	}
	conf := filepath.Join(l.dir, "bird.conf")
	if err := os.WriteFile(conf, b.Bytes(), 0o600); err != nil {
		tb.Fatal(err)
	}
	l.bird = startProc(tb, l.router, filepath.Join(l.dir, "bird.out"),
		program(tb, "bird"), "-f", "-c", conf, "-s", l.birdSock(), "-P", filepath.Join(l.dir, "bird.pid"))
	l.wait("the BIRD control socket", func() bool {
		_, err := l.birdc("show", "status")
		return err == nil
	})
}

func (l *clusterLab) birdc(args ...string) (string, error) {
	out, err := exec.Command(program(l.tb, "birdc"), append([]string{"-s", l.birdSock()}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("birdc %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// startProc starts a program inside ns (a child inherits the namespace of
// the thread that forks it), its output appended to logPath.
func startProc(tb testing.TB, ns *nstest.NS, logPath, path string, args ...string) *clusterProc {
	tb.Helper()
	out, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		tb.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = out, out
	ns.Run(tb, cmd.Start)
	p := &clusterProc{cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(p.done) }()
	return p
}

// stopProcs ends kglb and BIRD (by the PIDs the test started), and on a
// failure shows their logs and BIRD's view of the sessions.
func (l *clusterLab) stopProcs() {
	if l.tb.Failed() {
		if l.bird != nil && l.bird.running() {
			if out, err := l.birdc("show", "protocols"); err == nil {
				l.tb.Logf("birdc show protocols:\n%s", out)
			}
		}
		logTail(l.tb, "bird.log", filepath.Join(l.dir, "bird.log"))
		for _, n := range l.nodes {
			if n.kglb != nil && !n.kglb.running() {
				l.tb.Logf("node %d: kglb exited: %v", n.i+1, n.kglb.cmd.ProcessState)
			}
			logTail(l.tb, fmt.Sprintf("node %d kglb.log", n.i+1), filepath.Join(n.dir, "kglb.log"))
		}
	}
	for _, n := range l.nodes {
		if n.kglb != nil {
			n.kglb.signal(syscall.SIGKILL, time.Minute)
		}
	}
	if l.bird != nil {
		l.bird.signal(syscall.SIGTERM, 10*time.Second)
	}
}

func logTail(tb testing.TB, what, path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 60 {
		lines = lines[len(lines)-60:]
	}
	tb.Logf("%s (last %d lines):\n%s", what, len(lines), strings.Join(lines, "\n"))
}

// wait polls cond; the deadline only bounds a broken run, it is not an
// assertion on speed.
func (l *clusterLab) wait(what string, cond func() bool) {
	l.tb.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			l.tb.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// kglbConf is a node's configuration: the cluster's service with the given
// reals, announced to the router with a 3 s hold time.
var kglbConf = template.Must(template.New("kglb").Parse(`# generated by TestVMCluster
daemon {
  state_dir = "{{.State}}"
  stop_hold = "3s"
  on_stop   = "keep"
}

bgp {
  asn       = {{.NodeASN}}
  router_id = "10.20.{{.Node}}.2"
  neighbor "router" {
    address       = "10.20.{{.Node}}.1"
    asn           = {{.RouterASN}}
    hold_time     = "3s"
    keepalive     = "1s"
    connect_retry = "1s"
  }
}

service "web" {
  vip       = "{{.VIP}}"
  port      = 80
  scheduler = "mh"
  flags     = ["mh-port", "mh-fallback"]
  forward   = "tunnel"
{{range .Reals}}
  real "{{.}}" {}
{{- end}}

  # Lenient: a check that times out on the loaded test VM must not take a
  # real down on one node (its weight 0 there would change that node's
  # table, which is what the test must not see).
  check "tcp" {
    interval = "2s"
    timeout  = "1500ms"
    fall     = 10
  }
}
`))

func (n *clusterNode) confDir() string { return filepath.Join(n.dir, "conf") }
func (n *clusterNode) sock() string    { return filepath.Join(n.dir, "control.sock") }

// configure writes the node's kglb configuration with the given reals
// (1-based), as an operator's deployment would: a new file renamed over
// the old one.
func (l *clusterLab) configure(n *clusterNode, reals ...int) {
	tb := l.tb
	tb.Helper()
	var addrs []string
	for _, j := range reals {
		addrs = append(addrs, l.reals[j-1].Addr.String())
	}
	var b bytes.Buffer
	err := kglbConf.Execute(&b, map[string]any{"State": n.dir, "Node": n.i + 1, "NodeASN": nodeASN,
		"RouterASN": routerASN, "VIP": clusterVIP, "Reals": addrs})
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.MkdirAll(n.confDir(), 0o755); err != nil {
		tb.Fatal(err)
	}
	tmp := filepath.Join(n.confDir(), ".web.hcl.tmp")
	if err := os.WriteFile(tmp, b.Bytes(), 0o644); err != nil {
		tb.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(n.confDir(), "web.hcl")); err != nil {
		tb.Fatal(err)
	}
}

// startKGLB runs `kglb run` inside the node's namespace, with the node's
// own config directory, state directory and control socket.
func (l *clusterLab) startKGLB(n *clusterNode) {
	l.tb.Helper()
	n.kglb = startProc(l.tb, n.ns, filepath.Join(n.dir, "kglb.log"),
		program(l.tb, "kglb"), "run", "-config", n.confDir(), "-socket", n.sock())
}

// reload runs `kglb reload` against the node's control socket.
func (l *clusterLab) reload(n *clusterNode) {
	l.tb.Helper()
	out, err := exec.Command(program(l.tb, "kglb"), "reload", "-socket", n.sock()).CombinedOutput()
	if err != nil {
		l.tb.Fatalf("node %d: kglb reload: %v: %s", n.i+1, err, out)
	}
}

// ipvsWrites is the node's kglb_ipvs_writes_total (successful writes),
// read from its stats listener (127.0.0.1:5678 in its namespace).
func (l *clusterLab) ipvsWrites(n *clusterNode) int {
	l.tb.Helper()
	client := &http.Client{Timeout: nstest.DialTimeout, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return n.ns.DialContext(ctx, nil, network, addr)
		},
	}}
	defer client.CloseIdleConnections()
	resp, err := client.Get("http://127.0.0.1:5678/metrics")
	if err != nil {
		l.tb.Fatalf("node %d: read metrics: %v", n.i+1, err)
	}
	defer resp.Body.Close()
	total := 0
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 4<<20))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "kglb_ipvs_writes_total{") || !strings.Contains(line, `outcome="ok"`) {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			l.tb.Fatalf("node %d: metrics line %q: %v", n.i+1, line, err)
		}
		total += int(v)
	}
	if err := sc.Err(); err != nil {
		l.tb.Fatalf("node %d: read metrics: %v", n.i+1, err)
	}
	return total
}

// routerView is what the router holds for the VIP: the BGP sessions whose
// path BIRD has, and the next hops of the kernel route it installed.
func (l *clusterLab) routerView() (bird, kernel []string) {
	l.tb.Helper()
	out, err := l.birdc("show", "route", clusterVIP+"/32")
	if err != nil && !strings.Contains(out, "Network not found") { // no path at all
		l.tb.Fatal(err)
	}
	for _, m := range birdProtoRE.FindAllStringSubmatch(out, -1) {
		bird = append(bird, m[1])
	}
	dst := &net.IPNet{IP: net.ParseIP(clusterVIP).To4(), Mask: net.CIDRMask(32, 32)}
	var rs []netlink.Route
	err = nstest.Redump(func() (err error) {
		rs, err = l.router.Netlink(l.tb).RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: dst}, netlink.RT_FILTER_DST)
		return err
	})
	if err != nil {
		l.tb.Fatalf("router: list routes to %s: %v", clusterVIP, err)
	}
	for _, r := range rs {
		if r.Gw != nil {
			kernel = append(kernel, r.Gw.String())
		}
		for _, nh := range r.MultiPath {
			kernel = append(kernel, nh.Gw.String())
		}
	}
	slices.Sort(bird)
	slices.Sort(kernel)
	return bird, kernel
}

// lastError is BIRD's "Last error" of the session to node n: why it went
// down ("" while it never did).
func (l *clusterLab) lastError(n *clusterNode) string {
	l.tb.Helper()
	out, err := l.birdc("show", "protocols", "all", fmt.Sprintf("node%d", n.i+1))
	if err != nil {
		l.tb.Fatal(err)
	}
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Last error:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// birdProtoRE finds the protocol of each path in `birdc show route`:
// "203.0.113.80/32 unicast [node1 10:00:00.000] * (100) [AS65010i]".
var birdProtoRE = regexp.MustCompile(`\[(node[0-9]+) `)

// waitRouter waits until BIRD holds a path from exactly the given nodes
// (0-based) and the router's kernel route to the VIP has exactly their
// next hops, and logs both.
func (l *clusterLab) waitRouter(what string, nodes ...int) {
	l.tb.Helper()
	var wantBIRD, wantKernel []string
	for _, i := range nodes {
		wantBIRD = append(wantBIRD, fmt.Sprintf("node%d", i+1))
		wantKernel = append(wantKernel, fmt.Sprintf("10.20.%d.2", i+1))
	}
	var bird, kernel []string
	l.wait(fmt.Sprintf("%s: BIRD paths %v and kernel next hops %v", what, wantBIRD, wantKernel), func() bool {
		bird, kernel = l.routerView()
		return slices.Equal(bird, wantBIRD) && slices.Equal(kernel, wantKernel)
	})
	l.tb.Logf("%s: BIRD has paths from %v; the router's kernel route to %s has next hops %v", what, bird, clusterVIP, kernel)
}

// serveEcho answers each connection with the real's name and a newline,
// then echoes what it reads.
func (l *clusterLab) serveEcho(ln net.Listener, name string) {
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if _, err := io.WriteString(c, name+"\n"); err != nil {
					return
				}
				io.Copy(c, c)
			}()
		}
	}()
}

// stream is one long-lived client connection: it writes a numbered 64-byte
// record every streamEvery and reads the echo back, so data flows both ways
// through the cluster all the time.
type stream struct {
	c      net.Conn
	real   string
	rounds atomic.Int64
	// maxWait is the longest round trip (ns) since the last settle; only
	// the stream's own goroutine raises it, settle resets it.
	maxWait atomic.Int64
	failed  atomic.Bool
	err     error // set before failed
	// reported is set by settle once it has reported the failure.
	reported bool
}

const streamEvery = 200 * time.Millisecond

// openStreams dials n connections to the VIP from the client.
func (l *clusterLab) openStreams(n int) {
	l.tb.Helper()
	for range n {
		c, err := l.client.Dial("tcp", clusterVIP+":80")
		if err != nil {
			l.tb.Fatalf("dial the VIP: %v", err)
		}
		c.SetReadDeadline(time.Now().Add(nstest.DialTimeout))
		name, err := bufio.NewReader(io.LimitReader(c, 3)).ReadString('\n')
		if err != nil {
			l.tb.Fatalf("read the real's name: %v", err)
		}
		s := &stream{c: c, real: strings.TrimSpace(name)}
		l.mu.Lock()
		l.streams = append(l.streams, s)
		l.mu.Unlock()
		l.wg.Add(1)
		go l.run(s)
	}
}

func (l *clusterLab) run(s *stream) {
	defer l.wg.Done()
	out, in := make([]byte, 64), make([]byte, 64)
	t := time.NewTicker(streamEvery)
	defer t.Stop()
	for seq := uint64(1); ; seq++ {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		binary.BigEndian.PutUint64(out, seq)
		// A safety net against a hang, far above any retransmission
		// the events cause; not an assertion on speed.
		s.c.SetDeadline(time.Now().Add(60 * time.Second))
		sent := time.Now()
		_, err := s.c.Write(out)
		if err == nil {
			_, err = io.ReadFull(s.c, in)
		}
		if err == nil && !bytes.Equal(in, out) {
			err = fmt.Errorf("echo %x, sent %x", in[:8], out[:8])
		}
		if err != nil {
			s.err = fmt.Errorf("connection to %s (%s), record %d: %w", s.real, s.c.LocalAddr(), seq, err)
			s.failed.Store(true)
			return
		}
		s.rounds.Add(1)
		// The longest wait for an echo since the last settle: how long
		// the connection stalled while the router moved it.
		if d := time.Since(sent); d > time.Duration(s.maxWait.Load()) {
			s.maxWait.Store(int64(d))
		}
	}
}

// settle waits until every stream has made 3 more round trips than when
// it was called, or has failed, and returns how many kept streaming.
func (l *clusterLab) settle(what string) (kept, total int) {
	l.tb.Helper()
	l.mu.Lock()
	ss := slices.Clone(l.streams)
	l.mu.Unlock()
	base := make([]int64, len(ss))
	for i, s := range ss {
		base[i] = s.rounds.Load()
	}
	for {
		kept, pending := 0, 0
		for i, s := range ss {
			switch {
			case s.failed.Load():
			case s.rounds.Load() >= base[i]+3:
				kept++
			default:
				pending++
			}
		}
		if pending == 0 {
			for _, s := range ss {
				if s.failed.Load() && !s.reported {
					s.reported = true
					l.tb.Errorf("%s: %v", what, s.err)
					l.whereIs(s)
				}
			}
			var stall time.Duration
			stalled := 0
			for _, s := range ss {
				w := time.Duration(s.maxWait.Swap(0))
				stall = max(stall, w)
				if w > time.Second {
					stalled++
				}
			}
			l.stall = stall
			l.tb.Logf("%s: %d of %d connections kept streaming; %d waited over 1s for an echo, the longest %.1fs",
				what, kept, len(ss), stalled, stall.Seconds())
			return kept, len(ss)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// whereIs logs, for a failed stream, the connection entry each node holds
// for it and the reals that hold a socket for it: which node sent it where.
func (l *clusterLab) whereIs(s *stream) {
	port := s.c.LocalAddr().(*net.TCPAddr).Port
	// 10.10.0.2 as ip_vs_conn prints it (FromIP FPrt), and as
	// /proc/net/tcp does (in host byte order, the port after a colon).
	client := fmt.Sprintf("0A0A0002:%04X", port)
	tcpClient := fmt.Sprintf("02000A0A:%04X", port)
	read := func(ns *nstest.NS, file string) (lines []string) {
		ns.Do(func() error {
			b, err := os.ReadFile("/proc/thread-self/net/" + file)
			for _, line := range strings.Split(string(b), "\n") {
				if f := strings.Fields(line); len(f) > 3 && (f[1]+":"+f[2] == client || f[2] == tcpClient) {
					lines = append(lines, strings.Join(f, " "))
				}
			}
			return err
		})
		return lines
	}
	for _, n := range l.nodes {
		l.tb.Logf("  node %d ip_vs_conn for %s: %q", n.i+1, client, read(n.ns, "ip_vs_conn"))
	}
	for j, ns := range l.realNS {
		l.tb.Logf("  real %d tcp sockets for %s: %q", j+1, client, read(ns, "tcp"))
	}
}

func (l *clusterLab) close() {
	close(l.stop)
	l.mu.Lock()
	for _, s := range l.streams {
		s.c.Close()
	}
	l.mu.Unlock()
	l.wg.Wait()
}

// flowChoices sends the first packet (a SYN) of n flows from src, ports
// 20000 up, to the VIP from inside node i, where IPVS schedules it as it
// would a client's, and reads the real each flow went to from the node's
// connection table. The flows are the same 5-tuples whichever node sends
// them, so two nodes' answers compare their Maglev tables. (The reals'
// answers to src go nowhere: the router drops them.)
func (l *clusterLab) flowChoices(i int, src string, n int) map[uint16]netip.Addr {
	l.tb.Helper()
	ip := netip.MustParseAddr(src).As4()
	vip := netip.MustParseAddr(clusterVIP).As4()
	hexSrc := fmt.Sprintf("%08X", binary.BigEndian.Uint32(ip[:]))
	out := make(map[uint16]netip.Addr, n)
	l.nodes[i].ns.Run(l.tb, func() error {
		for p := range n {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return fmt.Errorf("socket: %w", err)
			}
			err = unix.Bind(fd, &unix.SockaddrInet4{Addr: ip, Port: 20000 + p})
			if err == nil {
				err = unix.Connect(fd, &unix.SockaddrInet4{Addr: vip, Port: 80})
				if err == unix.EINPROGRESS {
					err = nil
				}
			}
			unix.Close(fd) // a socket closed in SYN_SENT sends nothing more
			if err != nil {
				return fmt.Errorf("flow from %s:%d: %w", src, 20000+p, err)
			}
		}
		// The kernel's connection table is one hash table for every
		// namespace, read a page at a time from a position: entries of
		// other namespaces that expire meanwhile make a read skip some.
		// The entries read are right, so a few reads make the whole.
		for try := 0; try < 10 && len(out) < n; try++ {
			if err := readConnTable(out, func(f []string) bool { return f[1] == hexSrc }); err != nil {
				return err
			}
		}
		return nil
	})
	if len(out) != n {
		l.tb.Fatalf("node %d: %d of %d flows from %s in the connection table", i+1, len(out), n, src)
	}
	return out
}

// readConnTable adds to out, by client port, the real (destination) of
// each entry of the calling thread's IPVS connection table that keep
// accepts. keep sees the fields of a line: Pro FromIP FPrt ToIP TPrt
// DestIP DPrt State Expires ..., addresses and ports in hex.
func readConnTable(out map[uint16]netip.Addr, keep func(f []string) bool) error {
	// thread-self: the namespace of this thread, not of the process.
	table, err := os.ReadFile("/proc/thread-self/net/ip_vs_conn")
	if err != nil {
		return err
	}
	for _, line := range strings.Split(string(table), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 || !keep(f) {
			continue
		}
		port, err1 := strconv.ParseUint(f[2], 16, 16)
		dst, err2 := strconv.ParseUint(f[5], 16, 32)
		if err1 != nil || err2 != nil {
			return fmt.Errorf("ip_vs_conn line %q", line)
		}
		var a [4]byte
		binary.BigEndian.PutUint32(a[:], uint32(dst))
		out[uint16(port)] = netip.AddrFrom4(a)
	}
	return nil
}

// differ counts the flows two choice maps send to different reals, and
// how many of those went to real to in b.
func differ(a, b map[uint16]netip.Addr, to netip.Addr) (moved, movedTo int) {
	for p, ra := range a {
		if rb := b[p]; rb != ra {
			moved++
			if rb == to {
				movedTo++
			}
		}
	}
	return moved, movedTo
}

// streamEntries is node i's established connection entries of the
// client's streams (from 10.10.0.2), by client port, with the real each
// goes to. (The reals' connection counters would also count the flow
// probes' entries, which expire on their own.) The table is read a few
// times and the reads joined, since a read can skip entries (see
// flowChoices).
func (l *clusterLab) streamEntries(i int) map[uint16]netip.Addr {
	l.tb.Helper()
	out := map[uint16]netip.Addr{}
	l.nodes[i].ns.Run(l.tb, func() error {
		for range 3 {
			err := readConnTable(out, func(f []string) bool {
				return f[0] == "TCP" && f[1] == "0A0A0002" && f[7] == "ESTABLISHED"
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	return out
}

// silence makes node n's uplink drop every packet the node sends (netem,
// 100% loss) or lifts that: with its kglb killed too, the node is a host
// that died without a word, which the router only learns from the BGP
// hold timer.
func (l *clusterLab) silence(n *clusterNode, on bool) {
	l.tb.Helper()
	h := n.ns.Netlink(l.tb)
	link, err := h.LinkByName("n0")
	if err != nil {
		l.tb.Fatalf("node %d: find n0: %v", n.i+1, err)
	}
	q := netlink.NewNetem(netlink.QdiscAttrs{LinkIndex: link.Attrs().Index, Handle: netlink.MakeHandle(1, 0), Parent: netlink.HANDLE_ROOT},
		netlink.NetemQdiscAttrs{Loss: 100})
	if on {
		err = h.QdiscAdd(q)
	} else {
		err = h.QdiscDel(q)
	}
	if err != nil {
		l.tb.Fatalf("node %d: netem loss on n0 (on=%v): %v", n.i+1, on, err)
	}
}

// realList is the node's kernel list of the service's reals, in order.
func (l *clusterLab) realList(n *clusterNode) []Real {
	l.tb.Helper()
	rs, err := n.k.Reals(tcp(clusterVIP, 80))
	if err != nil {
		l.tb.Fatal(err)
	}
	return rs
}

// clusterFigures are what runCluster measured.
type clusterFigures struct {
	nodeLossKept, nodeReturnKept, hostLossKept, hostReturnKept float64
	drainKept, restartKept                                     float64
	insertKept, raiseKept                                      float64
	addMoved, addIdeal, addMovedElsewhere                      float64
	nodeLossStall, hostLossStall, drainStall                   time.Duration // the longest wait for an echo
	hostLossDetect                                             time.Duration // silence to the path gone (polled)
	insertWrites                                               int
	flushed                                                    int // entries the kernel expired during the re-adds
}

func share(kept, total int) float64 { return float64(kept) / float64(total) }

// runCluster builds the lab and runs the scenario of issue 15, failing tb
// where a property does not hold, and returns the figures.
func runCluster(tb testing.TB) clusterFigures {
	var fig clusterFigures
	l := newClusterLab(tb, 4)
	n1, n2, n3 := l.nodes[0], l.nodes[1], l.nodes[2]

	// 1. Three edit histories, one service: reals 2, 3 and 4.
	l.apply(n1, l.service(2, 3, 4)) // created whole
	for _, d := range []Desired{l.service(4), l.service(4, 2), l.service(2, 4, 3), l.service(3, 4), l.service(2, 3, 4)} {
		l.apply(n2, d) // one by one, one removed and re-added
	}
	mid := l.service(4, 2, 3)
	mid.Services[0].Reals[2].Weight = 50
	l.apply(n2, mid) // a weight changed and changed back
	l.apply(n2, l.service(2, 3, 4))
	// n3: an older kglb (or ipvsadm) added reals in arrival order; a
	// restart adopts the service and puts the list in order.
	l.apply(n3, l.service(3))
	for _, j := range []int{4, 2} {
		if err := n3.k.Write([]Write{{Op: OpAddReal, Service: tcp(clusterVIP, 80), Real: &l.reals[j-1], RealKey: l.reals[j-1].Key()}})[0]; err != nil {
			tb.Fatal(err)
		}
	}
	// The control: the arrival-order list sends flows elsewhere.
	const control = 2000
	out, in := l.flowChoices(2, "10.99.0.3", control), l.flowChoices(0, "10.99.0.3", control)
	moved, _ := differ(in, out, netip.Addr{})
	tb.Logf("control: a list in arrival order sends %d of %d flows to another real than the canonical one", moved, control)
	if moved == 0 {
		tb.Errorf("control: the arrival-order table chose like the canonical one; the comparison below proves nothing")
	}
	n3.restart(tb)
	if res := l.apply(n3, l.service(2, 3, 4)); res.Writes.Total() == 0 {
		tb.Errorf("adoption of an out-of-order list wrote nothing")
	}
	var lists [clusterNodes][]RealKey
	for i, n := range l.nodes {
		for _, r := range l.realList(n) {
			lists[i] = append(lists[i], r.Key())
		}
	}
	tb.Logf("kernel lists: %v %v %v", lists[0], lists[1], lists[2])
	c1 := l.flowChoices(0, "10.99.0.1", clusterFlows)
	for i, n := range []int{clusterFlows, clusterFewFlows} {
		ci := l.flowChoices(i+1, "10.99.0.1", n)
		moved := 0
		for p, r := range ci {
			if c1[p] != r {
				moved++
			}
		}
		tb.Logf("nodes 1 and %d: %d of %d flows to different reals", i+2, moved, n)
		if moved != 0 {
			tb.Errorf("nodes 1 and %d built different Maglev tables: %d of %d flows differ", i+2, moved, n)
		}
	}

	// 2. kglb takes over each node: the same state directory, so it
	// adopts the table; it makes the VIP local itself and announces it
	// to BIRD after its first health round.
	for j := 2; j <= 4; j++ {
		l.serveHealth(j)
	}
	for _, n := range l.nodes {
		h := n.ns.Netlink(tb)
		link, err := h.LinkByName("probe0")
		if err == nil {
			err = h.AddrDel(link, &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP(clusterVIP).To4(), Mask: net.CIDRMask(32, 32)}})
		}
		if err != nil {
			tb.Fatalf("node %d: remove the test's VIP address: %v", n.i+1, err)
		}
		n.rec = nil
		l.configure(n, 2, 3, 4)
		l.startKGLB(n)
	}
	l.waitRouter("kglb on every node", 0, 1, 2)
	for _, n := range l.nodes {
		tb.Logf("node %d: kglb adopted the table with %d IPVS writes", n.i+1, l.ipvsWrites(n))
	}

	// 3. Long-lived connections through the router's ECMP.
	l.openStreams(clusterConns)
	l.settle("warm-up")

	// 4. Node 1's kglb is killed. The kernel closes its BGP session, so
	// BIRD drops the path at once; the node's IPVS stays as it was (a
	// kill skips on_stop) and the router sends its flows elsewhere.
	if err := n1.kglb.signal(syscall.SIGKILL, time.Minute); err != nil {
		tb.Fatalf("node 1: %v", err)
	}
	l.waitRouter("node 1's kglb killed (kill -9)", 1, 2)
	tb.Logf("node 1: BIRD's session went down: %q", l.lastError(n1))
	fig.nodeLossKept = share(l.settle("node 1's kglb killed"))
	fig.nodeLossStall = l.stall
	l.startKGLB(n1)
	l.waitRouter("node 1's kglb started again", 0, 1, 2)
	fig.nodeReturnKept = share(l.settle("node 1 back"))

	// 5. Node 3 dies whole: its uplink goes silent and its kglb is
	// killed, so no FIN reaches BIRD; the hold time (3 s) ends the
	// session. Its flows stall until then, and TCP retransmits them to
	// the other nodes.
	silent := time.Now()
	l.silence(n3, true)
	if err := n3.kglb.signal(syscall.SIGKILL, time.Minute); err != nil {
		tb.Fatalf("node 3: %v", err)
	}
	l.waitRouter("node 3 dead (hold timer)", 0, 1)
	fig.hostLossDetect = time.Since(silent)
	tb.Logf("node 3: the router had dropped its path %.1fs after the node went silent", fig.hostLossDetect.Seconds())
	if e := l.lastError(n3); !strings.Contains(e, "Hold timer expired") {
		tb.Errorf("node 3: BIRD's session went down with %q, want the hold timer", e)
	} else {
		tb.Logf("node 3: BIRD's session went down: %q", e)
	}
	fig.hostLossKept = share(l.settle("node 3 dead"))
	fig.hostLossStall = l.stall
	l.silence(n3, false)
	l.startKGLB(n3)
	l.waitRouter("node 3 back", 0, 1, 2)
	fig.hostReturnKept = share(l.settle("node 3 back"))

	// 6. Node 2 is drained: kglb stops on SIGTERM (withdraws, holds
	// stop_hold, keeps IPVS), then starts again, adopting its table with
	// no write, and announces after its first health round.
	if err := n2.kglb.signal(syscall.SIGTERM, time.Minute); err != nil {
		tb.Fatalf("node 2: %v", err)
	}
	if st := n2.kglb.cmd.ProcessState; !st.Success() {
		tb.Errorf("node 2: kglb's stop on SIGTERM ended with %v, want exit status 0", st)
	}
	l.waitRouter("node 2's kglb stopped (SIGTERM)", 0, 2)
	tb.Logf("node 2: BIRD's session went down: %q", l.lastError(n2))
	fig.drainKept = share(l.settle("node 2 drained"))
	fig.drainStall = l.stall
	l.startKGLB(n2)
	l.waitRouter("node 2's kglb started again", 0, 1, 2)
	if w := l.ipvsWrites(n2); w != 0 {
		tb.Errorf("node 2: kglb's restart wrote %d times to IPVS, want none", w)
	}
	fig.restartKept = share(l.settle("node 2 restarted and back"))

	// 7. Real 1 is added on every node: a config edit and `kglb reload`.
	// Its checks fail until it serves them, so it sits at weight 0; it
	// sorts first, so the three others are deleted and re-added to keep
	// the list canonical. The kernel keeps each deleted real in its trash
	// and takes it back, connections and all; but with
	// expire_nodest_conn=1 it also expires, a tick after a delete, the
	// connections of any real that is deleted at that moment. Such a
	// connection's next packet makes a new entry (sloppy_tcp) to the same
	// real, since with the new real at weight 0 the table is the old one.
	before := l.flowChoices(2, "10.99.0.2", clusterAddFlows)
	want := []RealKey{l.reals[3].Key(), l.reals[2].Key(), l.reals[1].Key(), l.reals[0].Key()}
	writes := make([]int, clusterNodes)
	for i, n := range l.nodes {
		entries := l.streamEntries(i)
		writes[i] = l.ipvsWrites(n)
		l.configure(n, 1, 2, 3, 4)
		l.reload(n)
		l.wait(fmt.Sprintf("node %d: real 1 at weight 0 in the kernel list %v", i+1, want), func() bool {
			rs := l.realList(n)
			var keys []RealKey
			for _, r := range rs {
				keys = append(keys, r.Key())
			}
			return slices.Equal(keys, want) && rs[3].Weight == 0
		})
		// An entry gone is one the kernel expired (an entry stays for
		// minutes after its flow moved to another node).
		after, gone := l.streamEntries(i), 0
		for port := range entries {
			if _, ok := after[port]; !ok {
				gone++
			}
		}
		tb.Logf("node %d: %d of the %d stream entries expired during the re-adds", i+1, gone, len(entries))
		fig.flushed += gone
	}
	fig.insertKept = share(l.settle("real 1 added, its checks failing"))
	for i, n := range l.nodes {
		writes[i] = l.ipvsWrites(n) - writes[i]
	}
	fig.insertWrites = writes[0]
	tb.Logf("inserting real 1 before 3 reals: %v IPVS writes on nodes 1, 2, 3", writes)
	l.serveHealth(1)
	for i, n := range l.nodes {
		l.wait(fmt.Sprintf("node %d: real 1 up", i+1), func() bool { return l.realList(n)[3].Weight == 100 })
	}
	fig.raiseKept = share(l.settle("real 1 up, with its weight"))
	after := l.flowChoices(0, "10.99.0.2", clusterAddFlows)
	moved, movedTo := differ(before, after, l.reals[0].Addr)
	fig.addMoved = share(moved, clusterAddFlows)
	fig.addMovedElsewhere = share(moved-movedTo, clusterAddFlows)
	fig.addIdeal = 1.0 / 4
	tb.Logf("real 1 added: %d of %d flows changed real (%.3f; ideal 1/4), %d of them between the old reals",
		moved, clusterAddFlows, fig.addMoved, moved-movedTo)
	if fig.addMoved < fig.addIdeal/2 || fig.addMoved > fig.addIdeal*1.5 {
		tb.Errorf("adding a fourth real moved %.3f of the flows, ideal %.3f", fig.addMoved, fig.addIdeal)
	}
	return fig
}

// TestVMCluster: three kglb nodes behind BIRD's ECMP, four tunnel reals,
// 240 streaming connections. Nodes with different edit histories send
// 10,000 flows to the same reals; a kill -9 of one node's kglb, the death
// of a whole node (BGP hold timer), a drain (SIGTERM) and restart of one,
// and adding a real (with the re-adds that keep the mh list canonical)
// break no connection; adding the fourth real moves about a quarter of
// the flows.
func TestVMCluster(t *testing.T) {
	fig := runCluster(t)
	for what, v := range map[string]float64{
		"kglb killed": fig.nodeLossKept, "kglb back": fig.nodeReturnKept,
		"node dead": fig.hostLossKept, "node back": fig.hostReturnKept,
		"drain": fig.drainKept, "restart": fig.restartKept,
		"real added, checks failing": fig.insertKept, "real up": fig.raiseKept,
	} {
		if v != 1 {
			t.Errorf("%s: %.4f of the connections kept streaming, want all", what, v)
		}
	}
}

// BenchmarkCluster runs TestVMCluster's scenario once and reports its
// figures: the share of connections that kept streaming through a kill -9
// of a node's kglb, through a node's death (hold timer), and through a
// drain and restart, the share of flows that changed real when a fourth
// real was added (against the ideal 1/4), and the kernel writes of that
// mh insertion on one node (kglb's own counter).
func BenchmarkCluster(b *testing.B) {
	var fig clusterFigures
	for range b.N {
		fig = runCluster(b)
	}
	b.ReportMetric(fig.nodeLossKept*fig.nodeReturnKept, "node-loss-kept")
	b.ReportMetric(fig.hostLossKept*fig.hostReturnKept, "host-loss-kept")
	b.ReportMetric(fig.drainKept*fig.restartKept, "drain-restart-kept")
	b.ReportMetric(fig.nodeLossStall.Seconds(), "node-loss-stall-s")
	b.ReportMetric(fig.hostLossStall.Seconds(), "host-loss-stall-s")
	b.ReportMetric(fig.hostLossDetect.Seconds(), "host-loss-detect-s")
	b.ReportMetric(fig.drainStall.Seconds(), "drain-stall-s")
	b.ReportMetric(fig.insertKept*fig.raiseKept, "add-real-kept")
	b.ReportMetric(float64(fig.flushed), "entries-expired-by-readds")
	b.ReportMetric(fig.addMoved, "add-real-moved")
	b.ReportMetric(fig.addIdeal, "add-real-ideal")
	b.ReportMetric(fig.addMovedElsewhere, "add-real-moved-between-old")
	b.ReportMetric(float64(fig.insertWrites), "mh-insert-writes")
}
