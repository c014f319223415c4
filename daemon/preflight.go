package daemon

import (
	"os"
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
