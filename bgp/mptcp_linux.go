package bgp

import (
	"net"
	"sync"

	"golang.org/x/sys/unix"
)

// listenersUseMPTCP reports whether this process's TCP listeners are
// Multipath TCP sockets: the default since Go 1.24 (GODEBUG
// multipathtcp=2). GoBGP's listener is then an MPTCP socket, on which
// Linux refuses TCP_MD5SIG (ENOPROTOOPT) and IP_TTL, so GoBGP's TCP-MD5
// for incoming sessions silently does not work. The daemon turns MPTCP off
// with `//go:debug multipathtcp=0`; this probe catches a build without it.
var listenersUseMPTCP = sync.OnceValue(func() bool {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return false
	}
	defer l.Close()
	sc, err := l.(*net.TCPListener).SyscallConn()
	if err != nil {
		return false
	}
	var proto int
	sc.Control(func(fd uintptr) {
		proto, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PROTOCOL)
	})
	return proto == unix.IPPROTO_MPTCP
})
