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

	"github.com/kglb/kglb/internal/nstest"
)

// OpenBGPD (Debian's openbgpd, 7.7) counts every NOTIFICATION it receives
// as an error and, after two, answers reconnects with a doubling idle
// hold time ("Connection attempt from neighbor ... while session is in
// state Idle"). TestOpenBGPDReconnect runs it as the router and puts kglb
// through a stop and a start: the session ends with Cease /
// Administrative Shutdown and its message, and the reconnect is accepted
// at once. (A second session end soon after, such as a reset by a reload
// right after a restart, is still held idle by OpenBGPD's doubling
// penalty, whatever the notification says.)

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
	nstest.Require(t)
	if err := openbgpdOnce(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("OpenBGPD is required in CI: %v", err)
		}
		t.Skipf("OpenBGPD not available (apt-get install openbgpd): %v", err)
	}
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
	cfg := speakerConfig(n, false, false)
	vip := Route{Prefix: pfx("203.0.113.10/32")}
	sp := l.startSpeaker(n, cfg)
	sp.apply(vip)
	up("the first session")
	// A stop (withdraw, then the administrative shutdown) and a start
	// right after it, as `systemctl stop; systemctl start` does.
	sp.call(helperCmd{Op: "withdraw"})
	sp.call(helperCmd{Op: "withdrawn"})
	sp.call(helperCmd{Op: "close"})
	<-sp.done
	eventually(t, "OpenBGPD to see the session end", func() bool { return !strings.Contains(show(), "BGP state = Established") })
	sp = l.startSpeaker(n, cfg)
	sp.apply(vip)
	up("the session after the stop")
	out := logs.String()
	if c := strings.Count(out, "while session is in state Idle"); c > 0 {
		t.Errorf("OpenBGPD refused %d reconnects (held kglb idle)", c)
	}
	if !strings.Contains(out, "Cease, administratively down") || !strings.Contains(out, `received shutdown reason: "`+ShutdownMessage+`"`) {
		t.Errorf("OpenBGPD did not receive the administrative shutdown with kglb's message:\n%s", out)
	}
}
