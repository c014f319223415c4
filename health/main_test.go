package health

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
)

// listenerEnv makes the test binary serve loopback listeners instead of running
// tests: the benchmarks put their listeners in a child process so that the CPU the
// probing side uses can be measured alone.
const listenerEnv = "KGLB_HEALTH_LISTENERS"

func TestMain(m *testing.M) {
	if spec := os.Getenv(listenerEnv); spec != "" {
		serveListeners(spec)
		return
	}
	os.Exit(m.Run())
}

// serveListeners listens on 127.1.A.B for A.B in 0.1 .. and ports per address
// ("addrs,ports"), prints each address, then "ready", accepts and closes until stdin
// closes.
func serveListeners(spec string) {
	var nAddr, nPort int
	fmt.Sscanf(spec, "%d,%d", &nAddr, &nPort)
	runtime.GOMAXPROCS(1)
	w := bufio.NewWriter(os.Stdout)
	for i := 1; i <= nAddr; i++ {
		ip := netip.AddrFrom4([4]byte{127, 1, byte(i >> 8), byte(i)})
		for range nPort {
			ln, err := net.Listen("tcp", netip.AddrPortFrom(ip, 0).String())
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(2)
			}
			fmt.Fprintln(w, ln.Addr().String())
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					c.(*net.TCPConn).SetLinger(0)
					c.Close()
				}
			}()
		}
	}
	fmt.Fprintln(w, "ready")
	w.Flush()
	io.Copy(io.Discard, os.Stdin)
}

// childListeners starts the listener process and returns its addresses.
func childListeners(tb testing.TB, nAddr, nPort int) []netip.AddrPort {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d,%d", listenerEnv, nAddr, nPort))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		stdin.Close()
		cmd.Wait()
	})
	var out []netip.AddrPort
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "ready" {
			return out
		}
		ap, err := netip.ParseAddrPort(line)
		if err != nil {
			tb.Fatalf("listener child: %q", line)
		}
		out = append(out, ap)
	}
	tb.Fatalf("listener child exited early")
	return nil
}
