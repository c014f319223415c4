package config

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/hashicorp/hcl/v2"
)

// validate runs the checks that span services and files over svcs and
// metas, in load order, then sets cfg.Services to the services sorted by
// name. daemon is the daemon block in force, nil when there is none. Both
// slices point into a Loader's cache: nothing here writes through them.
func (d *decoder) validate(cfg *Config, svcs []*Service, metas []*serviceMeta, daemon *topBlock) {
	names := make(map[string]int, len(svcs))
	endpoints := make(map[endpoint]int, len(svcs))
	byVIP := make(map[netip.Addr]int, len(svcs))
	tunnelReals := map[netip.Addr]struct{}{}
	dm := cfg.Daemon
	for i, s := range svcs {
		m := metas[i]
		if j, dup := names[s.Name]; dup {
			d.errorAt(m.nameRange, metas[j].nameRange, "give each service its own name", "duplicate service %q", s.Name)
			continue
		}
		names[s.Name] = i
		if ep, ok := endpointOf(s); ok {
			if j, dup := endpoints[ep]; dup {
				d.errorAt(m.endpointRange, metas[j].endpointRange, "each VIP:port:protocol (or fwmark and family) may belong to one service only", "service %q uses %s, as service %q does", s.Name, s.Endpoint(), svcs[j].Name)
			} else {
				endpoints[ep] = i
			}
		}
		if inTunnelMarks(s, dm) {
			d.errorAt(m.fwmarkRange, hcl.Range{}, fmt.Sprintf("use an fwmark outside %d..%d, or move tunnel_mark_base in the daemon block", dm.TunnelMarkBase, uint64(dm.TunnelMarkBase)+uint64(dm.TunnelMarkCount)-1), "fwmark %d is inside the range reserved for tunnelled checks", s.FWMark)
		}
		for fam, rng := range m.tunnelRanges {
			if !dm.healthSource(fam).IsValid() {
				ex := "192.0.2.10"
				if fam == IPv6 {
					ex = "2001:db8::10"
				}
				hint := fmt.Sprintf("add health_source = %q (a local address that is not a VIP) to the daemon block", ex)
				if v4 := dm.HealthSourceV4; fam == IPv6 && v4.IsValid() {
					hint = fmt.Sprintf("list an IPv6 address too (a local address that is not a VIP): health_source = [%q, %q]", v4, ex)
				} else if v6 := dm.HealthSourceV6; fam == IPv4 && v6.IsValid() {
					hint = fmt.Sprintf("list an IPv4 address too (a local address that is not a VIP): health_source = [%q, %q]", ex, v6)
				}
				d.errorAt(rng, hcl.Range{}, hint, "a tunnelled check of an %s service needs an %s health_source in the daemon block", famName(fam), famName(fam))
			}
			for _, r := range s.Reals {
				tunnelReals[r.Addr] = struct{}{}
			}
		}
		if s.VIP.IsValid() {
			if j, ok := byVIP[s.VIP]; ok {
				if !sameRoute(svcs[j].Announce, s.Announce) {
					rng := m.announceRange
					if rng.Filename == "" {
						rng = m.nameRange
					}
					first := metas[j].announceRange
					if first.Filename == "" {
						first = metas[j].nameRange
					}
					d.errorAt(rng, first, "give every service of one VIP the same enabled, next_hop, communities, large_communities, med, local_pref and prepend in announce", "service %q shares vip %s with service %q but announces it differently", s.Name, s.VIP, svcs[j].Name)
				}
			} else {
				byVIP[s.VIP] = i
			}
		}
	}
	if daemon != nil {
		for _, src := range []netip.Addr{dm.HealthSourceV4, dm.HealthSourceV6} {
			if _, isVIP := byVIP[src]; src.IsValid() && isVIP {
				d.errorAt(daemon.healthSource, hcl.Range{}, "use a local address that is not a VIP: a probe from a VIP would be answered to itself", "health_source %s is a VIP", src)
			}
		}
	}
	if uint32(len(tunnelReals)) > dm.TunnelMarkCount {
		rng := hcl.Range{}
		hint := fmt.Sprintf("raise tunnel_mark_count to at least %d", len(tunnelReals))
		if daemon != nil {
			rng = daemon.def
			if daemon.tunnelMarkCount.Filename != "" {
				rng = daemon.tunnelMarkCount
			}
		} else {
			for _, m := range metas {
				for _, r := range m.tunnelRanges {
					rng = r
				}
			}
			hint = fmt.Sprintf("add a daemon block with tunnel_mark_count = %d or more", len(tunnelReals))
		}
		d.errorAt(rng, hcl.Range{}, hint, "%d reals have tunnelled checks but tunnel_mark_count is %d (one mark per real address)", len(tunnelReals), dm.TunnelMarkCount)
	}
	slices.SortStableFunc(svcs, func(a, b *Service) int { return strings.Compare(a.Name, b.Name) })
	cfg.Services = svcs
}

// inTunnelMarks reports whether s is an fwmark service whose mark is one of
// those reserved for tunnelled checks.
func inTunnelMarks(s *Service, dm Daemon) bool {
	return s.FWMark != 0 && s.FWMark >= dm.TunnelMarkBase && uint64(s.FWMark) < uint64(dm.TunnelMarkBase)+uint64(dm.TunnelMarkCount)
}

// healthSource is the source of the tunnelled probes of family fam.
func (dm Daemon) healthSource(fam Family) netip.Addr {
	if fam == IPv6 {
		return dm.HealthSourceV6
	}
	return dm.HealthSourceV4
}

// sameRoute reports whether two announce policies give one VIP's route the
// same attributes.
func sameRoute(a, b Announce) bool {
	return a.Enabled == b.Enabled && a.NextHop == b.NextHop && slices.Equal(a.Communities, b.Communities) &&
		slices.Equal(a.LargeCommunities, b.LargeCommunities) && a.HasMED == b.HasMED && a.MED == b.MED &&
		a.HasLocalPref == b.HasLocalPref && a.LocalPref == b.LocalPref && a.Prepend == b.Prepend
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
