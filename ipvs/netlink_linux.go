package ipvs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/kglb/kglb/internal/nlbatch"
	mobyipvs "github.com/moby/ipvs"
	"github.com/sirupsen/logrus"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// ErrNoIPVS means the kernel has no IPVS (the ip_vs module is not loaded).
var ErrNoIPVS = errors.New("the kernel has no IPVS")

// Probe checks that the kernel serving the network namespace at netnsPath
// ("" = the current one) has IPVS, by asking for the "IPVS" generic netlink
// family. moby/ipvs cannot be trusted to tell: without IPVS its handle
// caches family id 0, the kernel ACKs every message of type 0 as a no-op,
// and every call (even NewService) returns success while nothing happens.
func Probe(netnsPath string) error {
	_, err := probe(netnsPath)
	return err
}

// probe is Probe, returning the family id.
func probe(netnsPath string) (uint16, error) {
	where := "the current network namespace"
	var h *netlink.Handle
	var err error
	if netnsPath == "" {
		h, err = netlink.NewHandle(unix.NETLINK_GENERIC)
	} else {
		where = "network namespace " + netnsPath
		var ns netns.NsHandle
		ns, err = netns.GetFromPath(netnsPath)
		if err != nil {
			return 0, fmt.Errorf("probe ipvs: open %s: %w", where, err)
		}
		defer ns.Close()
		h, err = netlink.NewHandleAt(ns, unix.NETLINK_GENERIC)
	}
	if err != nil {
		return 0, fmt.Errorf("probe ipvs in %s: %w", where, err)
	}
	defer h.Close()
	fam, err := h.GenlFamilyGet("IPVS")
	if err != nil {
		return 0, fmt.Errorf("%w: generic netlink family \"IPVS\" not found in %s (%v); load it with `modprobe ip_vs`", ErrNoIPVS, where, err)
	}
	return fam.ID, nil
}

// Netlink is the Kernel of one network namespace: it reads over moby/ipvs
// and writes over its own generic netlink socket, many writes per message
// (see Write). A moby/ipvs handle has one socket and drops replies whose
// sequence number it does not expect, so concurrent calls could lose each
// other's answers: every call holds mu.
type Netlink struct {
	mu  sync.Mutex
	h   *mobyipvs.Handle
	w   *nlbatch.Socket // writes
	fam uint16          // the IPVS generic netlink family
}

var _ Kernel = (*Netlink)(nil)

// NewNetlink probes for IPVS in the network namespace at netnsPath ("" =
// the current one) and opens a handle there. It fails with ErrNoIPVS when
// the kernel has none; probing first also keeps moby/ipvs from caching a
// zero family id for the rest of the process.
func NewNetlink(netnsPath string) (*Netlink, error) {
	fam, err := probe(netnsPath)
	if err != nil {
		return nil, err
	}
	quietMoby()
	h, err := mobyipvs.New(netnsPath)
	if err != nil {
		return nil, fmt.Errorf("open ipvs handle: %w", err)
	}
	ns := netns.None()
	if netnsPath != "" {
		ns, err = netns.GetFromPath(netnsPath)
		if err != nil {
			h.Close()
			return nil, fmt.Errorf("open ipvs write socket: open network namespace %s: %w", netnsPath, err)
		}
		defer ns.Close()
	}
	w, err := nlbatch.Open(ns, unix.NETLINK_GENERIC)
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("open ipvs write socket: %w", err)
	}
	return &Netlink{h: h, w: w, fam: fam}, nil
}

// quietMoby silences moby/ipvs's logrus output, which would reach the
// journal in another format than kglb's. Its only messages are noise here:
// "Running modprobe ip_vs failed" (kglb loads no modules; the unit forbids
// it and modules-load.d has loaded ip_vs at boot) and "Could not get ipvs
// family", which Probe has already reported as ErrNoIPVS in kglb's words.
// Nothing else in kglb logs through logrus.
var quietMoby = sync.OnceFunc(func() { logrus.SetOutput(io.Discard) })

// Close releases the handle.
func (n *Netlink) Close() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.h.Close()
	n.w.Close()
}

func ipOf(a netip.Addr) net.IP { return net.IP(a.AsSlice()) }

func addrOf(ip net.IP, f uint16) netip.Addr {
	if f == unix.AF_INET {
		if v4 := ip.To4(); v4 != nil {
			a, _ := netip.AddrFromSlice(v4)
			return a
		}
	}
	a, _ := netip.AddrFromSlice(ip.To16())
	return a
}

// The kernel takes an IPv4 netmask as a big-endian mask and an IPv6 one as
// a prefix length; moby/ipvs passes the uint32 through in host order.
func netmaskToKernel(f Family, bitsLen uint8) uint32 {
	if f == IPv6 {
		return uint32(bitsLen)
	}
	var m [4]byte
	binary.BigEndian.PutUint32(m[:], ^uint32(0)<<(32-uint32(bitsLen)))
	if bitsLen == 0 {
		m = [4]byte{}
	}
	return binary.NativeEndian.Uint32(m[:])
}

func netmaskFromKernel(f Family, v uint32) uint8 {
	if f == IPv6 {
		return uint8(min(v, 128))
	}
	var m [4]byte
	binary.NativeEndian.PutUint32(m[:], v)
	return uint8(bits.LeadingZeros32(^binary.BigEndian.Uint32(m[:])))
}

func toMobyService(s Service) *mobyipvs.Service {
	m := &mobyipvs.Service{
		AddressFamily: uint16(s.Key.Family),
		FWMark:        s.Key.FWMark,
		SchedName:     s.Scheduler,
		Flags:         uint32(s.Flags &^ FlagHashed),
		Timeout:       uint32(s.Timeout / time.Second),
		Netmask:       netmaskToKernel(s.Key.Family, s.Netmask),
	}
	if s.Key.FWMark == 0 {
		m.Address = ipOf(s.Key.Addr)
		m.Protocol = uint16(s.Key.Protocol)
		m.Port = s.Key.Port
	}
	return m
}

func keyService(k Key) *mobyipvs.Service {
	// Real and delete commands need only the identifying fields; the
	// kernel ignores the rest. The netmask must still be valid for IPv6.
	return toMobyService(Service{Key: k, Netmask: 128})
}

func fromMobyService(m *mobyipvs.Service) Service {
	f := Family(m.AddressFamily)
	s := Service{
		Scheduler: m.SchedName,
		Flags:     Flags(m.Flags),
		Timeout:   time.Duration(m.Timeout) * time.Second,
		Netmask:   netmaskFromKernel(f, m.Netmask),
		Stats: Stats{Connections: uint64(m.Stats.Connections), PacketsIn: uint64(m.Stats.PacketsIn),
			PacketsOut: uint64(m.Stats.PacketsOut), BytesIn: m.Stats.BytesIn, BytesOut: m.Stats.BytesOut},
	}
	if m.FWMark != 0 {
		s.Key = MarkKey(f, m.FWMark)
	} else {
		s.Key = Key{Family: f, Protocol: Protocol(m.Protocol), Addr: addrOf(m.Address, m.AddressFamily), Port: m.Port}
	}
	return s
}

// Services implements Kernel.
func (n *Netlink) Services() ([]Service, error) {
	n.mu.Lock()
	ms, err := n.h.GetServices()
	n.mu.Unlock()
	if err != nil {
		return nil, err
	}
	out := make([]Service, 0, len(ms))
	for _, m := range ms {
		out = append(out, fromMobyService(m))
	}
	return out, nil
}

// Reals implements Kernel.
func (n *Netlink) Reals(k Key) ([]Real, error) {
	n.mu.Lock()
	ds, err := n.h.GetDestinations(keyService(k))
	n.mu.Unlock()
	if err != nil {
		return nil, err
	}
	out := make([]Real, 0, len(ds))
	for _, d := range ds {
		out = append(out, Real{
			Addr:           addrOf(d.Address, d.AddressFamily),
			Port:           d.Port,
			Weight:         uint16(d.Weight),
			Forward:        Forward(d.ConnectionFlags & mobyipvs.ConnectionFlagFwdMask),
			UpperThreshold: d.UpperThreshold,
			LowerThreshold: d.LowerThreshold,
			ActiveConns:    d.ActiveConnections,
			InactiveConns:  d.InactiveConnections,
			Stats: Stats{Connections: uint64(d.Stats.Connections), PacketsIn: uint64(d.Stats.PacketsIn),
				PacketsOut: uint64(d.Stats.PacketsOut), BytesIn: d.Stats.BytesIn, BytesOut: d.Stats.BytesOut},
		})
	}
	return out, nil
}

// Write implements Kernel. It sends up to 64 writes in one sendmsg, each
// its own request with its own sequence number and NLM_F_ACK, and reads
// their acks together (internal/nlbatch). Under TCG a syscall costs more
// than the kernel's work for one write; a cold start of 1,000 services x 10
// reals is 11,000 writes.
func (n *Netlink) Write(ws []Write) []error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.w.Write(len(ws), func(b []byte, i int) ([]byte, uint16, uint16) {
		return appendWrite(b, ws[i]), n.fam, 0
	})
}

// The IPVS generic netlink commands and attributes (include/uapi/linux/ip_vs.h).
const (
	ipvsCmdNewService = 1
	ipvsCmdSetService = 2
	ipvsCmdDelService = 3
	ipvsCmdNewDest    = 5
	ipvsCmdSetDest    = 6
	ipvsCmdDelDest    = 7

	ipvsCmdAttrService = 1
	ipvsCmdAttrDest    = 2

	ipvsSvcAttrAF        = 1
	ipvsSvcAttrProtocol  = 2
	ipvsSvcAttrAddr      = 3
	ipvsSvcAttrPort      = 4
	ipvsSvcAttrFWMark    = 5
	ipvsSvcAttrSchedName = 6
	ipvsSvcAttrFlags     = 7
	ipvsSvcAttrTimeout   = 8
	ipvsSvcAttrNetmask   = 9

	ipvsDestAttrAddr      = 1
	ipvsDestAttrPort      = 2
	ipvsDestAttrFwdMethod = 3
	ipvsDestAttrWeight    = 4
	ipvsDestAttrUThresh   = 5
	ipvsDestAttrLThresh   = 6
)

var writeCmds = [numOps]uint8{
	OpAddService: ipvsCmdNewService, OpUpdateService: ipvsCmdSetService, OpDeleteService: ipvsCmdDelService,
	OpAddReal: ipvsCmdNewDest, OpUpdateReal: ipvsCmdSetDest, OpDeleteReal: ipvsCmdDelDest,
}

// appendWrite appends w's generic netlink header and the attributes
// moby/ipvs sends, the service's key alone where the kernel
// reads only the key (every command but an add or update of a service), a
// real's key alone for a delete.
func appendWrite(b []byte, w Write) []byte {
	b = append(b, writeCmds[w.Op], 1, 0, 0) // genlmsghdr: cmd, version 1

	svc := Service{Key: w.Service}
	full := w.Op == OpAddService || w.Op == OpUpdateService
	if full {
		svc = *w.Svc
	}
	nest := len(b)
	b = appendAttr(b, ipvsCmdAttrService, nil)
	b = appendAttr(b, ipvsSvcAttrAF, binary.NativeEndian.AppendUint16(nil, uint16(svc.Key.Family)))
	if svc.Key.FWMark != 0 {
		b = appendAttr(b, ipvsSvcAttrFWMark, binary.NativeEndian.AppendUint32(nil, svc.Key.FWMark))
	} else {
		b = appendAttr(b, ipvsSvcAttrProtocol, binary.NativeEndian.AppendUint16(nil, uint16(svc.Key.Protocol)))
		b = appendAttr(b, ipvsSvcAttrAddr, svc.Key.Addr.AsSlice())
		b = appendAttr(b, ipvsSvcAttrPort, binary.BigEndian.AppendUint16(nil, svc.Key.Port))
	}
	if full {
		b = appendAttr(b, ipvsSvcAttrSchedName, append([]byte(svc.Scheduler), 0))
		flags := binary.NativeEndian.AppendUint32(nil, uint32(svc.Flags&^FlagHashed))
		b = appendAttr(b, ipvsSvcAttrFlags, binary.NativeEndian.AppendUint32(flags, ^uint32(0)))
		b = appendAttr(b, ipvsSvcAttrTimeout, binary.NativeEndian.AppendUint32(nil, uint32(svc.Timeout/time.Second)))
		b = appendAttr(b, ipvsSvcAttrNetmask, binary.NativeEndian.AppendUint32(nil, netmaskToKernel(svc.Key.Family, svc.Netmask)))
	}
	binary.NativeEndian.PutUint16(b[nest:], uint16(len(b)-nest))

	if w.Op == OpAddReal || w.Op == OpUpdateReal || w.Op == OpDeleteReal {
		rl := Real{Addr: w.RealKey.Addr, Port: w.RealKey.Port}
		if w.Op != OpDeleteReal {
			rl = *w.Real
		}
		nest := len(b)
		b = appendAttr(b, ipvsCmdAttrDest, nil)
		b = appendAttr(b, ipvsDestAttrAddr, rl.Addr.AsSlice())
		b = appendAttr(b, ipvsDestAttrPort, binary.BigEndian.AppendUint16(nil, rl.Port))
		if w.Op != OpDeleteReal {
			b = appendAttr(b, ipvsDestAttrFwdMethod, binary.NativeEndian.AppendUint32(nil, uint32(rl.Forward)&mobyipvs.ConnectionFlagFwdMask))
			b = appendAttr(b, ipvsDestAttrWeight, binary.NativeEndian.AppendUint32(nil, uint32(rl.Weight)))
			b = appendAttr(b, ipvsDestAttrUThresh, binary.NativeEndian.AppendUint32(nil, rl.UpperThreshold))
			b = appendAttr(b, ipvsDestAttrLThresh, binary.NativeEndian.AppendUint32(nil, rl.LowerThreshold))
		}
		binary.NativeEndian.PutUint16(b[nest:], uint16(len(b)-nest))
	}
	return b
}

// appendAttr appends one netlink attribute (nlbatch.AppendAttr). A nest is
// an attribute with no data whose length the caller sets once its children
// follow (as moby/ipvs sends them, without NLA_F_NESTED, which IPVS does not
// require).
var appendAttr = nlbatch.AppendAttr
