//go:build !linux

package bgp

import (
	"errors"
	"net/netip"
)

func linkAddress(neighbor, local netip.Addr, fam Family) (netip.Addr, error) {
	return netip.Addr{}, errors.New("deriving a next hop needs Linux")
}
