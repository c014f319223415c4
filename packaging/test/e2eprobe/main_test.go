package main

import (
	"encoding/binary"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// loopback returns the sockaddr of 127.0.0.1:port.
func loopback(port int) unix.RawSockaddrInet4 {
	sa := unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: [4]byte{127, 0, 0, 1}}
	binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:], uint16(port))
	return sa
}

// TestCheckReusesOneSocket holds the loop to what it stands for: one socket
// checks a listening real, is disconnected, checks again, is refused by a
// closed port and still checks after that, as kglb's kept sockets do.
func TestCheckReusesOneSocket(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan struct{}, 8)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
			accepted <- struct{}{}
		}
	}()
	open := loopback(ln.Addr().(*net.TCPAddr).Port)
	// A port nothing listens on: bound, then closed.
	l2, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := loopback(l2.Addr().(*net.TCPAddr).Port)
	l2.Close()

	fd, err := probeSocket()
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	for i, step := range []struct {
		sa   *unix.RawSockaddrInet4
		want error
	}{{&open, nil}, {&open, nil}, {&closed, unix.ECONNREFUSED}, {&open, nil}} {
		keep, err := check(fd, step.sa, time.Second)
		if !errors.Is(err, step.want) {
			t.Fatalf("check %d: %v, want %v", i, err, step.want)
		}
		if !keep {
			t.Fatalf("check %d: the socket is not to be kept", i)
		}
		if err == nil {
			if !disconnect(fd) {
				t.Fatalf("check %d: disconnect failed", i)
			}
			select {
			case <-accepted:
			case <-time.After(5 * time.Second):
				t.Fatalf("check %d: the real accepted nothing", i)
			}
		}
	}
}

func TestReadReals(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "reals")
	if err := os.WriteFile(good, []byte("10.1.0.1\n\n10.1.0.2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	reals, err := readReals(good, 80)
	if err != nil {
		t.Fatal(err)
	}
	if len(reals) != 2 || addrOf(&reals[1]).String() != "10.1.0.2" || reals[0].Port != loopback(80).Port {
		t.Fatalf("read %+v", reals)
	}
	for _, bad := range []string{"", "10.1.0.1\nnot-an-address\n", "::1\n"} {
		p := filepath.Join(dir, "bad")
		if err := os.WriteFile(p, []byte(bad), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := readReals(p, 80); err == nil {
			t.Errorf("readReals(%q): no error", bad)
		}
	}
}
