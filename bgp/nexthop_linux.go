package bgp

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// linkAddress returns the global address of family fam that the host has
// on the link its session to neighbor uses (the link holding local when it
// is set, else the link of the kernel's route to neighbor): the next hop a
// router would derive for routes of fam over that session. The first such
// address the kernel lists (the primary) wins.
func linkAddress(neighbor, local netip.Addr, fam Family) (netip.Addr, error) {
	idx := 0
	if local.IsValid() {
		addrs, err := netlink.AddrList(nil, familyOf(local))
		if err != nil {
			return netip.Addr{}, fmt.Errorf("list addresses: %w", err)
		}
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == local {
				idx = a.LinkIndex
				break
			}
		}
		if idx == 0 {
			return netip.Addr{}, fmt.Errorf("local address %s is on no link", local)
		}
	} else {
		rs, err := netlink.RouteGet(neighbor.AsSlice())
		if err != nil || len(rs) == 0 {
			return netip.Addr{}, fmt.Errorf("no route to %s: %v", neighbor, err)
		}
		idx = rs[0].LinkIndex
	}
	link, err := netlink.LinkByIndex(idx)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("link %d: %w", idx, err)
	}
	want := unix.AF_INET
	if fam == IPv6Unicast {
		want = unix.AF_INET6
	}
	addrs, err := netlink.AddrList(link, want)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("list addresses of %s: %w", link.Attrs().Name, err)
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		unusable := a.Flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED|unix.IFA_F_DEPRECATED) != 0
		if ip.IsGlobalUnicast() && !unusable && ip.Is4() == (fam == IPv4Unicast) {
			return ip, nil
		}
	}
	return netip.Addr{}, errors.New("link " + link.Attrs().Name + " has no global " + fam.String() + " address")
}

func familyOf(a netip.Addr) int {
	if a.Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}
