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
			return fmt.Errorf("probe ipvs: open %s: %w", where, err)
		}
		defer ns.Close()
		h, err = netlink.NewHandleAt(ns, unix.NETLINK_GENERIC)
	}
	if err != nil {
		return fmt.Errorf("probe ipvs in %s: %w", where, err)
	}
	defer h.Close()
	if _, err := h.GenlFamilyGet("IPVS"); err != nil {
		return fmt.Errorf("%w: generic netlink family \"IPVS\" not found in %s (%v); load it with `modprobe ip_vs`", ErrNoIPVS, where, err)
	}
	return nil
}

// Netlink is the Kernel of one network namespace, over moby/ipvs. A
// moby/ipvs handle has one socket and drops replies whose sequence number
// it does not expect, so concurrent calls could lose each other's answers:
// every call holds mu.
type Netlink struct {
	mu sync.Mutex
	h  *mobyipvs.Handle
}

var _ Kernel = (*Netlink)(nil)

// NewNetlink probes for IPVS in the network namespace at netnsPath ("" =
// the current one) and opens a handle there. It fails with ErrNoIPVS when
// the kernel has none; probing first also keeps moby/ipvs from caching a
// zero family id for the rest of the process.
func NewNetlink(netnsPath string) (*Netlink, error) {
	if err := Probe(netnsPath); err != nil {
		return nil, err
	}
	quietMoby()
	h, err := mobyipvs.New(netnsPath)
	if err != nil {
		return nil, fmt.Errorf("open ipvs handle: %w", err)
	}
	return &Netlink{h: h}, nil
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

func toMobyDest(r Real) *mobyipvs.Destination {
	return &mobyipvs.Destination{
		Address:         ipOf(r.Addr),
		Port:            r.Port,
		Weight:          int(r.Weight),
		ConnectionFlags: uint32(r.Forward),
		AddressFamily:   uint16(FamilyOf(r.Addr)),
		UpperThreshold:  r.UpperThreshold,
		LowerThreshold:  r.LowerThreshold,
	}
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

// AddService implements Kernel.
func (n *Netlink) AddService(s Service) error {
	ms := toMobyService(s)
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.h.NewService(ms)
}

// UpdateService implements Kernel.
func (n *Netlink) UpdateService(s Service) error {
	ms := toMobyService(s)
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.h.UpdateService(ms)
}

// DeleteService implements Kernel.
func (n *Netlink) DeleteService(k Key) error {
	ms := keyService(k)
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.h.DelService(ms)
}

// AddReal implements Kernel.
func (n *Netlink) AddReal(k Key, r Real) error {
	ms, md := keyService(k), toMobyDest(r)
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.h.NewDestination(ms, md)
}

// UpdateReal implements Kernel.
func (n *Netlink) UpdateReal(k Key, r Real) error {
	ms, md := keyService(k), toMobyDest(r)
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.h.UpdateDestination(ms, md)
}

// DeleteReal implements Kernel.
func (n *Netlink) DeleteReal(k Key, rk RealKey) error {
	ms, md := keyService(k), toMobyDest(Real{Addr: rk.Addr, Port: rk.Port})
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.h.DelDestination(ms, md)
}
