package health

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Dialer holds what every probe socket of a Scheduler shares: the local source
// addresses. Tunnelled probes need one for the VIP's family (a non-VIP address of
// the LB): unbound, the kernel picks the VIP itself as source, because it is local,
// and the real's reply never comes back to the probe.
type Dialer struct {
	Source4 netip.Addr
	Source6 netip.Addr
}

func (d Dialer) source(dst netip.Addr) netip.Addr {
	if dst.Is4() || dst.Is4In6() {
		return d.Source4
	}
	return d.Source6
}

// The probe socket's own syscalls never block: socket, setsockopt, bind,
// connect on a non-blocking socket (it returns EINPROGRESS at worst) and close
// with SO_LINGER 0 (an abortive close sends RST and frees the socket at once). So
// they run as raw syscalls, without Go's entersyscall and exitsyscall: the
// probe keeps its P (its CPU slot's thread) for the syscall, and Go's sysmon
// never hands the P to another thread while one runs. Under qemu TCG a
// connect to a real behind a veth takes about a millisecond (the whole
// handshake runs inline, in the softirq of the connecting thread), far past
// sysmon's 20us retake threshold, so sysmon handed the P to another thread
// on every probe and, finding work to retake, kept waking every 20us. In
// e2ebench at N=1000 (its diagnostic lines, E2E_PERF=1) raw syscalls took the
// context switches per check from 6.41 to 2.10 (keepalived: 0.23), sysmon's
// nanosleep from 3.4% of the VM's CPU to under 2%, and the checks per
// CPU-second from 457 to 844 (both with perf on; without it, 831 against
// keepalived's 2150 in the same VM).

// socket() was a plain syscall until the profile of e2ebench at N=1000 showed
// it at 1.65 s of 15.4 s (about 100us a call under TCG) with sysmon's P
// hand-offs (runtime.startm, futex) beside it.

// socketRaw opens a probe socket (see above).
func socketRaw(family, typ int) (int, error) {
	fd, _, errno := unix.RawSyscall(unix.SYS_SOCKET, uintptr(family), uintptr(typ), 0)
	if errno != 0 {
		return -1, errno
	}
	return int(fd), nil
}

// bindRaw binds a probe socket to a source address (see above).
func bindRaw(fd int, sa *unix.RawSockaddrInet6, salen uintptr) error {
	_, _, errno := unix.RawSyscall(unix.SYS_BIND, uintptr(fd), uintptr(unsafe.Pointer(sa)), salen)
	if errno != 0 {
		return errno
	}
	return nil
}

// closeRaw closes a probe socket (see above).
func closeRaw(fd int) { unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0) }

// setsockoptRaw sets a socket option of val's size (see above).
func setsockoptRaw(fd, level, opt int, val unsafe.Pointer, size uintptr) error {
	_, _, errno := unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt), uintptr(val), size, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

func setsockoptInt(fd, level, opt, v int) error {
	val := int32(v)
	return setsockoptRaw(fd, level, opt, unsafe.Pointer(&val), 4)
}

// sockopts sets the options every probe socket gets before it is bound or connected:
// SO_MARK for fwmark steering, IP_BIND_ADDRESS_NO_PORT so that binding a source
// address leaves the port choice to connect() (which picks per 4-tuple, not per
// source address: thousands of probes share one source without running out of
// ports), and SO_LINGER 0 on TCP so that closing sends RST and leaves no TIME_WAIT.
func sockopts(fd int, tcp, bound bool, mark uint32) error {
	if mark != 0 {
		if err := setsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, int(mark)); err != nil {
			return errLocal{fmt.Errorf("set SO_MARK %d: %w", mark, err)}
		}
	}
	if bound && tcp {
		if err := setsockoptInt(fd, unix.SOL_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1); err != nil {
			return errLocal{fmt.Errorf("set IP_BIND_ADDRESS_NO_PORT: %w", err)}
		}
	}
	if tcp {
		if err := setsockoptRaw(fd, unix.SOL_SOCKET, unix.SO_LINGER, unsafe.Pointer(&unix.Linger{Onoff: 1, Linger: 0}), unix.SizeofLinger); err != nil {
			return errLocal{fmt.Errorf("set SO_LINGER: %w", err)}
		}
	}
	return nil
}

// dial connects a stream ("tcp") or datagram ("udp") socket to dst through the Go
// netpoller, bounded by ctx, with the probe's mark and source address. TCP
// connections close with RST (SO_LINGER 0).
func (d Dialer) dial(ctx context.Context, network string, dst netip.AddrPort, mark uint32) (net.Conn, error) {
	src := d.source(dst.Addr())
	tcp := network == "tcp"
	dialer := net.Dialer{
		Control: func(_, _ string, c syscall.RawConn) error {
			var optErr error
			if err := c.Control(func(fd uintptr) { optErr = sockopts(int(fd), tcp, src.IsValid(), mark) }); err != nil {
				return errLocal{err}
			}
			return optErr
		},
	}
	if src.IsValid() {
		if tcp {
			dialer.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0))
		} else {
			dialer.LocalAddr = net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0))
		}
	}
	resume := idle(ctx)
	c, err := dialer.DialContext(ctx, network, dst.String())
	resume()
	if err != nil {
		return nil, err
	}
	if pc, ok := ctx.(*probeCtx); ok && pc.slots != nil {
		return slottedConn{c, pc.slots}, nil
	}
	return c, nil
}

// dialBounded dials for a probe that then talks on the connection (udp, or
// tcp when tcp is set): the connection's deadline is ctx's, and ctx ending
// ends any read or write at once. The caller closes conn and calls stop.
func (d Dialer) dialBounded(ctx context.Context, tcp bool, t Target) (conn net.Conn, stop func() bool, err error) {
	network := "udp"
	if tcp {
		network = "tcp"
	}
	conn, err = d.dial(ctx, network, t.Dest(), t.Spec.Mark)
	if err != nil {
		return nil, nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	return conn, context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) }), nil
}
