package bgp

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// OpenBGPD (Debian's openbgpd, 7.7) punishes session ends it counts as
// errors. From its session.c (OpenBSD usr.sbin/bgpd; the same logic in
// 7.7 and later):
//
//   - parse_notification: every NOTIFICATION received does errcnt++,
//     whatever its code (Cease / Administrative Shutdown included; 7.7 has
//     no RFC 8538 "graceful notification").
//   - change_state(IDLE): the session waits IdleHoldTime (30 s at first)
//     before it starts again, and IdleHoldTime doubles; except when the
//     session was Established with graceful restart negotiated and ended by
//     the connection closing (EVNT_CON_CLOSED), "don't punish graceful
//     restart": no wait, no doubling, the routes kept as stale.
//   - session_accept: a connection from a peer in Idle is accepted at once
//     ("fast reconnect") only while errcnt < 2; otherwise it is refused
//     ("Connection attempt from neighbor ... while session is in state
//     Idle") until the IdleHold timer runs out.
//   - errcnt goes back to 0 only when a session has stayed Established for
//     IdleHoldTime (Timer_IdleHoldReset).
//
// So kglb sends a NOTIFICATION only where one is due, at a stop (Cease /
// Administrative Shutdown with its message) and when a neighbor is
// removed: a planned restart with graceful restart and a reload that
// resets a neighbor close the connection without one. Two stops within
// OpenBGPD's reset window are still two notifications, and the reconnect
// after the second waits for OpenBGPD's IdleHold timer: that cannot be
// avoided from kglb's side while a stop says why it stops.
// TestOpenBGPDReconnect shows both.

var openbgpdOnce = sync.OnceValue(func() error {
	if _, err := exec.LookPath("bgpctl"); err == nil {
		return nil
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("openbgpd is not installed and installing it needs root")
	}
	env := append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	for _, args := range [][]string{
		{"apt-get", "update", "-qq"},
		{"apt-get", "install", "-y", "-qq", "--no-install-recommends", "openbgpd"},
	} {
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	_, err := exec.LookPath("bgpctl")
	return err
})

func TestOpenBGPDReconnect(t *testing.T) {
	requireRouter(t, "OpenBGPD", "openbgpd", openbgpdOnce)
	l := newNamespaces(t, 1)
	n := l.nodes[0]
	sock := filepath.Join(l.dir, "bgpd.sock")
	conf := filepath.Join(l.dir, "bgpd.conf")
	text := fmt.Sprintf(`AS 65000
router-id 10.255.0.1
socket "%s"
listen on %s
neighbor %s {
	remote-as %d
	passive
}
allow from any
`, sock, n.rtr4, n.v4, localASN)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	// bgpd chroots to its user's home, which the package's unit creates
	// (RuntimeDirectory) when it runs the system instance.
	if err := os.MkdirAll("/run/openbgpd", 0o755); err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	cmd := exec.Command("/usr/sbin/bgpd", "-d", "-v", "-f", conf)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	l.router.Run(t, cmd.Start)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("bgpd output:\n%s", logs.String())
		}
	})
	show := func() string {
		out, _ := exec.Command("bgpctl", "-s", sock, "show", "neighbor", n.v4.String()).CombinedOutput()
		return string(out)
	}
	up := func(what string) {
		t.Helper()
		eventually(t, what, func() bool { return strings.Contains(show(), "BGP state = Established") })
	}
	refused := func() int { return strings.Count(logs.String(), "while session is in state Idle") }
	vip := Route{Prefix: pfx("203.0.113.10/32")}
	inRIB := func(what string) {
		t.Helper()
		eventually(t, what, func() bool {
			out, _ := exec.Command("bgpctl", "-s", sock, "show", "rib").CombinedOutput()
			return strings.Contains(string(out), "203.0.113.10/32")
		})
	}
	cfg := speakerConfig(n, false, false)
	cfg.Neighbors[0].GracefulRestart = true
	sp := l.startSpeaker(n, cfg)
	sp.apply(vip)
	up("the first session")
	inRIB("the route in OpenBGPD's RIB")
	// A stop: withdraw, then the administrative shutdown (errcnt 1).
	stop := func() {
		t.Helper()
		sp.call(helperCmd{Op: "withdraw"})
		sp.call(helperCmd{Op: "withdrawn"})
		sp.call(helperCmd{Op: "close"})
		<-sp.done
		eventually(t, "OpenBGPD to see the session end", func() bool { return !strings.Contains(show(), "BGP state = Established") })
	}
	// A planned restart with graceful restart: no NOTIFICATION.
	restart := func() {
		t.Helper()
		sp.call(helperCmd{Op: "exit"})
		<-sp.done
		sp = l.startSpeakerAfter(n, cfg, true)
		sp.apply(vip)
	}
	sessions := func() int { return strings.Count(logs.String(), "-> Established") }
	step := func(what string, do func()) {
		t.Helper()
		before, ups := refused(), sessions()
		do()
		eventually(t, "the session back after "+what, func() bool {
			return sessions() > ups && strings.Contains(show(), "BGP state = Established")
		})
		inRIB("the route in OpenBGPD's RIB after " + what)
		if c := refused() - before; c > 0 {
			t.Errorf("after %s OpenBGPD refused %d reconnects (held kglb idle)", what, c)
		}
	}
	step("a stop and a start", func() {
		stop()
		sp = l.startSpeaker(n, cfg)
		sp.apply(vip)
	})
	step("a planned restart", restart)
	// A planned restart without graceful restart: withdraw, then the
	// sessions close without a NOTIFICATION (errcnt stays 1).
	step("a planned restart without graceful restart", func() {
		sp.call(helperCmd{Op: "withdraw"})
		sp.call(helperCmd{Op: "withdrawn"})
		sp.call(helperCmd{Op: "close-restart"})
		<-sp.done
		eventually(t, "OpenBGPD to see the session end", func() bool { return !strings.Contains(show(), "BGP state = Established") })
		sp = l.startSpeaker(n, cfg)
		sp.apply(vip)
	})
	step("a reload that resets the neighbor", func() {
		cfg.Neighbors[0].HoldTime = 12 * time.Second
		cfg.Neighbors[0].Keepalive = 4 * time.Second
		sp.call(helperCmd{Op: "config", Config: &cfg})
	})
	step("a second planned restart", restart)
	out := logs.String()
	if !strings.Contains(out, "Cease, administratively down") || !strings.Contains(out, `received shutdown reason: "`+ShutdownMessage+`"`) {
		t.Errorf("OpenBGPD did not receive the administrative shutdown with kglb's message:\n%s", out)
	}
	if c := strings.Count(out, "received notification"); c != 1 {
		t.Errorf("OpenBGPD received %d notifications through one stop, three restarts and a reset, want 1:\n%s", c, out)
	}
	if c := strings.Count(out, "keeping routes"); c < 2 {
		t.Errorf("OpenBGPD kept the routes across %d planned restarts, want 2:\n%s", c, out)
	}

	// The second stop is OpenBGPD's second NOTIFICATION: unless the session
	// stayed up for its IdleHoldTime since the first (60 s by now), errcnt
	// is 2 and the reconnect waits for the IdleHold timer; kglb's connect
	// retry (1 s here) gets in as soon as it runs out.
	before, ups := refused(), sessions()
	began := time.Now()
	stop()
	sp = l.startSpeaker(n, cfg)
	sp.apply(vip)
	deadline := time.Now().Add(3 * time.Minute)
	for !(sessions() > ups && strings.Contains(show(), "BGP state = Established")) {
		if time.Now().After(deadline) {
			t.Fatalf("the session never came back after the second stop (refused %d times)", refused()-before)
		}
		time.Sleep(100 * time.Millisecond)
	}
	inRIB("the route in OpenBGPD's RIB after the second stop")
	t.Logf("after the second stop OpenBGPD refused %d reconnects; the session was back after %s",
		refused()-before, time.Since(began).Round(time.Second))
}
