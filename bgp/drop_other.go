//go:build !linux

package bgp

import (
	"errors"
	"net/netip"
)

func dropSessions(addr netip.Addr, port, listenPort int) (int, error) {
	return 0, errors.New("closing a session without a notification needs Linux")
}
