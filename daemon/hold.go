package daemon

import (
	"crypto/sha256"
	"net/netip"
	"slices"
	"strings"

	"github.com/kglb/kglb/config"
)

// Hold is the reload watcher's Hold: new, with the services and reals that
// it removes from running kept as running has them, so that they are
// deleted only once the files have settled (daemon.settle). held reports
// whether anything was kept. Additions and changes are new's.
//
// A removed service is not kept when a service of new claims its kernel
// identity (VIP, port and protocol, or fwmark): that is a rename, and two
// services cannot own one IPVS service. A kept real is kept in its
// service as new has it (scheduler, checks), with its own weight, unless
// the service changed address family.
//
// The result's digest is new's, marked: it is not what the files say, so
// it is never recorded as applied, and loading the same files again once
// they have settled is not "unchanged".
func Hold(running, new *config.Config) (*config.Config, bool) {
	byName := make(map[string]*config.Service, len(new.Services))
	claimed := make(map[string]bool, len(new.Services))
	for _, s := range new.Services {
		byName[s.Name] = s
		claimed[s.Endpoint()] = true
	}
	var kept []*config.Service // removed services, and services of new with removed reals
	for _, old := range running.Services {
		n, ok := byName[old.Name]
		if !ok {
			if !claimed[old.Endpoint()] {
				kept = append(kept, old)
			}
			continue
		}
		have := make(map[netip.AddrPort]bool, len(n.Reals))
		for _, r := range n.Reals {
			have[r.AddrPort()] = true
		}
		var gone []config.Real
		for _, r := range old.Reals {
			// A service that changed family is a new IPVS service: its
			// old reals may not fit it.
			if !have[r.AddrPort()] && old.Family == n.Family {
				gone = append(gone, r)
			}
		}
		if len(gone) == 0 {
			continue
		}
		s := *n
		s.Reals = append(slices.Clone(n.Reals), gone...)
		slices.SortFunc(s.Reals, func(a, b config.Real) int {
			if c := a.Addr.Compare(b.Addr); c != 0 {
				return c
			}
			return int(a.Port) - int(b.Port)
		})
		kept = append(kept, &s)
	}
	if len(kept) == 0 {
		return new, false
	}
	out := *new
	out.Services = make([]*config.Service, 0, len(new.Services)+len(kept))
	replaced := make(map[string]*config.Service, len(kept))
	for _, s := range kept {
		replaced[s.Name] = s
	}
	for _, s := range new.Services {
		if r := replaced[s.Name]; r != nil {
			s = r
			delete(replaced, s.Name)
		}
		out.Services = append(out.Services, s)
	}
	for _, s := range kept {
		if replaced[s.Name] != nil { // a removed service
			out.Services = append(out.Services, s)
		}
	}
	slices.SortFunc(out.Services, func(a, b *config.Service) int { return strings.Compare(a.Name, b.Name) })
	out.Digest = sha256.Sum256(append([]byte("kglb held\x00"), new.Digest[:]...))
	return &out, true
}
