package health

import (
	"net/netip"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// sockPool keeps the sockets of TCP probes that reached their verdict at once
// (see tcpChecker) for the next probes, so that a probe costs connect, connect,
// connect(AF_UNSPEC) instead of socket, setsockopt(SO_LINGER), connect, connect,
// close. A profile of make e2ebench at N=1000 (kglb alone, 13.08 s of samples)
// had socket() at 1.31 s, close() at 2.20 s and SO_LINGER at 0.29 s, beside the
// handshake's 7.25 s: the kernel allocating and freeing a socket, a file and a
// descriptor per probe. Kept for the row BenchmarkTCPChecksPerSecond (>= 40000
// checks/cpu-s): test binaries without and with the pool, run in turn three
// times on the same host (-test.bench TCPChecksPerSecond -test.benchtime 2s),
// printed 36,180 / 46,482, 28,889 / 35,457 and 30,648 / 48,867.
//
// connect() with family AF_UNSPEC on a TCP socket calls tcp_disconnect (Linux
// net/ipv4/af_inet.c __inet_stream_connect), the function that close() with
// SO_LINGER 0 calls too: an established connection gets its RST, the socket goes
// to CLOSE, its ephemeral port is released and it can connect again. What stays
// behind, and why none of it matters to a probe:
//   - sk_err is ECONNRESET, as after any RST the socket sent (poll reports
//     POLLERR). The next connect() clears it (tcp_connect_init sets sk_err to 0
//     before the SYN goes out), so a slow real's connect in the netpoller never
//     sees it; TestReusedSocketStaleError holds the kernel to that.
//   - The next SYN's sequence number follows from the last connection's
//     (write_seq + max_window + 2) instead of a fresh keyed hash: the socket's
//     first one is random, and what follows is known only to reals this socket
//     probed. The sequence number protects data against blind injection; a
//     probe sends none and resets the connection once the handshake is done.
//   - SO_LINGER 0, set once, when the socket was made: a socket closed while
//     established still resets.
//
// Only sockets whose probe ended on the CPU come back: established (then
// disconnected) or refused (the kernel disconnected it as it reported the
// error). A socket that went to the netpoller, or failed otherwise, is closed.
//
// A socket keeps what it was made with: its source address (tcp_disconnect
// releases the port, not an address the socket was bound to) and its mark.
// Sockets are kept by family and source, so a probe gets one bound as its own
// would be; the mark, per real for tunnelled checks, is set again when it
// differs: one setsockopt in place of a new socket's six syscalls (socket,
// SO_MARK, IP_BIND_ADDRESS_NO_PORT, SO_LINGER, bind, close). So every TCP
// probe uses the pool, sourced and marked ones too: BenchmarkTCPChecksPerSecondSourced
// (tunnelled probes over plain ones, >= 0.75) printed 0.50, 0.69 and 0.64
// when only unbound, unmarked sockets were kept, 1.05, 0.82 and 0.98 with this.
//
// The pool belongs to the scheduler's CPU slots: a socket is out of the pool
// only while its probe holds a slot, so slots sockets per family and source
// are as many as the probes can use at once. Scheduler.Run closes them as it
// returns.
type sockPool struct {
	mu     sync.Mutex
	idle   []sockBucket
	max    int // idle sockets kept per bucket
	closed bool
}

// sockBucket is the idle sockets of one family and source (invalid: unbound).
// A scheduler's probes have one source per family (its Dialer's), so there
// are at most two buckets.
type sockBucket struct {
	family int
	src    netip.Addr
	socks  []idleSock
}

// idleSock is a disconnected socket and the mark it carries.
type idleSock struct {
	fd   int
	mark uint32
}

func (p *sockPool) bucket(family int, src netip.Addr) *sockBucket {
	for i := range p.idle {
		if b := &p.idle[i]; b.family == family && b.src == src {
			return b
		}
	}
	return nil
}

// get takes an idle socket of family bound to src (invalid: unbound) and
// gives it mark, or returns -1. A nil pool has none.
func (p *sockPool) get(family int, src netip.Addr, mark uint32) int {
	if p == nil {
		return -1
	}
	p.mu.Lock()
	b := p.bucket(family, src)
	if b == nil || len(b.socks) == 0 {
		p.mu.Unlock()
		return -1
	}
	s := b.socks[len(b.socks)-1]
	b.socks = b.socks[:len(b.socks)-1]
	p.mu.Unlock()
	if s.mark != mark {
		// Failing here, the probe makes a socket of its own, whose
		// setsockopt reports the error.
		if setsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_MARK, int(mark)) != nil {
			closeRaw(s.fd)
			return -1
		}
	}
	return s.fd
}

// put keeps fd, a disconnected socket of family bound to src with mark, or
// closes it when the pool is full, closed or nil.
func (p *sockPool) put(family int, src netip.Addr, mark uint32, fd int) {
	if p == nil {
		closeRaw(fd)
		return
	}
	p.mu.Lock()
	if !p.closed {
		b := p.bucket(family, src)
		if b == nil {
			p.idle = append(p.idle, sockBucket{family: family, src: src})
			b = &p.idle[len(p.idle)-1]
		}
		if len(b.socks) < p.max {
			b.socks = append(b.socks, idleSock{fd, mark})
			fd = -1
		}
	}
	p.mu.Unlock()
	if fd >= 0 {
		closeRaw(fd)
	}
}

// unspec is the address that disconnects a socket (AF_UNSPEC is 0).
var unspecAddr unix.RawSockaddrInet6

// end resets the connection of fd, whose probe connected, and keeps the
// socket; without a pool it closes it (SO_LINGER 0: with RST).
func (p *sockPool) end(family int, src netip.Addr, mark uint32, fd int) {
	if p == nil {
		closeRaw(fd)
		return
	}
	if _, _, errno := unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&unspecAddr)), unsafe.Sizeof(unspecAddr)); errno != 0 {
		closeRaw(fd)
		return
	}
	p.put(family, src, mark, fd)
}

// close closes the idle sockets; sockets put afterwards are closed at once.
func (p *sockPool) close() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.closed = true
	p.mu.Unlock()
	for _, b := range idle {
		for _, s := range b.socks {
			closeRaw(s.fd)
		}
	}
}
