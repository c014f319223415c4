package bgp

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/apiutil"
	packet "github.com/osrg/gobgp/v3/pkg/packet/bgp"
)

// Route is one prefix kglb announces, with its attributes. Routes are plain
// values: Apply compares them by value and re-announces a prefix whose
// attributes changed.
type Route struct {
	// Prefix is the announced prefix, normally a VIP as a /32 or /128.
	Prefix netip.Prefix `json:"prefix"`
	// NextHop is the next hop; the zero value means this node: the
	// session's local address, or for a route of the other family than
	// the session (IPv6 over IPv4) the host's address of the route's
	// family on the link towards the neighbor (see export.go).
	NextHop netip.Addr `json:"next_hop,omitzero"`
	// Communities are standard communities (RFC 1997).
	Communities []Community `json:"communities,omitempty"`
	// LargeCommunities are large communities (RFC 8092).
	LargeCommunities []LargeCommunity `json:"large_communities,omitempty"`
	// MED is sent when HasMED is set (MED 0 is a valid, best, value).
	MED    uint32 `json:"med,omitempty"`
	HasMED bool   `json:"has_med,omitempty"`
	// LocalPref is sent to iBGP peers (never to eBGP ones) when HasLocalPref
	// is set or it is non-zero; otherwise GoBGP sends its default of 100.
	// LOCAL_PREF 0 is a valid value, the least preferred (a backup node's),
	// so it needs HasLocalPref: without it a configured 0 became 100.
	LocalPref    uint32 `json:"local_pref,omitempty"`
	HasLocalPref bool   `json:"has_local_pref,omitempty"`
	// Prepend adds the local ASN this many extra times to the AS path
	// sent to eBGP neighbors, so they see a longer path (a degraded tier).
	// iBGP neighbors never get it (they would see their own AS and drop
	// the path as a loop), whatever other neighbors exist.
	Prepend int `json:"prepend,omitempty"`
}

// MaxPrepend bounds Route.Prepend; longer paths only make routers drop the
// route.
const MaxPrepend = 32

// Community is a standard BGP community, the high 16 bits usually an ASN.
type Community uint32

// NewCommunity builds the community high:low.
func NewCommunity(high, low uint16) Community { return Community(uint32(high)<<16 | uint32(low)) }

// String writes the community as "high:low".
func (c Community) String() string {
	return strconv.Itoa(int(c>>16)) + ":" + strconv.Itoa(int(c&0xFFFF))
}

// MarshalText writes the community as "high:low".
func (c Community) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

// UnmarshalText reads a community as ParseCommunity does.
func (c *Community) UnmarshalText(b []byte) error {
	v, err := ParseCommunity(string(b))
	if err == nil {
		*c = v
	}
	return err
}

// ParseCommunity reads "high:low" with each half in 0..65535, or one of the
// well-known names graceful-shutdown, no-export, no-advertise,
// no-export-subconfed, blackhole.
func ParseCommunity(s string) (Community, error) {
	switch strings.ToLower(s) {
	case "graceful-shutdown":
		return GracefulShutdownCommunity, nil
	case "blackhole":
		return 0xFFFF029A, nil
	case "no-export":
		return 0xFFFFFF01, nil
	case "no-advertise":
		return 0xFFFFFF02, nil
	case "no-export-subconfed":
		return 0xFFFFFF03, nil
	}
	hi, lo, ok := strings.Cut(s, ":")
	if !ok {
		return 0, fmt.Errorf("community %q: want high:low", s)
	}
	h, err1 := strconv.ParseUint(hi, 10, 16)
	l, err2 := strconv.ParseUint(lo, 10, 16)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("community %q: each half must be a number in 0..65535", s)
	}
	return NewCommunity(uint16(h), uint16(l)), nil
}

// LargeCommunity is a large BGP community, GlobalAdmin:LocalData1:LocalData2.
type LargeCommunity struct {
	GlobalAdmin, LocalData1, LocalData2 uint32
}

// String writes the community as "global:local1:local2".
func (c LargeCommunity) String() string {
	return fmt.Sprintf("%d:%d:%d", c.GlobalAdmin, c.LocalData1, c.LocalData2)
}

// MarshalText writes the community as "global:local1:local2".
func (c LargeCommunity) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

// UnmarshalText reads a community as ParseLargeCommunity does.
func (c *LargeCommunity) UnmarshalText(b []byte) error {
	v, err := ParseLargeCommunity(string(b))
	if err == nil {
		*c = v
	}
	return err
}

// ParseLargeCommunity reads "global:local1:local2", each a uint32.
func ParseLargeCommunity(s string) (LargeCommunity, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return LargeCommunity{}, fmt.Errorf("large community %q: want global:local1:local2", s)
	}
	var v [3]uint32
	for i, p := range parts {
		n, err := strconv.ParseUint(p, 10, 32)
		if err != nil {
			return LargeCommunity{}, fmt.Errorf("large community %q: each part must be a number in 0..4294967295", s)
		}
		v[i] = uint32(n)
	}
	return LargeCommunity{v[0], v[1], v[2]}, nil
}

func compareLarge(a, b LargeCommunity) int {
	return cmp.Or(cmp.Compare(a.GlobalAdmin, b.GlobalAdmin),
		cmp.Compare(a.LocalData1, b.LocalData1), cmp.Compare(a.LocalData2, b.LocalData2))
}

// normalize validates a route and returns it in canonical form: prefix
// masked, communities sorted and deduplicated, MED zeroed when not sent.
// Two routes that announce the same thing normalize to equal values.
func normalize(r Route) (Route, error) {
	if !r.Prefix.IsValid() {
		return r, errors.New("invalid prefix")
	}
	p := r.Prefix.Masked()
	if p.Addr().Is4In6() {
		return r, fmt.Errorf("prefix %s: IPv4-mapped IPv6 prefixes are not announced", r.Prefix)
	}
	if p.Addr().Zone() != "" {
		return r, fmt.Errorf("prefix %s: zones are not supported", r.Prefix)
	}
	if r.NextHop.IsValid() {
		if r.NextHop.Is4() != p.Addr().Is4() {
			return r, fmt.Errorf("prefix %s: next hop %s is of another family", p, r.NextHop)
		}
		if r.NextHop.Zone() != "" || r.NextHop.IsUnspecified() {
			return r, fmt.Errorf("prefix %s: next hop %s is not usable", p, r.NextHop)
		}
	}
	if r.Prepend < 0 || r.Prepend > MaxPrepend {
		return r, fmt.Errorf("prefix %s: prepend %d outside 0..%d", p, r.Prepend, MaxPrepend)
	}
	out := Route{
		Prefix:    p,
		NextHop:   r.NextHop,
		MED:       r.MED,
		HasMED:    r.HasMED,
		LocalPref: r.LocalPref,
		// A non-zero LocalPref alone is set, as it always was.
		HasLocalPref: r.HasLocalPref || r.LocalPref != 0,
		Prepend:      r.Prepend,
	}
	if !r.HasMED {
		out.MED = 0
	}
	// Already canonical lists are used as they are, so that comparing
	// thousands of unchanged routes allocates nothing; owned() copies them
	// before a route is kept.
	if len(r.Communities) > 0 {
		out.Communities = r.Communities
		if !sortedUnique(r.Communities, cmp.Compare[Community]) {
			out.Communities = slices.Compact(slices.Sorted(slices.Values(r.Communities)))
		}
	}
	if len(r.LargeCommunities) > 0 {
		out.LargeCommunities = r.LargeCommunities
		if !sortedUnique(r.LargeCommunities, compareLarge) {
			lc := slices.Clone(r.LargeCommunities)
			slices.SortFunc(lc, compareLarge)
			out.LargeCommunities = slices.Compact(lc)
		}
	}
	return out, nil
}

func sortedUnique[T any](s []T, cmp func(a, b T) int) bool {
	for i := 1; i < len(s); i++ {
		if cmp(s[i-1], s[i]) >= 0 {
			return false
		}
	}
	return true
}

// owned returns r with its own copies of the community lists, so a caller
// reusing its slices cannot change what the speaker recorded.
func owned(r Route) Route {
	r.Communities = slices.Clone(r.Communities)
	r.LargeCommunities = slices.Clone(r.LargeCommunities)
	return r
}

// equal compares two normalized routes.
func equal(a, b Route) bool {
	return a.Prefix == b.Prefix && a.NextHop == b.NextHop && a.MED == b.MED &&
		a.HasMED == b.HasMED && a.LocalPref == b.LocalPref && a.HasLocalPref == b.HasLocalPref && a.Prepend == b.Prepend &&
		slices.Equal(a.Communities, b.Communities) &&
		slices.Equal(a.LargeCommunities, b.LargeCommunities)
}

// withCommunity returns r with c added (for GRACEFUL_SHUTDOWN).
func withCommunity(r Route, c Community) Route {
	if slices.Contains(r.Communities, c) {
		return r
	}
	r.Communities = append(slices.Clone(r.Communities), c)
	slices.Sort(r.Communities)
	return r
}

// toPath builds the GoBGP path for a normalized route. ORIGIN is always
// present: it is mandatory and GoBGP does not add it. A zero next hop is
// sent as the unspecified address, which GoBGP replaces with the local
// address of each session.
func toPath(r Route, localASN uint32) (*api.Path, error) {
	nlri := prefixNLRI(r.Prefix)
	attrs := make([]packet.PathAttributeInterface, 0, 8)
	attrs = append(attrs, packet.NewPathAttributeOrigin(packet.BGP_ORIGIN_ATTR_TYPE_IGP))
	if r.Prefix.Addr().Is4() {
		nh := "0.0.0.0"
		if r.NextHop.IsValid() {
			nh = r.NextHop.String()
		}
		attrs = append(attrs, packet.NewPathAttributeNextHop(nh))
	} else {
		nh := "::"
		if r.NextHop.IsValid() {
			nh = r.NextHop.String()
		}
		attrs = append(attrs, packet.NewPathAttributeMpReachNLRI(nh, []packet.AddrPrefixInterface{nlri}))
	}
	if r.HasMED {
		attrs = append(attrs, packet.NewPathAttributeMultiExitDisc(r.MED))
	}
	if r.HasLocalPref {
		attrs = append(attrs, packet.NewPathAttributeLocalPref(r.LocalPref))
	}
	if len(r.Communities) > 0 {
		cs := make([]uint32, len(r.Communities))
		for i, c := range r.Communities {
			cs[i] = uint32(c)
		}
		attrs = append(attrs, packet.NewPathAttributeCommunities(cs))
	}
	if len(r.LargeCommunities) > 0 || r.Prepend > 0 {
		lcs := make([]*packet.LargeCommunity, 0, len(r.LargeCommunities)+1)
		for _, c := range r.LargeCommunities {
			lcs = append(lcs, packet.NewLargeCommunity(c.GlobalAdmin, c.LocalData1, c.LocalData2))
		}
		if r.Prepend > 0 {
			// The prepend travels as a marker the export policy turns into
			// AS-path prepends towards eBGP neighbors and removes (export.go).
			m := markerOf(localASN, r.Prepend)
			lcs = append(lcs, packet.NewLargeCommunity(m.GlobalAdmin, m.LocalData1, m.LocalData2))
		}
		attrs = append(attrs, packet.NewPathAttributeLargeCommunities(lcs))
	}
	return apiutil.NewPath(nlri, false, attrs, time.Now())
}

// withdrawPath is the path DeletePath needs to withdraw a prefix: the NLRI
// marked as a withdrawal (GoBGP then asks for no next hop).
func withdrawPath(p netip.Prefix) (*api.Path, error) {
	return apiutil.NewPath(prefixNLRI(p), true, nil, time.Now())
}

func prefixNLRI(p netip.Prefix) packet.AddrPrefixInterface {
	if p.Addr().Is4() {
		return packet.NewIPAddrPrefix(uint8(p.Bits()), p.Addr().String())
	}
	return packet.NewIPv6AddrPrefix(uint8(p.Bits()), p.Addr().String())
}

// apiFamily returns a fresh GoBGP family value (GoBGP keeps what it is
// given).
func apiFamily(f Family) *api.Family {
	if f == IPv4Unicast {
		return &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	}
	return &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
}
