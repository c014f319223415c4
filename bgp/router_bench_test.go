package bgp

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The router benchmarks measure what the BGP row of design.md section 7
// asks, against the real routers of the tests: a health decision to the
// router (BIRD 2 and FRR 8.4), and failed requests across a planned
// restart. They run the same labs as TestBIRD* and TestFRR*.

// routerLab is a lab with one kglb speaker and a running router of kind.
func routerLab(b *testing.B, kind string) (*lab, *node) {
	b.Helper()
	var l *lab
	switch kind {
	case "bird":
		l = newLab(b, 1)
		l.startBIRD(birdPeers(l.nodes[0], false, false)...)
	case "frr", "frr-zebra-wq0":
		requireFRR(b)
		l = newNamespaces(b, 1)
		if kind == "frr-zebra-wq0" {
			// zebra's RIB work queue without its 10 ms hold.
			l.zebraConf = "zebra work-queue 0\n"
		}
		l.startFRR(frrPeer{Address: l.nodes[0].v4.String(), ASN: localASN})
	}
	return l, l.nodes[0]
}

// kernelEvents subscribes to route changes of the router's namespace: both
// BIRD (kernel protocol) and zebra install what they select there, so a
// route's arrival is timed without polling the router.
func kernelEvents(b *testing.B, l *lab) <-chan netlink.RouteUpdate {
	ch := make(chan netlink.RouteUpdate, 1024)
	done := make(chan struct{})
	b.Cleanup(func() { close(done) })
	h := l.router.Handle()
	if err := netlink.RouteSubscribeWithOptions(ch, done, netlink.RouteSubscribeOptions{Namespace: &h}); err != nil {
		b.Fatalf("subscribe to the router's routes: %v", err)
	}
	return ch
}

// BenchmarkDecisionToRIB measures a health decision reaching the router's
// RIB and FIB: from the Apply that adds or removes one VIP (among 100
// announced) until the router has installed or removed its kernel route.
// It includes the speaker process's command pipe. p50 and p99.
//
// FRR's figures are FRR's: GoBGP sends the UPDATE at once (BIRD, fed by
// the same speaker, installs it in well under a millisecond), and FRR
// holds every change in bgpd's route-processing work queue for 50 ms
// (bgp_process_queue_init: spec.hold = 50, not configurable) and then in
// zebra's RIB work queue for 10 ms (ZEBRA_RIB_PROCESS_HOLD_TIME; `zebra
// work-queue MS` in zebra's configuration changes it). frr-zebra-wq0 is
// FRR with `zebra work-queue 0`: what is left is bgpd's hold.
func BenchmarkDecisionToRIB(b *testing.B) {
	for _, kind := range []string{"bird", "frr", "frr-zebra-wq0"} {
		b.Run(kind, func(b *testing.B) {
			l, n := routerLab(b, kind)
			sp := l.startSpeaker(n, speakerConfig(n, false, false))
			rest := make([]Route, 100)
			for i := range rest {
				rest[i] = Route{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{203, 0, 113, byte(i + 1)}), 32)}
			}
			toggled := Route{Prefix: pfx("198.51.100.1/32")}
			events := kernelEvents(b, l)
			sp.apply(rest...)
			eventually(b, "the 100 routes in the router's kernel table", func() bool {
				rs, err := l.router.Netlink(b).RouteList(nil, netlink.FAMILY_V4)
				return err == nil && len(rs) >= 100+1
			})
			withVIP := append([]Route{toggled}, rest...)
			var lat []time.Duration
			up := false
			for b.Loop() {
				up = !up
				desired := rest
				if up {
					desired = withVIP
				}
				start := time.Now()
				sp.apply(desired...)
				timeout := time.After(30 * time.Second)
			wait:
				for {
					select {
					case u := <-events:
						if u.Dst == nil || u.Dst.String() != toggled.Prefix.String() {
							continue
						}
						if (u.Type == unix.RTM_NEWROUTE) == up {
							lat = append(lat, time.Since(start))
							break wait
						}
					case <-timeout:
						b.Fatalf("the router never changed its route to %s", toggled.Prefix)
					}
				}
			}
			reportLatency(b, lat)
		})
	}
}

// BenchmarkPlannedRestart counts failed requests of a client behind the
// router while kglb restarts as `systemctl restart` makes it (graceful
// restart, the data plane modelled by a server on the VIP in the kglb
// node's namespace, a one-second first health round). Target: 0.
func BenchmarkPlannedRestart(b *testing.B) {
	for _, kind := range []string{"bird", "frr"} {
		b.Run(kind, func(b *testing.B) {
			l, n := routerLab(b, kind)
			cfg := speakerConfig(n, false, false)
			cfg.Neighbors[0].GracefulRestart = true
			cfg.Neighbors[0].RestartTime = 120 * time.Second
			vip := Route{Prefix: pfx("203.0.113.10/32")}
			n.ns.AddLoAddr(b, "203.0.113.10/32")
			n.ns.ServeTCP(b, "203.0.113.10:8080", "ok")
			sp := l.startSpeaker(n, cfg)
			sp.apply(vip)
			eventually(b, "the client to get through", func() bool {
				got, err := l.router.DialRead("tcp", "203.0.113.10:8080")
				return err == nil && got == "ok"
			})
			var ok, failed int
			for b.Loop() {
				c := startClient(l, "203.0.113.10:8080")
				sp.call(helperCmd{Op: "exit"})
				<-sp.done
				sp = l.startSpeakerAfter(n, cfg, true)
				time.Sleep(time.Second)
				sp.apply(vip)
				// Until the new session is up and the route refreshed.
				eventually(b, "the session back", func() bool { return routerUp(l, kind, n) })
				time.Sleep(200 * time.Millisecond)
				o, f, _ := c.stop()
				ok, failed = ok+o, failed+f
			}
			b.ReportMetric(float64(failed), "failed")
			b.ReportMetric(float64(ok), "ok")
		})
	}
}

// routerUp reports whether the router's session with n is established.
func routerUp(l *lab, kind string, n *node) bool {
	if kind == "bird" {
		return l.established(fmt.Sprintf("ebgp4_%d", n.i))
	}
	return l.frr.established(n.v4.String())
}
