//go:build vmtest

package daemon

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kglb/kglb/internal/nstest"
	"github.com/kglb/kglb/reload"
	mobyipvs "github.com/moby/ipvs"
)

// The daemon against the real kernel: the VM's root namespace is the LB,
// reals and a client live in namespaces joined to it by veth pairs. NAT
// forwarding, so the reals' replies come back through the LB.

const statsAddr = "127.0.0.1:15678"

type real struct {
	ns   *nstest.NS
	addr string
	mu   sync.Mutex
	ln   net.Listener
}

// serve answers every connection with the real's address, until stop.
func (r *real) serve(t *testing.T) {
	ln := r.ns.Listen(t, "tcp", r.addr+":80")
	r.mu.Lock()
	r.ln = ln
	r.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, r.addr)
			c.Close()
		}
	}()
}

func (r *real) stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ln.Close()
}

func writeConfig(t *testing.T, dir, state string, reals ...string) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, `daemon {
  state_dir       = %q
  stats_address   = %q
  resync_interval = "1s"
  stop_hold       = "0s"
  on_stop         = "keep"
}

service "web" {
  vip     = "192.0.2.10"
  port    = 80
  forward = "nat"
  drain   = "0s"
`, state, statsAddr)
	for _, r := range reals {
		fmt.Fprintf(&b, "  real %q {}\n", r)
	}
	b.WriteString(`
  check "tcp" {
    interval = "500ms"
    timeout  = "200ms"
    rise     = 1
    fall     = 2
  }
}
`)
	tmp := filepath.Join(dir, ".web.hcl.tmp")
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "web.hcl")); err != nil {
		t.Fatal(err)
	}
}

func startDaemon(t *testing.T, dir string) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{ConfigDir: dir, LogLevel: "debug", ControlSocket: controlSocket(dir)})
	}()
	waitFor(t, "daemon serving /status", func() bool { _, err := Fetch(statsAddr); return err == nil })
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("daemon: %v", err)
		}
	}
}

// controlSocket is the test daemon's control socket, beside its config.
func controlSocket(dir string) string { return filepath.Join(filepath.Dir(dir), "control.sock") }

// waitFor polls cond; the deadline only bounds a hung test.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func realWeights(t *testing.T) map[string]int {
	st, err := Fetch(statsAddr)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, s := range st.Services {
		for _, r := range s.Reals {
			out[r.Address] = int(r.Weight)
		}
	}
	return out
}

// kernelReals lists the reals of the web service as the kernel has them.
func kernelReals(t *testing.T) map[string]int {
	h, err := mobyipvs.New("")
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	svcs, err := h.GetServices()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, s := range svcs {
		if s.Address.String() != "192.0.2.10" {
			continue
		}
		ds, err := h.GetDestinations(s)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range ds {
			out[net.JoinHostPort(d.Address.String(), strconv.Itoa(int(d.Port)))] = d.Weight
		}
	}
	return out
}

func metric(t *testing.T, name string) float64 {
	resp, err := http.Get("http://" + statsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sum := 0.0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, name+"{") || strings.HasPrefix(line, name+" ") {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			sum += v
		}
	}
	return sum
}

func TestDaemonAgainstKernel(t *testing.T) {
	lb := nstest.Root(t)
	client := nstest.New(t)
	nstest.Veth(t, nstest.End{NS: lb, Name: "lbc", Addrs: []string{"10.77.9.1/24"}}, nstest.End{NS: client, Name: "c0", Addrs: []string{"10.77.9.2/24"}})
	client.AddRoute(t, "default", "10.77.9.1")
	var reals []*real
	for i := 1; i <= 3; i++ {
		ns := nstest.New(t)
		nstest.Veth(t,
			nstest.End{NS: lb, Name: fmt.Sprintf("lbr%d", i), Addrs: []string{fmt.Sprintf("10.77.%d.1/24", i)}},
			nstest.End{NS: ns, Name: "r0", Addrs: []string{fmt.Sprintf("10.77.%d.2/24", i)}})
		ns.AddRoute(t, "default", fmt.Sprintf("10.77.%d.1", i))
		r := &real{ns: ns, addr: fmt.Sprintf("10.77.%d.2", i)}
		r.serve(t)
		reals = append(reals, r)
	}
	lb.Sysctl(t, "net.ipv4.ip_forward", "1")

	dir, state := t.TempDir(), t.TempDir()
	writeConfig(t, dir, state, "10.77.1.2:80", "10.77.2.2:80")
	stop := startDaemon(t, dir)

	waitFor(t, "both reals up", func() bool {
		w := realWeights(t)
		return w["10.77.1.2:80"] == 100 && w["10.77.2.2:80"] == 100
	})

	// Traffic to the VIP reaches both reals through IPVS.
	seen := map[string]int{}
	for range 20 {
		got, err := client.DialRead("tcp", "192.0.2.10:80")
		if err != nil {
			t.Fatalf("connect to the VIP: %v", err)
		}
		seen[got]++
	}
	if seen["10.77.1.2"] == 0 || seen["10.77.2.2"] == 0 {
		t.Errorf("replies by real: %v, want both", seen)
	}

	// Killing a real's server takes it out of rotation.
	reals[0].stop()
	waitFor(t, "real 1 at weight 0 in the kernel", func() bool { return kernelReals(t)["10.77.1.2:80"] == 0 })
	for range 10 {
		got, err := client.DialRead("tcp", "192.0.2.10:80")
		if err != nil {
			t.Fatalf("connect to the VIP after a real failed: %v", err)
		}
		if got != "10.77.2.2" {
			t.Errorf("reply from %q after real 1 failed", got)
		}
	}

	// Editing the file adds a real live.
	writeConfig(t, dir, state, "10.77.1.2:80", "10.77.2.2:80", "10.77.3.2:80")
	waitFor(t, "real 3 in the kernel at full weight", func() bool { return kernelReals(t)["10.77.3.2:80"] == 100 })

	// An invalid edit changes nothing and is reported.
	before := kernelReals(t)
	if err := os.WriteFile(filepath.Join(dir, "web.hcl"), []byte("service \"web\" {\n  vip = \"not an ip\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "reload rejected", func() bool {
		st, err := Fetch(statsAddr)
		return err == nil && strings.Contains(st.Config.LastReloadError, "web.hcl:")
	})
	if got := kernelReals(t); fmt.Sprint(got) != fmt.Sprint(before) {
		t.Errorf("kernel changed after an invalid edit: %v, was %v", got, before)
	}
	if v := metric(t, "kglb_config_last_reload_successful"); v != 0 {
		t.Errorf("kglb_config_last_reload_successful = %v after an invalid edit", v)
	}
	// `kglb reload` hears the positioned reason, not just "requested".
	if msg, err := RequestReload(controlSocket(dir), false); !errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), "web.hcl:") {
		t.Errorf("reload of an invalid edit: %q, %v; want an error citing web.hcl:", msg, err)
	}
	writeConfig(t, dir, state, "10.77.1.2:80", "10.77.2.2:80", "10.77.3.2:80")
	waitFor(t, "reload accepted again", func() bool { return metric(t, "kglb_config_last_reload_successful") == 1 })
	if msg, err := RequestReload(controlSocket(dir), false); err != nil || msg.Result != reload.Unchanged {
		t.Errorf("reload of the running config: %q, %v; want \"config unchanged\"", msg, err)
	}

	// Someone flushes IPVS (ipvsadm -C): the resync repairs it.
	h, err := mobyipvs.New("")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Flush(); err != nil {
		t.Fatal(err)
	}
	h.Close()
	waitFor(t, "service repaired after a flush", func() bool { return kernelReals(t)["10.77.3.2:80"] == 100 })

	// A restart adopts the kernel: no write at all.
	reals[0].serve(t) // bring real 1 back first, so nothing is mid-change
	waitFor(t, "real 1 back up", func() bool { return kernelReals(t)["10.77.1.2:80"] == 100 })
	stop()
	before = kernelReals(t)
	stop = startDaemon(t, dir)
	defer stop()
	waitFor(t, "all reals judged after restart", func() bool {
		w := realWeights(t)
		return w["10.77.1.2:80"] == 100 && w["10.77.2.2:80"] == 100 && w["10.77.3.2:80"] == 100
	})
	if n := metric(t, "kglb_ipvs_writes_total"); n != 0 {
		t.Errorf("restart issued %v IPVS writes, want 0", n)
	}
	if n := metric(t, "kglb_vip_writes_total"); n != 0 {
		t.Errorf("restart issued %v VIP writes, want 0", n)
	}
	if got := kernelReals(t); fmt.Sprint(got) != fmt.Sprint(before) {
		t.Errorf("kernel after restart %v, want %v", got, before)
	}
}
