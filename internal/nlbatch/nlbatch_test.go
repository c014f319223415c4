package nlbatch

import (
	"encoding/binary"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// silentPeer opens a batch socket whose requests go to a second socket of
// its own instead of the kernel: NETLINK_USERSOCK, where sockets may send to
// each other without privileges and no kernel handler answers. The peer
// never acks unless the test makes it (ack), so a missing ack is a real
// read on a real netlink socket that nothing answers. The short wait keeps
// the test quick; nothing is timed.
func silentPeer(t *testing.T) (s, peer *Socket, ack func(seq uint32, errno syscall.Errno)) {
	t.Helper()
	s, err := Open(netns.None(), unix.NETLINK_USERSOCK)
	if err != nil {
		t.Fatalf("open netlink socket: %v", err)
	}
	t.Cleanup(s.Close)
	peer, err = Open(netns.None(), unix.NETLINK_USERSOCK)
	if err != nil {
		t.Fatalf("open peer netlink socket: %v", err)
	}
	t.Cleanup(peer.Close)
	if s.peer, err = peer.s.GetPid(); err != nil {
		t.Fatal(err)
	}
	self, err := s.s.GetPid()
	if err != nil {
		t.Fatal(err)
	}
	s.ackTimeout = 50 * time.Millisecond
	// ack queues on s the ack the kernel would send for request seq: an
	// NLMSG_ERROR carrying -errno (0: done) and the request's header.
	ack = func(seq uint32, errno syscall.Errno) {
		t.Helper()
		m := make([]byte, unix.SizeofNlMsghdr+4+unix.SizeofNlMsghdr)
		binary.NativeEndian.PutUint32(m[0:], uint32(len(m)))
		binary.NativeEndian.PutUint16(m[4:], unix.NLMSG_ERROR)
		binary.NativeEndian.PutUint32(m[8:], seq)
		binary.NativeEndian.PutUint32(m[16:], uint32(-int32(errno)))
		binary.NativeEndian.PutUint32(m[20:], unix.SizeofNlMsghdr)
		binary.NativeEndian.PutUint32(m[28:], seq)
		if err := unix.Sendto(peer.s.GetFd(), m, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Pid: self}); err != nil {
			t.Fatalf("peer: send ack %d: %v", seq, err)
		}
	}
	return s, peer, ack
}

func request(b []byte, i int) ([]byte, uint16, uint16) {
	return append(b, byte(i), 0, 0, 0), unix.NLMSG_MIN_TYPE, 0
}

// TestWriteMissingAck: a write whose ack never comes fails with ErrUnknown
// once the wait is over, instead of blocking its caller (and the lock the
// caller holds) forever; the writes acked in the same batch keep their
// outcome, and the late ack of a batch given up on does not count for the
// next one.
func TestWriteMissingAck(t *testing.T) {
	s, _, ack := silentPeer(t)

	errs := s.Write(3, request) // requests 1..3: none acked
	for i, err := range errs {
		if !errors.Is(err, ErrUnknown) || !strings.Contains(err.Error(), "no ack within 50ms") {
			t.Errorf("silent peer, request %d: %v, want no ack, %v", i, err, ErrUnknown)
		}
	}

	// Requests 4..6: the peer acks 4 (done) and 6 (EEXIST) before they
	// are even sent, 5 never: the acks are read without waiting, and only
	// 5 waits out the deadline.
	ack(4, 0)
	ack(6, syscall.EEXIST)
	errs = s.Write(3, request)
	if errs[0] != nil || !errors.Is(errs[1], ErrUnknown) || errs[2] != syscall.EEXIST {
		t.Errorf("acks for 4 and 6 only: %v, want [nil, %v, %v]", errs, ErrUnknown, syscall.EEXIST)
	}

	ack(5, 0) // late, for a batch given up on
	ack(7, 0)
	if errs := s.Write(1, request); errs[0] != nil {
		t.Errorf("request 7, acked after a late ack of 5: %v", errs[0])
	}
}

// TestWriteStopsAfterLostAcks: once a batch's acks are lost, the batches
// after it are not sent. A kernel that does not ack one batch acks none, and
// each batch waiting out its own deadline would hold the caller (and its
// lock) for AckTimeout per 64 writes: 16 of them for 1,000 VIPs. The writes
// not sent fail as not made (the caller need not read the kernel for them).
func TestWriteStopsAfterLostAcks(t *testing.T) {
	s, peer, _ := silentPeer(t)
	errs := s.Write(Max+1, request) // two batches: none acked
	for i, err := range errs[:Max] {
		if !errors.Is(err, ErrUnknown) {
			t.Fatalf("request %d, in the batch sent: %v, want %v", i, err, ErrUnknown)
		}
	}
	if err := errs[Max]; err == nil || errors.Is(err, ErrUnknown) || !strings.Contains(err.Error(), "not sent") {
		t.Errorf("request %d, after the batch whose acks were lost: %v, want not sent", Max, err)
	}
	// The peer got one message, the first batch, and nothing after it.
	got := 0
	buf := make([]byte, 64<<10)
	for {
		_, _, err := unix.Recvfrom(peer.s.GetFd(), buf, unix.MSG_DONTWAIT)
		if err != nil {
			break
		}
		got++
	}
	if got != 1 {
		t.Errorf("the peer received %d messages, want 1 (the batch after lost acks was sent)", got)
	}
}
