// Command e2ecold times a daemon's cold start for the end-to-end benchmark
// (scripts/e2ebench.sh): it reads /proc/net/ip_vs until every real is in
// IPVS (present) and then until every one has a weight above 0 (up), and
// prints both times in seconds since -since, a reading of /proc/uptime taken
// as the start began, then what the polls cost it:
//
//	present 2.14
//	up 15.20
//	polls 97 cpu-ms 812
//
// One process and no fork per poll, as e2ewatch is for detection and
// recovery: the shell loop it replaces ran awk over the file, then awk and
// cut for the time and sleep, each a program started per poll, on the VM's
// two CPUs during the window it timed, where both daemons needed them.
//
// /proc/net/ip_vs is filled by the kernel under RCU; a netlink dump (as
// ipvsadm -Ln makes) would take the IPVS mutex that every write of the
// daemon being timed takes too. Its text is made afresh at each read, a
// line per real, so a read's cost grows with the reals: the wait between
// two polls is at least -gap times what the last read took, which bounds
// the poller's share of one CPU to about 1/(1+gap) whatever the size.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	since := flag.Float64("since", -1, "/proc/uptime (seconds since boot) when the start began")
	reals := flag.Int("reals", 0, "how many reals the daemon adds")
	prefix := flag.String("prefix", "0A01", "the reals' addresses as /proc/net/ip_vs writes them (hex), or the start of them: 0A01 is 10.1.0.0/16")
	poll := flag.Duration("poll", 100*time.Millisecond, "least time between two reads")
	gap := flag.Float64("gap", 4, "least time between two reads, in reads: the wait after a read is at least this times what it took")
	timeout := flag.Duration("timeout", 10*time.Minute, "give up this long after -since")
	flag.Parse()
	if *since < 0 || *reals <= 0 {
		log.Fatal("usage: e2ecold -since UPTIME -reals N [-prefix HEX]")
	}
	t0 := time.Duration(*since * float64(time.Second))

	f, err := os.Open("/proc/net/ip_vs")
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 0, 1<<20)
	var present, up time.Duration
	var polls int
	for {
		start := boottime()
		buf, err = readAll(f, buf[:0])
		if err != nil {
			log.Fatalf("read /proc/net/ip_vs: %v", err)
		}
		n, u := count(buf, []byte(*prefix))
		now := boottime()
		polls++
		if present == 0 && n >= *reals {
			present = now - t0
		}
		if present != 0 && u >= *reals {
			up = now - t0
			break
		}
		if now-t0 > *timeout {
			report(present, up, polls)
			fmt.Fprintf(os.Stderr, "e2ecold: %d reals, %d up after %s\n", n, u, *timeout)
			os.Exit(1)
		}
		time.Sleep(max(*poll, time.Duration(*gap*float64(now-start))))
	}
	report(present, up, polls)
}

// report prints the times reached (0: not reached) and the poller's CPU.
func report(present, up time.Duration, polls int) {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	if present > 0 {
		fmt.Printf("present %.2f\n", present.Seconds())
	}
	if up > 0 {
		fmt.Printf("up %.2f\n", up.Seconds())
	}
	fmt.Printf("polls %d cpu-ms %d\n", polls, cpu.Milliseconds())
}

// boottime is the clock /proc/uptime reads.
func boottime() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		log.Fatal(err)
	}
	return time.Duration(ts.Nano())
}

// readAll reads f from its start into buf.
func readAll(f *os.File, buf []byte) ([]byte, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return buf, err
	}
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := f.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if errors.Is(err, io.EOF) || (err == nil && n == 0) {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// count is how many reals whose address starts with prefix the text of
// /proc/net/ip_vs lists, and how many of them have a weight above 0. A real
// is a line "  -> ADDR:PORT FORWARD WEIGHT ACTIVE INACTIVE".
func count(text, prefix []byte) (n, up int) {
	arrow := []byte("  -> ")
	for len(text) > 0 {
		line := text
		if i := bytes.IndexByte(text, '\n'); i >= 0 {
			line, text = text[:i], text[i+1:]
		} else {
			text = nil
		}
		rest, ok := bytes.CutPrefix(line, arrow)
		if !ok || !bytes.HasPrefix(rest, prefix) {
			continue
		}
		f := bytes.Fields(rest)
		if len(f) < 3 || !isAddr(f[0]) { // the header's "RemoteAddress:Port"
			continue
		}
		n++
		if !bytes.Equal(f[2], []byte("0")) {
			up++
		}
	}
	return n, up
}

// isAddr reports whether f is an address and port as /proc/net/ip_vs
// writes them: hex digits, a colon, hex digits.
func isAddr(f []byte) bool {
	a, p, ok := bytes.Cut(f, []byte(":"))
	return ok && len(a) > 0 && len(p) > 0 && isHex(a) && isHex(p)
}

func isHex(b []byte) bool {
	for _, c := range b {
		if !('0' <= c && c <= '9' || 'A' <= c && c <= 'F' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
