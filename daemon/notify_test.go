package daemon

import (
	"bytes"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

func listenNotify(t *testing.T, path string) *net.UnixConn {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func readNotify(t *testing.T, conn *net.UnixConn) string {
	t.Helper()
	buf := make([]byte, 256)
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	k, err := conn.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return string(buf[:k])
}

func TestNotifySendsState(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn := listenNotify(t, path)
	t.Setenv("NOTIFY_SOCKET", path)
	var logs bytes.Buffer
	n := newNotifier(hclog.New(&hclog.LoggerOptions{Output: &logs}))
	n.send("READY=1", "STATUS=3 services")
	if got := readNotify(t, conn); got != "READY=1\nSTATUS=3 services" {
		t.Errorf("datagram %q", got)
	}
	if logs.Len() != 0 {
		t.Errorf("a working send logged:\n%s", logs.String())
	}
}

// A failure is logged once, not on every call, and so is the recovery;
// without NOTIFY_SOCKET nothing is logged at all.
func TestNotifyLogsFailureOnceAndRecovery(t *testing.T) {
	var logs bytes.Buffer
	log := hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Debug})

	t.Setenv("NOTIFY_SOCKET", "")
	newNotifier(log).send("READY=1")
	if logs.Len() != 0 {
		t.Errorf("send without NOTIFY_SOCKET logged:\n%s", logs.String())
	}

	path := filepath.Join(t.TempDir(), "notify.sock")
	t.Setenv("NOTIFY_SOCKET", path)
	n := newNotifier(log)
	for range 3 {
		n.send("READY=1", "STATUS=reload applied")
	}
	if got := strings.Count(logs.String(), "systemd notification failed"); got != 1 {
		t.Errorf("3 failed sends logged %d failures, want 1:\n%s", got, logs.String())
	}
	if !strings.Contains(logs.String(), path) {
		t.Errorf("failure log does not name the socket %s:\n%s", path, logs.String())
	}

	conn := listenNotify(t, path)
	logs.Reset()
	n.send("READY=1")
	n.send("STATUS=ok")
	if got := readNotify(t, conn); got != "READY=1" {
		t.Errorf("datagram %q", got)
	}
	if got := strings.Count(logs.String(), "systemd notifications work again"); got != 1 || strings.Count(logs.String(), "\n") != 1 {
		t.Errorf("recovery logged %d times in:\n%s", got, logs.String())
	}

	// A new failure after the recovery is logged again.
	conn.Close()
	logs.Reset()
	n.send("READY=1")
	if got := strings.Count(logs.String(), "systemd notification failed"); got != 1 {
		t.Errorf("failure after recovery logged %d times, want 1:\n%s", got, logs.String())
	}
}
