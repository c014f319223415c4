// Package nlbatch writes many netlink requests with one sendmsg: each its
// own request with its own sequence number and NLM_F_ACK, their acks read
// together. The kernel handles the requests of a message in order, each on
// its own, within the sendmsg, and acks each (an error, or 0), so a batch
// fails write by write, exactly as the same requests sent one by one would.
// Under TCG a syscall costs more than the kernel's work for one write: a
// cold start of 1,000 VIPs is 1,000 writes, 16 messages instead of 1,000.
package nlbatch

import (
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Max bounds the requests of one message: their acks (an error ack carries
// the request back) must fit the socket's receive buffer, or the kernel
// drops them and their outcome is unknown.
const Max = 64

// AckTimeout bounds the wait for a batch's acks. The kernel handles a
// message within sendmsg and queues every ack before it returns, so an ack
// still missing after that is one that is not coming (a kernel bug, a module
// going away, a socket problem), and the caller (a reconciler, holding the
// lock every pass, resync and metrics scrape takes) must not wait for it
// forever. It is generous all the same: under qemu TCG a batch of 64 writes
// takes hundreds of milliseconds, and a loaded machine may deschedule the
// reader for seconds; a write given up on too early would only cost a pass
// that reads the kernel again. The reads of the same callers (the vip
// package's dumps and link lookups) wait for each reply as long.
const AckTimeout = 10 * time.Second

// ErrUnknown marks a write whose ack was not read (none came within
// AckTimeout, or the read failed): the kernel may or may not have made it,
// and the caller must read the kernel again rather than assume either.
var ErrUnknown = errors.New("outcome unknown")

// Socket is a netlink socket for batched writes. It is not safe for
// concurrent use: the caller serializes Write and Close.
type Socket struct {
	s    *nl.NetlinkSocket
	seq  uint32 // of the last request sent
	buf  []byte // the message being built, reused
	rbuf []byte // acks read, reused
	// Where requests go (0: the kernel) and how long their acks may take:
	// tests point a socket at a silent peer with a short wait.
	peer       uint32
	ackTimeout time.Duration
}

// Open opens a netlink socket of protocol proto (unix.NETLINK_ROUTE,
// unix.NETLINK_GENERIC) in the network namespace ns (netns.None(): the
// caller's).
func Open(ns netns.NsHandle, proto int) (*Socket, error) {
	s, err := nl.GetNetlinkSocketAt(ns, netns.None(), proto)
	if err != nil {
		return nil, err
	}
	return &Socket{s: s, ackTimeout: AckTimeout}, nil
}

// Close closes the socket.
func (s *Socket) Close() { s.s.Close() }

// Request appends request i's payload (what follows the netlink header) to
// b and returns b with the request's message type and its flags beyond
// NLM_F_REQUEST|NLM_F_ACK (NLM_F_CREATE|NLM_F_EXCL for an add).
type Request func(b []byte, i int) (out []byte, typ, flags uint16)

// noHeader holds a request's place for its header until its length is known.
var noHeader [unix.SizeofNlMsghdr]byte

// Write sends requests 0..n-1 in order, up to Max per message, and returns
// one error per request: nil when the kernel acked it with 0, its errno
// otherwise, the failure to send, or, when its ack was not read within
// AckTimeout or the read failed, an error wrapping ErrUnknown. The messages
// after one whose acks were not all read are not sent (ErrNotSent): a
// kernel that does not ack one does not ack the next, and waiting out
// AckTimeout for each would hold the caller for a deadline per 64 writes.
func (s *Socket) Write(n int, req Request) []error {
	errs := make([]error, n)
	for i := 0; i < n; i += Max {
		to := min(i+Max, n)
		if !s.send(i, to, req, errs[i:to]) {
			copy(errs[to:], Fail(n-to, ErrNotSent))
			break
		}
	}
	return errs
}

// ErrNotSent is the error of a write Write did not send because the acks
// of an earlier message of the same call were lost: it was not made.
var ErrNotSent = errors.New("not sent: the acks of the writes before it were lost")

// send writes requests from..to-1 in one message and fills errs from the
// acks. It returns false when some of the acks were not read (their
// writes' errors wrap ErrUnknown).
func (s *Socket) send(from, to int, req Request, errs []error) bool {
	first := s.seq + 1
	b := s.buf[:0]
	for i := from; i < to; i++ {
		s.seq++
		start := len(b)
		b = append(b, noHeader[:]...)
		var typ, flags uint16
		b, typ, flags = req(b, i)
		for len(b)%4 != 0 {
			b = append(b, 0)
		}
		h := b[start:]
		binary.NativeEndian.PutUint32(h[0:], uint32(len(b)-start))
		binary.NativeEndian.PutUint16(h[4:], typ)
		binary.NativeEndian.PutUint16(h[6:], flags|unix.NLM_F_REQUEST|unix.NLM_F_ACK)
		binary.NativeEndian.PutUint32(h[8:], s.seq)
		binary.NativeEndian.PutUint32(h[12:], 0) // port id: the kernel fills it in
	}
	s.buf = b
	fd := s.s.GetFd()
	if err := unix.Sendto(fd, b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Pid: s.peer}); err != nil {
		copy(errs, Fail(len(errs), fmt.Errorf("send: %w", err)))
		return true
	}
	acked := make([]bool, len(errs))
	if s.rbuf == nil {
		s.rbuf = make([]byte, 64<<10)
	}
	// One deadline for the batch, not one per read: acks of an earlier
	// batch given up on, arriving late, must not extend it.
	deadline := time.Now().Add(s.ackTimeout)
	for left := len(errs); left > 0; {
		// The kernel handles the whole message within sendto and queues
		// every ack before it returns: read them straight off the socket
		// into one buffer, and wait on the poller only if one is missing.
		var msgs []syscall.NetlinkMessage
		nr, _, err := unix.Recvfrom(fd, s.rbuf, unix.MSG_DONTWAIT)
		switch {
		case err == unix.EAGAIN || err == unix.EINTR:
			msgs, err = s.wait(deadline)
		case err == nil:
			msgs, err = syscall.ParseNetlinkMessage(s.rbuf[:nr])
			if err != nil {
				err = fmt.Errorf("read ack: %w: %w", err, ErrUnknown)
			}
		default:
			err = fmt.Errorf("read ack: %w: %w", err, ErrUnknown)
		}
		if err != nil {
			// The acks not read are lost: their writes' outcome is unknown.
			for i := range errs {
				if !acked[i] {
					errs[i] = err
				}
			}
			return false
		}
		for _, m := range msgs {
			d := m.Header.Seq - first // wraps with the sequence numbers
			if m.Header.Type != unix.NLMSG_ERROR || d >= uint32(len(errs)) || acked[d] || len(m.Data) < 4 {
				continue
			}
			acked[d] = true
			left--
			if code := int32(binary.NativeEndian.Uint32(m.Data[:4])); code != 0 {
				errs[d] = syscall.Errno(-code)
			}
		}
	}
	return true
}

// wait reads the next message on the poller until deadline. The library
// turns its receive timeout into a read deadline on the poller, which it
// reports as EAGAIN.
func (s *Socket) wait(deadline time.Time) ([]syscall.NetlinkMessage, error) {
	left := time.Until(deadline)
	if left < time.Microsecond { // a zero timeval would mean no timeout
		return nil, fmt.Errorf("no ack within %s: %w", s.ackTimeout, ErrUnknown)
	}
	tv := unix.NsecToTimeval(left.Nanoseconds())
	if err := s.s.SetReceiveTimeout(&tv); err != nil {
		return nil, fmt.Errorf("read ack: set receive timeout: %w: %w", err, ErrUnknown)
	}
	msgs, _, err := s.s.Receive()
	switch {
	case err == unix.EAGAIN:
		return nil, fmt.Errorf("no ack within %s: %w", s.ackTimeout, ErrUnknown)
	case err != nil:
		return nil, fmt.Errorf("read ack: %w: %w", err, ErrUnknown)
	}
	return msgs, nil
}

// Fail is the answer to n writes that all failed with err before any was
// sent (the socket closed, the link not known).
func Fail(n int, err error) []error {
	errs := make([]error, n)
	for i := range errs {
		errs[i] = err
	}
	return errs
}

// AppendAttr appends one netlink attribute, padded to 4 bytes.
func AppendAttr(b []byte, typ uint16, data []byte) []byte {
	b = binary.NativeEndian.AppendUint16(b, uint16(unix.SizeofRtAttr+len(data)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, data...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}
