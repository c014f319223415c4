// Command e2eprobe is the bare probe loop of the end-to-end benchmark
// (scripts/e2ebench.sh): the system calls of kglb's TCP check and nothing
// else, over every real in turn, back to back on one thread, until it is
// stopped. Its checks per CPU-second, measured in the same boot and the same
// way as the daemons' (the reals' count of accepted connections over the CPU
// of its cgroup), are what any daemon that completes a TCP handshake per
// check can reach on that machine: the kernel's work for the handshake and
// the reset, on both sides of the veth, runs in the prober's system calls.
// So the ratio of this loop to keepalived bounds the checks-per-CPU-second
// row from above, and kglb's share of it is kglb's own cost.
//
// Like kglb's tcpChecker (health/tcp.go) it keeps one socket with SO_LINGER
// 0 and, per check, calls connect (which sends the SYN; over a veth the
// handshake completes within it), connect again (which reports the outcome)
// and connect(AF_UNSPEC) (which sends RST and leaves the socket reusable). A
// connect still in progress waits in poll(2) up to -timeout.
package main

import (
	"bufio"
	"encoding/binary"
	"flag"
	"fmt"
	"log"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

func main() {
	realsFile := flag.String("reals", "/etc/e2ebench/reals", "file of the reals' IPv4 addresses, one per line")
	port := flag.Uint("port", 80, "the reals' port")
	timeout := flag.Duration("timeout", 500*time.Millisecond, "how long a connect may take")
	clockReads := flag.Int("clock-reads", 0, "read the clock this many times, print what a read cost and exit (no probes): what the kernel's clocksource charges every daemon that reads the time")
	procs := flag.Int("procs", 1, "Go's GOMAXPROCS: 1 runs the loop on one thread, locked to it; more leave Ps idle beside it, as kglb keeps one for its engine")
	flag.Parse()
	if *port == 0 || *port > 65535 {
		log.Fatalf("-port %d: want 1 to 65535", *port)
	}
	if *procs < 1 {
		log.Fatalf("-procs %d: want 1 or more", *procs)
	}
	if *clockReads > 0 {
		fmt.Println(timeClock(*clockReads))
		return
	}
	reals, err := readReals(*realsFile, uint16(*port))
	if err != nil {
		log.Fatal(err)
	}
	// With one P the loop is the only goroutine that runs, on one thread.
	// With more, Go's scheduler does what it does in kglb (more Ps than
	// probe slots): sysmon's preemption of the loop,
	// every 10 ms, puts it on the global run queue and wakes a thread for
	// an idle P, which may take it over. Locked to a thread, a preempted
	// goroutine would hand its P off instead, which kglb does not do.
	runtime.GOMAXPROCS(*procs)
	if *procs == 1 {
		runtime.LockOSThread()
	}
	fd := -1
	var failed uint64
	for i := 0; ; i = (i + 1) % len(reals) {
		if fd < 0 {
			if fd, err = probeSocket(); err != nil {
				log.Fatal(err)
			}
		}
		keep, err := check(fd, &reals[i], *timeout)
		if err != nil {
			if failed++; failed%1000 == 1 {
				log.Printf("%d checks failed, the last to %s: %v", failed, addrOf(&reals[i]), err)
			}
		} else if keep {
			keep = disconnect(fd)
		}
		if !keep { // closing resets a connection (SO_LINGER 0)
			unix.Close(fd)
			fd = -1
		}
	}
}

func readReals(path string, port uint16) ([]unix.RawSockaddrInet4, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []unix.RawSockaddrInet4
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		a, err := netip.ParseAddr(line)
		if err != nil {
			return nil, fmt.Errorf("read the reals of %s: %w", path, err)
		}
		if !a.Is4() {
			return nil, fmt.Errorf("read the reals of %s: %s is not IPv4", path, a)
		}
		sa := unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: a.As4()}
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:], port)
		out = append(out, sa)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("read the reals of %s: none", path)
	}
	return out, nil
}

func addrOf(sa *unix.RawSockaddrInet4) netip.Addr { return netip.AddrFrom4(sa.Addr) }

func probeSocket() (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if err := unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0}); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// connect is a raw connect(2): it never blocks on a non-blocking socket.
func connect(fd int, sa unsafe.Pointer, salen uintptr) unix.Errno {
	_, _, errno := unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(sa), salen)
	return errno
}

// check connects fd to sa: nil once the handshake is done. keep says the
// socket may check again (after disconnect, when it connected): as in kglb's
// tcpChecker, only a socket whose check ended without waiting is kept, and a
// refused one, which the kernel disconnected as it reported the error.
func check(fd int, sa *unix.RawSockaddrInet4, timeout time.Duration) (keep bool, err error) {
	p, n := unsafe.Pointer(sa), uintptr(unix.SizeofSockaddrInet4)
	switch errno := connect(fd, p, n); errno {
	case 0:
		return true, nil
	case unix.EINPROGRESS, unix.EINTR:
	default:
		return false, errno
	}
	switch errno := connect(fd, p, n); errno {
	case 0, unix.EISCONN, unix.ECONNRESET, unix.EPIPE:
		// ECONNRESET and EPIPE come only after the handshake: the real
		// accepted and closed first (as in kglb's tcpChecker).
		return true, nil
	case unix.ECONNREFUSED:
		return true, errno
	case unix.EALREADY, unix.EINPROGRESS, unix.EINTR:
	default:
		return false, errno
	}
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
	if n, err := unix.Poll(pfd, int(timeout/time.Millisecond)); err != nil || n == 0 {
		return false, unix.ETIMEDOUT
	}
	v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err != nil {
		return false, err
	}
	if v != 0 {
		return false, unix.Errno(v)
	}
	return false, nil
}

// disconnect resets the connection (SO_LINGER 0) and leaves the socket
// unconnected, ready for the next check; false if it could not.
func disconnect(fd int) bool {
	sa := unix.RawSockaddrInet4{Family: unix.AF_UNSPEC}
	return connect(fd, unsafe.Pointer(&sa), unix.SizeofSockaddrInet4) == 0
}

// timeClock reads the clock n times, as Go's time.Now does (clock_gettime
// through the vDSO, which falls back to the system call when the
// clocksource cannot be read from user space), and says what a read cost in
// wall time and in the process's CPU time.
func timeClock(n int) string {
	var ru0, ru1 unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru0)
	start := time.Now()
	last := start
	for i := 1; i < n; i++ {
		last = time.Now()
	}
	unix.Getrusage(unix.RUSAGE_SELF, &ru1)
	wall := last.Sub(start) // the n-1 reads after the first
	sys := time.Duration(ru1.Stime.Nano() - ru0.Stime.Nano())
	user := time.Duration(ru1.Utime.Nano() - ru0.Utime.Nano())
	return fmt.Sprintf("clock reads %d: %.0f ns each (user %.0f ns, system %.0f ns)",
		n, float64(wall)/float64(max(n-1, 1)), float64(user)/float64(n), float64(sys)/float64(n))
}
