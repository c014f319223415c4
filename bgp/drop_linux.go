package bgp

import (
	"errors"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// dropSessions shuts down, in both directions, every TCP connection of this
// process with the neighbor at addr: the ones GoBGP opened to its port and
// the ones it accepted on listenPort (0: none). The router sees the
// connection close without a NOTIFICATION, as when a process exits; a
// NOTIFICATION GoBGP writes afterwards fails on the shut socket. It
// returns how many connections it shut down.
//
// GoBGP exposes no connection, so they are found among the process's
// file descriptors by their peer address. A descriptor closed and reused
// between the look and the shutdown would have to be connected to the
// same neighbor as well, which only GoBGP's own next connection is.
func dropSessions(addr netip.Addr, port, listenPort int) (int, error) {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if link, err := os.Readlink("/proc/self/fd/" + e.Name()); err != nil || !strings.HasPrefix(link, "socket:") {
			continue
		}
		if typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE); err != nil || typ != unix.SOCK_STREAM {
			continue
		}
		peer, err := unix.Getpeername(fd)
		if err != nil {
			continue // a listener, or not connected
		}
		local, err := unix.Getsockname(fd)
		if err != nil {
			continue
		}
		pa, pp := sockAddr(peer)
		_, lp := sockAddr(local)
		if pa != addr || (pp != port && (listenPort == 0 || lp != listenPort)) {
			continue
		}
		if err := unix.Shutdown(fd, unix.SHUT_RDWR); err != nil && !errors.Is(err, unix.ENOTCONN) {
			errs = append(errs, err)
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

func sockAddr(sa unix.Sockaddr) (netip.Addr, int) {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrFrom4(a.Addr), a.Port
	case *unix.SockaddrInet6:
		return netip.AddrFrom16(a.Addr).Unmap(), a.Port
	}
	return netip.Addr{}, 0
}
