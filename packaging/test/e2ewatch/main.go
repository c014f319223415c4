// Command e2ewatch times failure detection and recovery for the end-to-end
// benchmark (scripts/e2ebench.sh): it takes some reals' addresses away in the
// reals' network namespace (or brings them back), one by one, noting when each
// went, then polls their IPVS service over netlink until every one has weight
// 0 (-state down) or more (-state up), and prints the mean and the max over
// the reals of the time each took from its own change, in seconds.
//
// With -phase, it first waits a random time under it (the checks' interval):
// the change then falls at a random point of the daemon's probe schedule, as a
// real's failure or return does. Run right after the daemon's last verdict, a
// change times where the daemon's next probe falls after that verdict: kglb's
// recovery at N=100 printed 1.52 and 1.77 s in one make bench: its probes ran
// late there (a mean lag of 0.53 and 0.37 s), all but those of a real whose
// verdict is pending, which go first, so the down verdict came on time and the
// next probe, an interval later, came late; 0.69 to 1.03 s in the four rounds
// of two other runs.
//
// One process and no fork per poll: the shell loop it replaces ran ipvsadm,
// sort and awk every 50 ms (and ip per address) on the VM's two CPUs while the
// daemons it measured were probing, and timed all five reals from the first
// change: with it kglb's recovery (rise 1, interval 1s) printed 1.72 s at
// N=100, with this 0.68 s.
package main

import (
	"flag"
	"fmt"
	"log"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/moby/ipvs"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

func main() {
	vip := flag.String("vip", "", "the IPv4 virtual server, address:port")
	state := flag.String("state", "down", "down: take the addresses away and wait for weight 0; up: bring them back and wait for weight > 0")
	nsPath := flag.String("netns", "/run/netns/reals", "network namespace of the reals")
	dev := flag.String("dev", "r0", "the reals' link in that namespace")
	timeout := flag.Duration("timeout", 2*time.Minute, "give up after this long")
	poll := flag.Duration("poll", 10*time.Millisecond, "time between reads of the service")
	phase := flag.Duration("phase", 0, "wait a random time under this before the first change (the checks' interval)")
	flag.Parse()
	if *state != "down" && *state != "up" {
		log.Fatalf("-state %q: want down or up", *state)
	}
	host, port, err := net.SplitHostPort(*vip)
	if err != nil {
		log.Fatalf("-vip %q: %v", *vip, err)
	}
	var p uint16
	if _, err := fmt.Sscan(port, &p); err != nil {
		log.Fatalf("-vip %q: port: %v", *vip, err)
	}
	svc := &ipvs.Service{Address: net.ParseIP(host).To4(), Port: p, Protocol: syscall.IPPROTO_TCP, AddressFamily: syscall.AF_INET}
	if svc.Address == nil || flag.NArg() == 0 {
		log.Fatal("usage: e2ewatch -vip A.B.C.D:PORT -state down|up REAL...")
	}

	ns, err := netns.GetFromPath(*nsPath)
	if err != nil {
		log.Fatalf("open %s: %v", *nsPath, err)
	}
	reals, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		log.Fatalf("netlink in %s: %v", *nsPath, err)
	}
	link, err := reals.LinkByName(*dev)
	if err != nil {
		log.Fatalf("link %s in %s: %v", *dev, *nsPath, err)
	}
	kernel, err := ipvs.New("")
	if err != nil {
		log.Fatalf("ipvs: %v", err)
	}

	if *phase > 0 {
		time.Sleep(rand.N(*phase))
	}
	changed := map[string]time.Time{} // real address -> when its address changed
	for _, a := range flag.Args() {
		ip := net.ParseIP(a).To4()
		if ip == nil {
			log.Fatalf("real %q: not an IPv4 address", a)
		}
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: ip, Mask: net.CIDRMask(32, 32)}}
		op := reals.AddrDel
		if *state == "up" {
			op = reals.AddrAdd
		}
		if err := op(link, addr); err != nil {
			log.Fatalf("%s: address %s: %v", *state, a, err)
		}
		changed[ip.String()] = time.Now()
	}

	took := map[string]time.Duration{}
	deadline := time.Now().Add(*timeout)
	for len(took) < len(changed) {
		dests, err := kernel.GetDestinations(svc)
		now := time.Now()
		if err != nil {
			log.Fatalf("read %s: %v", *vip, err)
		}
		for _, d := range dests {
			a := d.Address.String()
			t0, ok := changed[a]
			if _, done := took[a]; !ok || done {
				continue
			}
			if (*state == "down") == (d.Weight == 0) {
				took[a] = now.Sub(t0)
			}
		}
		if now.After(deadline) {
			var left []string
			for a := range changed {
				if _, done := took[a]; !done {
					left = append(left, a)
				}
			}
			fmt.Fprintf(os.Stderr, "e2ewatch: %s: not %s after %s: %s\n", *vip, *state, *timeout, strings.Join(left, " "))
			os.Exit(1)
		}
		time.Sleep(*poll)
	}
	var sum, most time.Duration
	for _, d := range took {
		sum += d
		most = max(most, d)
	}
	fmt.Printf("%.2f %.2f\n", (sum / time.Duration(len(took))).Seconds(), most.Seconds())
}
