package config

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"
)

// After a load with no problem at all, a Loader keeps what the checks
// across files found (lastLoad), so that the next load, when only services
// changed, checks only the services that changed: validate's work is
// O(changed), not O(all). Whenever the incremental checks find anything
// wrong, or anything but services changed (a daemon or bgp block, a file
// with a problem), the load runs the full checks instead, so the messages,
// and which service they cite first, are exactly a fresh load's.

// lastLoad is a clean load's result and its index.
type lastLoad struct {
	files     []string // the Config's Files
	daemon    Daemon
	hasDaemon bool
	bgp       BGP
	sorted    []*Service // the Config's Services
	idx       *serviceIndex
}

// endpoint is what a service is matched by in the kernel: VIP, port and
// protocol, or fwmark and family.
type endpoint struct {
	proto Protocol
	ap    netip.AddrPort
	mark  uint32
	fam   Family
}

func endpointOf(s *Service) (endpoint, bool) {
	switch {
	case s.FWMark != 0:
		return endpoint{mark: s.FWMark, fam: s.Family}, true
	case s.VIP.IsValid() && s.Port != 0: // no port: reported on its own
		return endpoint{proto: s.Protocol, ap: netip.AddrPortFrom(s.VIP, s.Port)}, true
	}
	return endpoint{}, false
}

// serviceIndex is what the checks across services look up: in a clean load
// every name and endpoint is unique, and every service of a VIP announces
// it alike.
type serviceIndex struct {
	names     map[string]*Service
	endpoints map[endpoint]*Service
	vips      map[netip.Addr][]*Service
	tunnel    map[netip.Addr]int // reals with a tunnelled check, by how many services have them
}

func newIndex(n int) *serviceIndex {
	return &serviceIndex{
		names:     make(map[string]*Service, n),
		endpoints: make(map[endpoint]*Service, n),
		vips:      make(map[netip.Addr][]*Service, n),
		tunnel:    map[netip.Addr]int{},
	}
}

// add indexes s; false when it clashes with a service already there.
func (x *serviceIndex) add(s *Service, m *serviceMeta) bool {
	if _, dup := x.names[s.Name]; dup {
		return false
	}
	x.names[s.Name] = s
	if ep, ok := endpointOf(s); ok {
		if _, dup := x.endpoints[ep]; dup {
			return false
		}
		x.endpoints[ep] = s
	}
	if s.VIP.IsValid() {
		same := x.vips[s.VIP]
		if len(same) > 0 && !sameRoute(same[0].Announce, s.Announce) {
			return false
		}
		x.vips[s.VIP] = append(same, s)
	}
	if len(m.tunnelRanges) > 0 {
		for _, r := range s.Reals {
			x.tunnel[r.Addr]++
		}
	}
	return true
}

// remove forgets s, which add indexed.
func (x *serviceIndex) remove(s *Service, m *serviceMeta) {
	delete(x.names, s.Name)
	if ep, ok := endpointOf(s); ok {
		delete(x.endpoints, ep)
	}
	if s.VIP.IsValid() {
		same := slices.DeleteFunc(slices.Clone(x.vips[s.VIP]), func(o *Service) bool { return o == s })
		if len(same) == 0 {
			delete(x.vips, s.VIP)
		} else {
			x.vips[s.VIP] = same
		}
	}
	if len(m.tunnelRanges) > 0 {
		for _, r := range s.Reals {
			if x.tunnel[r.Addr]--; x.tunnel[r.Addr] <= 0 {
				delete(x.tunnel, r.Addr)
			}
		}
	}
}

// indexOf indexes the services of a clean load.
func indexOf(fds []*fileDecode, n int) *serviceIndex {
	x := newIndex(n)
	for _, fd := range fds {
		for i, s := range fd.services {
			x.add(s, fd.metas[i])
		}
	}
	return x
}

// plain reports whether fd holds services only, with no problem: a file
// whose change the incremental checks may take.
func (fd *fileDecode) plain() bool {
	return len(fd.parse) == 0 && len(fd.top) == 0 && len(fd.daemons) == 0 && len(fd.bgps) == 0 && len(fd.svcDiags) == 0
}

// fileChange is a file whose content changed since the last load, or that
// came (old nil) or went (new nil).
type fileChange struct {
	name     string
	old, new *fileDecode
}

// incremental returns the Config of srcs, decoded as fds, from the last
// load, given what changed since, when that load was clean, only services
// changed, and the changed ones pass the checks across services; false
// otherwise, and then the index is spent.
func (l *Loader) incremental(srcs []source, fds []*fileDecode, changes []fileChange) (*Config, bool) {
	last := l.last
	l.last = nil // taken: a failure below leaves it half updated
	if last == nil {
		return nil, false
	}
	sameFiles := len(srcs) == len(last.files)
	for _, c := range changes {
		if c.new != nil && !c.new.plain() || c.old != nil && !c.old.plain() {
			return nil, false
		}
		sameFiles = sameFiles && c.old != nil && c.new != nil
	}

	// What left and what came, by pointer: a block that did not change is
	// the same *Service in both decodes.
	var gone, came []indexed
	for _, c := range changes {
		g, n := serviceDiff(c.old, c.new)
		gone, came = append(gone, g...), append(came, n...)
	}
	x := last.idx
	for _, e := range gone {
		x.remove(e.s, e.m)
	}
	dm := last.daemon
	for _, e := range came {
		if !x.add(e.s, e.m) || inTunnelMarks(e.s, dm) {
			return nil, false
		}
		for fam := range e.m.tunnelRanges {
			if !dm.healthSource(fam).IsValid() {
				return nil, false
			}
		}
	}
	if last.hasDaemon {
		for _, src := range []netip.Addr{dm.HealthSourceV4, dm.HealthSourceV6} {
			if _, isVIP := x.vips[src]; src.IsValid() && isVIP {
				return nil, false
			}
		}
	}
	if uint32(len(x.tunnel)) > dm.TunnelMarkCount {
		return nil, false
	}

	cfg := &Config{Daemon: last.daemon, BGP: last.bgp, Files: last.files, Digest: digest(srcs, fds)}
	if !sameFiles {
		cfg.Files = make([]string, len(srcs))
		for i, s := range srcs {
			cfg.Files[i] = s.name
		}
	}
	cfg.Services = resorted(last.sorted, gone, came)
	l.last = &lastLoad{files: cfg.Files, daemon: last.daemon, hasDaemon: last.hasDaemon, bgp: last.bgp, sorted: cfg.Services, idx: x}
	return cfg, true
}

// indexed is a service with its positions, as the index takes them.
type indexed struct {
	s *Service
	m *serviceMeta
}

// serviceDiff lists the services of old that new does not have, and those
// of new that old does not have. Either may be nil.
func serviceDiff(old, new *fileDecode) (gone, came []indexed) {
	entries := func(fd *fileDecode, keep func(i int, s *Service) bool) []indexed {
		var out []indexed
		if fd != nil {
			for i, s := range fd.services {
				if keep(i, s) {
					out = append(out, indexed{s, fd.metas[i]})
				}
			}
		}
		return out
	}
	switch {
	case old == nil || new == nil:
		all := func(int, *Service) bool { return true }
		return entries(old, all), entries(new, all)
	case len(old.services) == len(new.services):
		// An edit inside blocks keeps every other block in its place.
		return entries(old, func(i int, s *Service) bool { return new.services[i] != s }),
			entries(new, func(i int, s *Service) bool { return old.services[i] != s })
	}
	in := func(svcs []*Service) map[*Service]bool {
		m := make(map[*Service]bool, len(svcs))
		for _, s := range svcs {
			m[s] = true
		}
		return m
	}
	was, is := in(old.services), in(new.services)
	return entries(old, func(_ int, s *Service) bool { return !is[s] }),
		entries(new, func(_ int, s *Service) bool { return !was[s] })
}

// resorted is sorted (by name) without gone and with came: a new slice.
// An edit that keeps the names replaces pointers in place; one that adds
// or removes services merges, still in one pass.
func resorted(sorted []*Service, gone, came []indexed) []*Service {
	slices.SortFunc(came, func(a, b indexed) int { return strings.Compare(a.s.Name, b.s.Name) })
	byName := func(o *Service, n string) int { return cmp.Compare(o.Name, n) }
	if len(gone) == len(came) {
		out := slices.Clone(sorted)
		replaced := true
		for _, e := range came {
			i, ok := slices.BinarySearchFunc(out, e.s.Name, byName)
			if !ok || !slices.ContainsFunc(gone, func(g indexed) bool { return g.s == out[i] }) {
				replaced = false
				break
			}
			out[i] = e.s
		}
		if replaced {
			return out
		}
	}
	drop := make(map[*Service]bool, len(gone))
	for _, e := range gone {
		drop[e.s] = true
	}
	out := make([]*Service, 0, len(sorted)-len(gone)+len(came))
	j := 0
	for _, s := range sorted {
		if drop[s] {
			continue
		}
		for ; j < len(came) && came[j].s.Name < s.Name; j++ {
			out = append(out, came[j].s)
		}
		out = append(out, s)
	}
	for _, e := range came[j:] {
		out = append(out, e.s)
	}
	return out
}
