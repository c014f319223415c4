//go:build linux

package vip

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// setReadTimeout has each read of n wait at most d for a reply: the same
// rule, with a short wait that keeps the test quick.
func setReadTimeout(t *testing.T, n *Netlink, d time.Duration) {
	t.Helper()
	n.timeout = d
	if err := n.h.SetSocketTimeout(d); err != nil {
		t.Fatal(err)
	}
}

// readFd finds the socket of n's read handle among the process's file
// descriptors: the library does not hand it out, so the test marks it with
// a receive buffer size no other socket has.
func readFd(t *testing.T, n *Netlink) int {
	t.Helper()
	const mark = 77777
	if err := n.h.SetSocketReceiveBufferSize(mark, false); err != nil {
		t.Fatal(err)
	}
	sizes, err := n.h.GetSocketReceiveBufferSize()
	if err != nil || len(sizes) != 1 {
		t.Fatalf("read handle's receive buffer: %v, %v", sizes, err)
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	found := -1
	for _, e := range fds {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		dom, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
		if err != nil || dom != unix.AF_NETLINK {
			continue
		}
		if size, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF); err == nil && size == sizes[0] {
			if found >= 0 {
				t.Fatalf("two netlink sockets with the receive buffer of the read handle: %d and %d", found, fd)
			}
			found = fd
		}
	}
	if found < 0 {
		t.Fatal("the read handle's socket is not among the process's file descriptors")
	}
	return found
}

// dropReplies attaches to the socket fd a filter that drops everything the
// kernel sends it: the requests are made, their replies never come.
func dropReplies(t *testing.T, fd int) {
	t.Helper()
	drop := []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: 0}}
	prog := unix.SockFprog{Len: uint16(len(drop)), Filter: &drop[0]}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &prog); err != nil {
		t.Fatalf("attach a filter to the read socket: %v", err)
	}
}

// TestNetlinkReadTimeout: a read whose reply never comes (the kernel's
// replies dropped by a socket filter, on the real route socket) fails once
// the wait is over, naming the wait, instead of holding the caller (and the
// reconciler's lock) forever; and the next read, on a socket opened again,
// gets its own answer. Nothing is timed: the guard only turns a hang into
// a failure.
func TestNetlinkReadTimeout(t *testing.T) {
	n, err := NewNetlink(NetlinkOptions{Link: "lo"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	setReadTimeout(t, n, 50*time.Millisecond)
	if found, err := n.LookupLink(); !found || err != nil {
		t.Fatalf("look up lo: %v, %v", found, err)
	}
	want, err := n.List(ModeRoute)
	if err != nil {
		t.Fatalf("list lo's local routes: %v", err)
	}

	for _, c := range []struct {
		name string
		read func() error
	}{
		{"dump", func() error { _, err := n.List(ModeRoute); return err }},
		{"look up the link", func() error { _, err := n.LookupLink(); return err }},
		{"dump every link", func() error { _, err := n.ListProto(ProtoKGLB); return err }},
	} {
		fd := readFd(t, n)
		dropReplies(t, fd)
		done := make(chan error, 1)
		go func() { done <- c.read() }()
		select {
		case err = <-done:
		case <-time.After(time.Minute):
			t.Fatalf("%s: no reply and no error after a minute: the read waits forever", c.name)
		}
		if !errors.Is(err, unix.EAGAIN) || !strings.Contains(err.Error(), "no reply within 50ms") {
			t.Errorf("%s, no reply: %v, want no reply within 50ms", c.name, err)
		}
		// The fault passes: the replies come again. On the same socket,
		// the dump the kernel began (and whose replies it dropped) would
		// still be under way, nothing reading it, and refuse the next
		// one (EBUSY). The old socket is closed by now, and fd may be
		// the new one's number or nothing's: the detach may fail.
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DETACH_FILTER, 0)
		got, err := n.List(ModeRoute)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("%s: the next dump: %v, %v, want %v", c.name, got, err, want)
		}
	}
}

// TestNetlinkReadsWhileReopened: reads on several goroutines while the read
// socket is replaced again and again, as noReply replaces it after a read
// that timed out. Each read holds the handle it reads on for the whole call,
// so none goes on with a socket closed under it (bad file descriptor, or the
// replies of whatever socket has its number by then) and every dump returns
// lo's routes.
func TestNetlinkReadsWhileReopened(t *testing.T) {
	n, err := NewNetlink(NetlinkOptions{Link: "lo"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	if found, err := n.LookupLink(); !found || err != nil {
		t.Fatalf("look up lo: %v, %v", found, err)
	}
	want, err := n.List(ModeRoute)
	if err != nil {
		t.Fatalf("list lo's local routes: %v", err)
	}
	const readers, reads = 4, 300
	errs := make(chan error, readers)
	for range readers {
		go func() {
			for i := range reads {
				got, err := n.List(ModeRoute)
				if err == nil && !slices.Equal(got, want) {
					err = errors.New("routes differ from the first dump")
				}
				if err != nil {
					errs <- fmt.Errorf("dump %d: %v, %w", i, got, err)
					return
				}
			}
			errs <- nil
		}()
	}
	stop := make(chan struct{})
	reopened := make(chan int)
	go func() {
		k := 0
		for {
			select {
			case <-stop:
				reopened <- k
				return
			default:
			}
			n.mu.Lock()
			_ = n.noReply(n.h, unix.EAGAIN) // as after a read that timed out
			n.mu.Unlock()
			k++
		}
	}()
	for range readers {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	close(stop)
	if k := <-reopened; k == 0 {
		t.Error("the read socket was never replaced while the dumps ran")
	}
}
