package daemon

import (
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
)

// notifier speaks systemd's sd_notify protocol: one datagram of
// newline-separated KEY=VALUE pairs to the socket named by NOTIFY_SOCKET.
// Without NOTIFY_SOCKET (not under systemd, or Type= is not notify) every
// call is a no-op, and not an error.
//
// A failed send matters (systemd may time the start or a reload out, or
// show a stale STATUS), but the daemon notifies on every reload, so send
// logs a failure once when it starts or changes, and once when sends
// work again, rather than on every call.
type notifier struct {
	addr *net.UnixAddr
	log  hclog.Logger

	mu      sync.Mutex // send is called from the run loop and reload goroutines
	failing string     // the error last logged; empty while sends work
}

func newNotifier(log hclog.Logger) *notifier {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return &notifier{log: log}
	}
	if strings.HasPrefix(path, "@") {
		path = "\x00" + path[1:] // abstract socket namespace
	}
	return &notifier{addr: &net.UnixAddr{Name: path, Net: "unixgram"}, log: log}
}

// send writes the state lines and logs a failure (see notifier).
func (n *notifier) send(lines ...string) {
	if n.addr == nil {
		return
	}
	err := n.write(lines)
	n.mu.Lock()
	defer n.mu.Unlock()
	switch {
	case err != nil && err.Error() != n.failing:
		n.failing = err.Error()
		n.log.Warn("systemd notification failed; further failures like it are not logged", "op", strings.Join(lines, " "), "err", err)
	case err == nil && n.failing != "":
		n.failing = ""
		n.log.Info("systemd notifications work again", "op", strings.Join(lines, " "))
	}
}

// write sends one datagram.
func (n *notifier) write(lines []string) error {
	conn, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		return fmt.Errorf("sd_notify %s: %w", n.addr.Name, err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(strings.Join(lines, "\n"))); err != nil {
		return fmt.Errorf("sd_notify %s: %w", n.addr.Name, err)
	}
	return nil
}

// monotonicUsec is the MONOTONIC_USEC= line systemd wants beside
// RELOADING=1, so it can tell this reload from an older one.
func monotonicUsec() string {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return "MONOTONIC_USEC=0"
	}
	return fmt.Sprintf("MONOTONIC_USEC=%d", ts.Nano()/1000)
}

// extendTimeoutUsec is the EXTEND_TIMEOUT_USEC= line: systemd lets the
// current state (here the stop) run at least d past this message, beyond
// TimeoutStopSec, and never shortens it.
func extendTimeoutUsec(d time.Duration) string {
	return fmt.Sprintf("EXTEND_TIMEOUT_USEC=%d", d.Microseconds())
}
