package daemon

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"unsafe"

	"github.com/hashicorp/go-hclog"
	"github.com/kglb/kglb/config"
	"golang.org/x/sys/unix"
)

// The packaged unit starts kglb as the kglb user with three ambient
// capabilities: CAP_NET_ADMIN (netlink: IPVS, addresses, routes, links;
// SO_MARK), CAP_NET_RAW (raw probes) and CAP_NET_BIND_SERVICE. The last is
// needed only to listen on a port below 1024 (a BGP listen_port of 179, a
// privileged stats port); when no configured port needs it, kglb drops it
// at start from every set, for good. A later reload that needs it is
// refused by bindGuard with the reason: a restart grants it again.

// needsBindService lists the configured ports that need CAP_NET_BIND_SERVICE.
func needsBindService(cfg *config.Config, statsAddr string) []string {
	var why []string
	if _, p, err := net.SplitHostPort(statsAddr); err == nil {
		if n, err := strconv.Atoi(p); err == nil && n > 0 && n < 1024 {
			why = append(why, "stats_address "+statsAddr)
		}
	}
	if cfg.BGP.Enabled && cfg.BGP.ListenPort > 0 && cfg.BGP.ListenPort < 1024 {
		why = append(why, fmt.Sprintf("bgp listen_port %d", cfg.BGP.ListenPort))
	}
	return why
}

// hasCap says whether this thread has capability c in its effective set.
func hasCap(c uint) bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	return data[c/32].Effective&(1<<(c%32)) != 0
}

// dropBindService removes CAP_NET_BIND_SERVICE from the ambient,
// inheritable, permitted and effective sets of every thread. Root keeps
// its capabilities: the drop is for the unprivileged packaged daemon.
// It reports whether it dropped anything.
func dropBindService() (bool, error) {
	const c = unix.CAP_NET_BIND_SERVICE
	if os.Geteuid() == 0 || !hasCap(c) {
		return false, nil
	}
	// Capabilities belong to threads: change them on every one of the
	// runtime's threads (AllThreadsSyscall; the binary is built without cgo).
	if _, _, errno := syscall.AllThreadsSyscall6(unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_LOWER, c, 0, 0, 0); errno != 0 {
		return false, fmt.Errorf("lower ambient CAP_NET_BIND_SERVICE: %w", errno)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false, fmt.Errorf("capget: %w", err)
	}
	mask := ^uint32(1 << (c % 32))
	data[c/32].Effective &= mask
	data[c/32].Permitted &= mask
	data[c/32].Inheritable &= mask
	hdr.Pid = 0
	if _, _, errno := syscall.AllThreadsSyscall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0); errno != 0 {
		return false, fmt.Errorf("drop CAP_NET_BIND_SERVICE: %w", errno)
	}
	return true, nil
}

// bindGuard refuses a config that needs CAP_NET_BIND_SERVICE after kglb
// dropped it at start.
func bindGuard(dropped bool, cfg *config.Config) error {
	if !dropped {
		return nil
	}
	// The stats listener is bound once, at start: only the BGP port counts.
	if why := needsBindService(cfg, ""); len(why) > 0 {
		return fmt.Errorf("%s needs CAP_NET_BIND_SERVICE, which kglb dropped at start because no configured port needed it; restart kglb (systemctl restart kglb) to apply this config", why[0])
	}
	return nil
}

// dropUnneededCaps drops CAP_NET_BIND_SERVICE when no configured port
// needs it, and records the drop for bindGuard.
func dropUnneededCaps(cfg *config.Config, statsAddr string, log hclog.Logger, dropped *atomic.Bool) error {
	if why := needsBindService(cfg, statsAddr); len(why) > 0 {
		log.Debug("keeping CAP_NET_BIND_SERVICE", "for", strings.Join(why, ", "))
		return nil
	}
	ok, err := dropBindService()
	if err != nil {
		return err
	}
	if ok {
		dropped.Store(true)
		log.Info("dropped CAP_NET_BIND_SERVICE: no configured port is below 1024")
	}
	return nil
}
