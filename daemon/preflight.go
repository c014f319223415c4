package daemon

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/hashicorp/go-hclog"
	"github.com/kglb/kglb/config"
	"github.com/kglb/kglb/lb"
)

// acceptLocalPath is the switch tunnelled IPv4 checks depend on.
const acceptLocalPath = "/proc/sys/net/ipv4/conf/all/accept_local"

// tunnelSysctlProblem says why tunnelled IPv4 checks of cfg would all read
// down on this host, or "" when they would not (or there are none). The
// real answers a tunnelled probe from the VIP, an address local here too,
// and the kernel drops that reply as martian unless accept_local is 1 on
// "all" or on the interface facing the reals; only "all" can be checked
// without knowing that interface, so the message says both.
func tunnelSysctlProblem(cfg *config.Config, read func(string) ([]byte, error)) string {
	v4 := false
	for _, a := range lb.TunnelReals(cfg) {
		if a.Is4() || a.Is4In6() {
			v4 = true
			break
		}
	}
	if !v4 {
		return ""
	}
	b, err := read(acceptLocalPath)
	if err != nil {
		return "cannot read " + acceptLocalPath + " (" + err.Error() + "): tunnelled checks need net.ipv4.conf.all.accept_local=1"
	}
	if strings.TrimSpace(string(b)) == "1" {
		return ""
	}
	return "net.ipv4.conf.all.accept_local is 0: tunnelled checks will read every real down unless accept_local=1 is set on the interface facing the reals; set net.ipv4.conf.all.accept_local=1 (the kglb package's /usr/lib/sysctl.d/kglb.conf does)"
}

// warnTunnelSysctl logs tunnelSysctlProblem for the running host.
func warnTunnelSysctl(cfg *config.Config, log hclog.Logger) {
	if msg := tunnelSysctlProblem(cfg, os.ReadFile); msg != "" {
		log.Warn(msg)
	}
}

// clusterSysctl is an IPVS setting a node of an ECMP cluster needs at a
// value, and the protocols it matters for ("" for every protocol).
type clusterSysctl struct {
	name  string // under net.ipv4.vs, which covers IPv4 and IPv6
	want  string
	proto config.Protocol
	why   string
}

// clusterSysctls are the settings without which a flow that the routers
// move to another node (a node lost, drained or added), or a real added to
// the service, breaks. The package's /usr/lib/sysctl.d/kglb.conf sets each
// of them.
var clusterSysctls = []clusterSysctl{
	{"sloppy_tcp", "1", config.TCP, "a TCP flow moved here mid-stream by the routers is dropped instead of sent to its real"},
	{"sloppy_sctp", "1", config.SCTP, "an SCTP association moved here mid-stream by the routers is dropped instead of sent to its real"},
	{"schedule_icmp", "1", "", "an ICMP error (such as fragmentation needed) about a flow this node has not seen is not sent to its real, so path MTU discovery fails"},
	{"expire_nodest_conn", "0", "", "adding a real re-adds the reals that sort after it, and the kernel breaks connections of a real caught between its delete and its add"},
}

// clustered reports whether s looks like one VIP of several kglb nodes
// behind ECMP: Maglev hashing (the scheduler that lets every node pick the
// same real) with a forwarding method whose replies bypass this node.
func clustered(s *config.Service) bool {
	return s.Scheduler == config.SchedMH && (s.Forward == config.ForwardTunnel || s.Forward == config.ForwardDR)
}

// clusterSysctlProblems names each cluster setting that is not at its value
// (or cannot be read) under procRoot ("/proc" on a host) while a clustered service of
// cfg needs it, one message per setting naming the first such service. It
// only reads.
func clusterSysctlProblems(cfg *config.Config, procRoot string) []string {
	var out []string
	for _, sc := range clusterSysctls {
		var svc *config.Service
		for _, s := range cfg.Services {
			if clustered(s) && (sc.proto == "" || s.FWMark != 0 || s.Protocol == sc.proto) {
				svc = s
				break
			}
		}
		if svc == nil {
			continue
		}
		path := filepath.Join(procRoot, "sys/net/ipv4/vs", sc.name)
		b, err := os.ReadFile(path)
		switch {
		case err != nil:
			out = append(out, fmt.Sprintf("cannot read net.ipv4.vs.%s (%v): service %q (mh, %s) looks clustered and needs it at %s, else %s", sc.name, err, svc.Name, svc.Forward, sc.want, sc.why))
		case strings.TrimSpace(string(b)) != sc.want:
			out = append(out, fmt.Sprintf("net.ipv4.vs.%s is %s but service %q (mh, %s) looks clustered: %s; set net.ipv4.vs.%s=%s (the kglb package's /usr/lib/sysctl.d/kglb.conf does; check /etc/sysctl.d for an override)", sc.name, strings.TrimSpace(string(b)), svc.Name, svc.Forward, sc.why, sc.name, sc.want))
		}
	}
	return out
}

// warnClusterSysctls logs clusterSysctlProblems for the running host.
func warnClusterSysctls(cfg *config.Config, log hclog.Logger) {
	for _, msg := range clusterSysctlProblems(cfg, "/proc") {
		log.Warn(msg)
	}
}
