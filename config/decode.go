package config

import (
	"fmt"
	"net/netip"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/hashicorp/hcl/v2"
)

// DefaultDaemon is the daemon configuration used when no daemon block
// exists, and the base that a daemon block's attributes override.
func DefaultDaemon() Daemon {
	return Daemon{
		VIPInterface:      "kglb0",
		VIPMode:           VIPModeRoute,
		StateDir:          "/var/lib/kglb",
		StatsAddress:      netip.MustParseAddrPort("127.0.0.1:5678"),
		ResyncInterval:    30 * time.Second,
		LogLevel:          LogInfo,
		LogFormat:         LogText,
		OnStop:            OnStopKeep,
		StopHold:          5 * time.Second,
		MaxDeleteShare:    50,
		Settle:            2 * time.Second,
		HealthConcurrency: 1024,
		TunnelMarkBase:    0x10000,
		TunnelMarkCount:   16384,
	}
}

var ifnameRE = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,15}$`)

func (d *decoder) decodeDaemon(bl *block) (Daemon, *fields) {
	f := d.open(bl.body, daemonSpec, "")
	c := DefaultDaemon()
	c.Source = d.source(bl.typeRange)
	if a, ok := f.get("vip_interface", kString); ok {
		if !ifnameRE.MatchString(a.val.str) || a.val.str == "." || a.val.str == ".." {
			d.errorf(a.val.rng, f.hintFor("vip_interface"), "vip_interface %s is not a valid interface name (1 to 15 letters, digits, '-', '_', '.')", quote(a.val.str))
		} else {
			c.VIPInterface = a.val.str
		}
	}
	c.VIPMode = VIPMode(f.enum("vip_mode", []string{"route", "address"}, string(c.VIPMode)))
	if a, ok := f.get("state_dir", kString); ok {
		if !filepath.IsAbs(a.val.str) {
			d.errorf(a.val.rng, f.hintFor("state_dir"), "state_dir %s is not an absolute path", quote(a.val.str))
		} else {
			c.StateDir = filepath.Clean(a.val.str)
		}
	}
	if a, ok := f.get("stats_address", kString); ok {
		ap, err := netip.ParseAddrPort(a.val.str)
		if err != nil || ap.Port() == 0 || ap.Addr().Zone() != "" {
			d.errorf(a.val.rng, f.hintFor("stats_address")+` (IPv6: "[::1]:5678")`, "stats_address %s is not an address:port", quote(a.val.str))
		} else {
			c.StatsAddress = ap
		}
	}
	c.ResyncInterval = f.duration("resync_interval", c.ResyncInterval, time.Second)
	c.LogLevel = LogLevel(f.enum("log_level", []string{"trace", "debug", "info", "warn", "error"}, string(c.LogLevel)))
	c.LogFormat = LogFormat(f.enum("log_format", []string{"text", "json"}, string(c.LogFormat)))
	c.OnStop = OnStop(f.enum("on_stop", []string{"keep", "cleanup"}, string(c.OnStop)))
	c.StopHold = f.stopWait("stop_hold", c.StopHold)
	if a, ok := f.get("max_delete_share", kString); ok {
		if p, ok := parsePercent(a.val.str); ok {
			c.MaxDeleteShare = p
		} else {
			d.errorf(a.val.rng, f.hintFor("max_delete_share"), "max_delete_share %s is not a percentage between 0%% and 100%%", quote(a.val.str))
		}
	}
	c.Settle = f.duration("settle", c.Settle, 0)
	c.HealthConcurrency = int(f.integer("health_concurrency", 1, 1_000_000, int64(c.HealthConcurrency)))
	srcs, _ := f.list("health_source", kString, true)
	var first4, first6 span
	for _, v := range srcs {
		ip, ok := d.parseAddr(v, "health_source", func() string { return f.hintFor("health_source") })
		if !ok {
			continue
		}
		switch {
		case ip.Is4() && c.HealthSourceV4.IsValid():
			d.errorAlso(v.rng, first4, "give at most one IPv4 and one IPv6 address", "health_source has two IPv4 addresses")
		case ip.Is6() && c.HealthSourceV6.IsValid():
			d.errorAlso(v.rng, first6, "give at most one IPv4 and one IPv6 address", "health_source has two IPv6 addresses")
		case ip.Is4():
			c.HealthSourceV4, first4 = ip, v.rng
		default:
			c.HealthSourceV6, first6 = ip, v.rng
		}
	}
	c.TunnelMarkBase = uint32(f.mark("tunnel_mark_base", 1, 1<<32-1, int64(c.TunnelMarkBase)))
	c.TunnelMarkCount = uint32(f.integer("tunnel_mark_count", 1, 1<<24, int64(c.TunnelMarkCount)))
	if uint64(c.TunnelMarkBase)+uint64(c.TunnelMarkCount) > 1<<32 {
		// The defaults fit, so at least one of the two is written: cite
		// the count when it is, else the base.
		rng := bl.defRange
		if a := f.attr("tunnel_mark_count"); a != nil {
			rng = a.val.rng
		} else if a := f.attr("tunnel_mark_base"); a != nil {
			rng = a.val.rng
		}
		d.errorf(rng, fmt.Sprintf("lower tunnel_mark_count to at most %d, or tunnel_mark_base to at most 0x%x", 1<<32-uint64(c.TunnelMarkBase), 1<<32-uint64(c.TunnelMarkCount)), "tunnel marks %d + %d run past the largest fwmark 4294967295", c.TunnelMarkBase, c.TunnelMarkCount)
	}
	return c, f
}

// MaxStopWait bounds each wait of a stop, daemon.stop_hold and
// bgp.graceful_shutdown_wait. A stop holds up the host's shutdown or the
// package's upgrade as long as it waits (kglb extends systemd's stop
// timeout by its waits), so a longer one is more likely "5h" written for
// "5s" than a plan.
const MaxStopWait = time.Hour

// stopWait reads a wait of the stop: a duration of at most MaxStopWait.
func (f *fields) stopWait(name string, def time.Duration) time.Duration {
	v := f.duration(name, def, 0)
	if v > MaxStopWait {
		most := fmt.Sprintf("%gh", MaxStopWait.Hours())
		f.d.errorf(f.attr(name).val.rng, fmt.Sprintf("write a %s of at most %q, such as %s = %q", name, most, name, def.String()),
			"%s %s is longer than %s, the longest wait of a stop", name, v, most)
		return def
	}
	return v
}

// asn checks an AS number: 0, 23456 (AS_TRANS), 65535 and 4294967295 are
// reserved and cannot be used on a session.
func (f *fields) asn(name string, required bool, def span) uint32 {
	if !f.has(name) {
		if required {
			f.d.errorf(def, fmt.Sprintf("add %s = 65010 (the AS number)", name), "%s needs %s", f.what(), name)
		}
		return 0
	}
	v := f.integer(name, 1, 4294967295, 0)
	switch v {
	case 23456, 65535, 4294967295:
		f.d.errorf(f.attr(name).val.rng, "use a private AS number (64512..65534 or 4200000000..4294967294) or your assigned one", "%s %d is reserved", name, v)
		return 0
	}
	return uint32(v)
}

func (d *decoder) decodeBGP(bl *block) BGP {
	f := d.open(bl.body, bgpSpec, "")
	b := BGP{Enabled: true, Source: d.source(bl.typeRange), GracefulShutdownWait: 5 * time.Second}
	b.ASN = f.asn("asn", true, bl.defRange)
	if !f.has("router_id") {
		d.errorf(bl.defRange, `add router_id = "192.0.2.10" (an IPv4 address of this host)`, "bgp block needs router_id")
	} else if a, ok := f.get("router_id", kString); ok {
		// A router ID is a 32-bit identifier written as an IPv4 address,
		// never routed to: any non-zero one works (RFC 6286).
		if ip, err := netip.ParseAddr(a.val.str); err != nil || !ip.Is4() || ip.IsUnspecified() {
			d.errorf(a.val.rng, f.hintFor("router_id")+" (a router ID is an IPv4 address, also on IPv6-only hosts)", "router_id %s is not a non-zero IPv4 address", quote(a.val.str))
		} else {
			b.RouterID = ip
		}
	}
	b.ListenPort = uint16(f.integer("listen_port", 0, 65535, 0))
	b.GracefulShutdown = f.boolean("graceful_shutdown", false)
	b.GracefulShutdownWait = f.stopWait("graceful_shutdown_wait", b.GracefulShutdownWait)
	names := map[string]span{}
	addrs := map[netip.Addr]span{}
	for _, nb := range f.blocksOf("neighbor") {
		n, addrRange, ok := d.decodeNeighbor(nb, b.ASN)
		if first, dup := names[n.Name]; dup {
			d.errorAlso(nb.labelRanges[0], first, "give each neighbor its own name", "duplicate neighbor %q", n.Name)
			continue
		}
		names[n.Name] = nb.labelRanges[0]
		if !ok {
			continue
		}
		if first, dup := addrs[n.Address]; dup {
			d.errorAlso(addrRange, first, "remove one of the two neighbor blocks", "duplicate neighbor address %s", n.Address)
			continue
		}
		addrs[n.Address] = addrRange
		b.Neighbors = append(b.Neighbors, n)
	}
	slices.SortFunc(b.Neighbors, func(x, y Neighbor) int { return strings.Compare(x.Name, y.Name) })
	return b
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)

func (d *decoder) decodeNeighbor(bl *block, localASN uint32) (Neighbor, span, bool) {
	n := Neighbor{Name: bl.labels[0], Source: d.source(bl.typeRange), Port: 179}
	f := d.open(bl.body, neighborSpec, n.Name)
	what := f.what
	if !nameRE.MatchString(n.Name) {
		d.errorf(bl.labelRanges[0], `use 1 to 63 letters, digits, '-', '_' and '.', starting with a letter or digit, such as neighbor "tor-a"`, "neighbor name %s is not valid", quote(n.Name))
	}
	var addrRange span
	ok := true
	if !f.has("address") {
		d.errorf(bl.defRange, `add address = "192.0.2.1"`, "%s needs address", what())
		ok = false
	} else if ip, a := f.addr("address"); a != nil {
		n.Address, addrRange = ip, a.val.rng
	} else {
		ok = false
	}
	n.ASN = f.asn("asn", true, bl.defRange)
	n.Port = f.port("port", 179)
	if ip, a := f.addr("local_address"); a != nil {
		if n.Address.IsValid() && ip.Is4() != n.Address.Is4() {
			ex := `"192.0.2.10"`
			if n.Address.Is6() {
				ex = `"2001:db8::10"`
			}
			d.errorf(a.val.rng, fmt.Sprintf("write an %s local_address to match address, such as local_address = %s", famName(FamilyOf(n.Address)), ex), "local_address %s and address %s are of different families", ip, n.Address)
		} else {
			n.LocalAddress = ip
		}
	}
	n.Passive = f.boolean("passive", false)
	n.MultihopTTL = uint8(f.integer("multihop_ttl", 0, 255, 0))
	// Hold time 0 (no keepalives) is not offered: the embedded GoBGP turns
	// a zero hold time into 90 s, so kglb would propose something other
	// than what the file says.
	n.HoldTime = f.duration("hold_time", 90*time.Second, 0)
	if n.HoldTime < 3*time.Second || n.HoldTime > 65535*time.Second {
		hint := `write hold_time = "9s" (3s..65535s)`
		if n.HoldTime == 0 {
			hint = `write hold_time = "65535s" for the longest hold time; kglb always sends keepalives`
		}
		d.errorf(f.attr("hold_time").val.rng, hint, "hold_time %s must be between 3s and 65535s", n.HoldTime)
		n.HoldTime = 90 * time.Second
	}
	n.Keepalive = n.HoldTime / 3
	if f.has("keepalive") {
		n.Keepalive = f.duration("keepalive", n.Keepalive, time.Second)
		if n.Keepalive >= n.HoldTime {
			d.errorf(f.attr("keepalive").val.rng, fmt.Sprintf("write keepalive = %q (a third of hold_time) or leave it out", (n.HoldTime/3).String()), "keepalive %s is not shorter than hold_time %s", n.Keepalive, n.HoldTime)
		}
	}
	n.ConnectRetry = f.duration("connect_retry", 5*time.Second, time.Second)
	if a := f.attr("password"); a != nil {
		d.errorf(a.nameRange, `put the password alone in a file readable only by kglb, and write password_file = "/etc/kglb/`+n.Name+`.secret"`, "%s: the BGP password must not be written in the configuration", what())
	}
	if a, ok := f.get("password_file", kString); ok {
		if !filepath.IsAbs(a.val.str) {
			d.errorf(a.val.rng, f.hintFor("password_file"), "password_file %s is not an absolute path", quote(a.val.str))
		} else {
			n.PasswordFile = a.val.str
			d.checkSecretFile(a.val.rng, a.val.str)
		}
	}
	fams, _ := f.list("families", kString, false)
	for _, v := range fams {
		fam := Family(v.str)
		if fam != IPv4 && fam != IPv6 {
			d.errorf(v.rng, f.hintFor("families"), "family %s is not \"ipv4\" or \"ipv6\"", quote(v.str))
			continue
		}
		if slices.Contains(n.Families, fam) {
			d.errorf(v.rng, "list each family once", "family %q is listed twice", fam)
			continue
		}
		n.Families = append(n.Families, fam)
	}
	if len(n.Families) == 0 && n.Address.IsValid() {
		n.Families = []Family{FamilyOf(n.Address)}
	}
	slices.Sort(n.Families)
	n.GracefulRestart = f.boolean("graceful_restart", false)
	n.RestartTime = f.duration("restart_time", 120*time.Second, time.Second)
	if n.RestartTime > 4095*time.Second {
		d.errorf(f.attr("restart_time").val.rng, f.hintFor("restart_time"), "restart_time %s is longer than 4095s, the protocol's limit", n.RestartTime)
	}
	_ = localASN
	return n, addrRange, ok
}

// serviceMeta keeps the ranges the cross-service checks cite.
type serviceMeta struct {
	nameRange     hcl.Range
	endpointRange hcl.Range
	fwmarkRange   hcl.Range
	announceRange hcl.Range
	tunnelRanges  map[Family]hcl.Range // first tunnel = true per family
}

var schedFlags = map[Scheduler][]Flag{
	SchedSH: {FlagSHFallback, FlagSHPort},
	SchedMH: {FlagMHFallback, FlagMHPort},
}

var schedulers = []string{"rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh"}

// decodeService decodes one service block: its endpoint and family, its
// settings, its reals, persistence, checks and announce block, in that
// order (each step may use what the one before it found).
func (d *decoder) decodeService(bl *block) (Service, serviceMeta) {
	s := Service{Name: bl.labels[0], Source: d.source(bl.typeRange)}
	m := serviceMeta{nameRange: d.full(bl.labelRanges[0]), endpointRange: d.full(bl.defRange)}
	f := d.open(bl.body, serviceSpec, s.Name)
	if !nameRE.MatchString(s.Name) {
		d.errorf(bl.labelRanges[0], `use 1 to 63 letters, digits, '-', '_' and '.', starting with a letter or digit, such as service "web"`, "service name %s is not valid", quote(s.Name))
	}
	d.serviceEndpoint(bl, f, &s, &m)
	fam := d.serviceFamily(f, &s)
	weight := d.serviceSettings(f, &s)
	fam, enabled := d.serviceReals(bl, f, &s, fam, weight)
	if pb := f.blocksOf("persistence"); len(pb) > 0 {
		s.Persistence = d.decodePersistence(pb[0], fam)
	}
	d.serviceChecks(f, &s, &m)
	d.serviceAnnounce(f, &s, &m, fam, enabled)
	return s, m
}

// serviceEndpoint decodes the service's identity: vip + port + protocol,
// or an fwmark.
func (d *decoder) serviceEndpoint(bl *block, f *fields, s *Service, m *serviceMeta) {
	vip, vipAttr := f.addr("vip")
	if vipAttr != nil {
		s.VIP = vip
		m.endpointRange = d.full(vipAttr.val.rng)
	}
	if f.has("fwmark") {
		a := f.attr("fwmark")
		s.FWMark = uint32(f.mark("fwmark", 1, 1<<32-1, 0))
		m.fwmarkRange = d.full(a.val.rng)
		m.endpointRange = m.fwmarkRange
		for _, name := range []string{"port", "protocol"} {
			if a := f.attr(name); a != nil {
				d.errorf(a.nameRange, "remove "+name+": an fwmark service matches packets by their mark, whatever their port and protocol", "%s: fwmark and %s cannot be combined", f.what(), name)
			}
		}
		return
	}
	if !f.has("vip") {
		d.errorf(bl.defRange, `add vip = "198.51.100.10" (or fwmark = 10 for an fwmark service)`, "%s needs a vip", f.what())
	}
	if !f.has("port") {
		d.errorf(bl.defRange, "add port = 443", "%s needs a port", f.what())
	} else {
		s.Port = uint16(f.integer("port", 1, 65535, 0))
	}
	s.Protocol = Protocol(f.enum("protocol", []string{"tcp", "udp", "sctp"}, "tcp"))
}

// serviceFamily is the service's address family as far as its endpoint
// says: the vip's, else the family attribute's (fwmark services only),
// else "" for the reals to decide.
func (d *decoder) serviceFamily(f *fields, s *Service) Family {
	famAttr := f.attr("family")
	fam := Family(f.enum("family", []string{"ipv4", "ipv6"}, ""))
	if famAttr != nil && !f.has("fwmark") { // a bad fwmark is reported on its own
		d.errorf(famAttr.nameRange, "remove family: it follows the vip", "%s: family applies only to fwmark services", f.what())
	}
	if !s.VIP.IsValid() {
		return fam
	}
	if fam != "" && fam != FamilyOf(s.VIP) && s.FWMark != 0 {
		d.errorf(famAttr.val.rng, fmt.Sprintf("write family = %q or use a vip of the other family", FamilyOf(s.VIP)), "family %q does not match vip %s", fam, s.VIP)
	}
	return FamilyOf(s.VIP)
}

// serviceSettings decodes the service's own attributes and returns the
// default weight of its reals.
func (d *decoder) serviceSettings(f *fields, s *Service) (weight int64) {
	s.Scheduler = Scheduler(f.enum("scheduler", schedulers, "wrr"))
	d.serviceFlags(f, s)
	s.Forward = Forward(f.enum("forward", []string{"tunnel", "dr", "nat"}, "tunnel"))
	s.OnePacket = f.boolean("one_packet", false)
	if s.OnePacket && s.FWMark == 0 && s.Protocol != UDP {
		d.errorf(f.attr("one_packet").nameRange, "remove one_packet, or use protocol = \"udp\"", "one_packet applies only to udp services, and this one is %s", s.Protocol)
	}
	s.Drain = f.duration("drain", 30*time.Second, 0)
	weight = f.integer("weight", 0, 65535, 100)
	s.WhenAllDown = AllDownPolicy(f.enum("when_all_down", []string{"fail_open", "withdraw"}, "fail_open"))
	s.Enabled = f.boolean("enabled", true)
	if a, ok := f.get("description", kString); ok {
		if len(a.val.str) > MaxDescription || strings.ContainsFunc(a.val.str, lineBreaking) {
			d.errorf(a.val.rng, fmt.Sprintf("write one line of at most %d bytes", MaxDescription), "description is not one line of at most %d bytes", MaxDescription)
		} else {
			s.Description = a.val.str
		}
	}
	return weight
}

// serviceFlags decodes the scheduler flags, each of which must belong to
// the service's scheduler, into s.Flags, sorted.
func (d *decoder) serviceFlags(f *fields, s *Service) {
	flags, _ := f.list("flags", kString, false)
	for _, v := range flags {
		fl := Flag(v.str)
		owner := Scheduler("")
		for sch, fs := range schedFlags {
			if slices.Contains(fs, fl) {
				owner = sch
			}
		}
		switch {
		case owner == "":
			d.errorf(v.rng, `the flags are "sh-fallback", "sh-port" (scheduler "sh") and "mh-fallback", "mh-port" (scheduler "mh")`, "flag %s is not a scheduler flag", quote(v.str))
		case owner != s.Scheduler:
			hint := fmt.Sprintf(`write scheduler = %q, or remove the flag`, owner)
			if alt := schedFlags[s.Scheduler]; alt != nil {
				hint = fmt.Sprintf("scheduler %q takes %s", s.Scheduler, quoteAll([]string{string(alt[0]), string(alt[1])}))
			}
			d.errorf(v.rng, hint, "flag %q belongs to scheduler %q, not %q", fl, owner, s.Scheduler)
		case slices.Contains(s.Flags, fl):
			d.errorf(v.rng, "list each flag once", "flag %q is listed twice", fl)
		default:
			s.Flags = append(s.Flags, fl)
		}
	}
	slices.Sort(s.Flags)
}

// realAt is a decoded real and the range of its label, for errors.
type realAt struct {
	r   Real
	rng span
}

// serviceReals decodes the reals into s.Reals, sorted, and sets s.Family:
// fam, else the first real's. It returns the family and the number of
// enabled reals.
func (d *decoder) serviceReals(bl *block, f *fields, s *Service, fam Family, weight int64) (Family, int) {
	rbs := f.blocksOf("real")
	reals := make([]realAt, 0, len(rbs))
	for _, rb := range rbs {
		r, ok := d.decodeReal(rb, s, fam, weight)
		if !ok {
			continue
		}
		if fam == "" {
			fam = FamilyOf(r.Addr)
		}
		if FamilyOf(r.Addr) != fam {
			other := "vip " + s.VIP.String()
			if !s.VIP.IsValid() {
				other = "service " + strconv.Quote(s.Name)
			}
			d.errorf(rb.labelRanges[0], fmt.Sprintf("IPVS cannot forward across address families: use an %s real, or put this one in an %s service", famName(fam), famName(FamilyOf(r.Addr))), "real %s is %s but %s is %s", r.Addr, famName(FamilyOf(r.Addr)), other, famName(fam))
			continue
		}
		reals = append(reals, realAt{r, rb.labelRanges[0]})
	}
	if s.FWMark != 0 && fam == "" {
		d.errorf(bl.defRange, `add family = "ipv4" (or "ipv6"), or a vip, or a real`, "%s: the address family of an fwmark service cannot be derived", f.what())
	}
	s.Family = fam
	return fam, d.uniqueReals(f, s, reals)
}

// uniqueReals sorts reals into s.Reals, reporting each duplicate and
// leaving it out, and returns the number of enabled reals. Duplicates are
// found after sorting (stable, so the first in the file is the one cited),
// without a map per service.
func (d *decoder) uniqueReals(f *fields, s *Service, reals []realAt) int {
	slices.SortStableFunc(reals, func(a, b realAt) int {
		if c := a.r.Addr.Compare(b.r.Addr); c != 0 {
			return c
		}
		return int(a.r.Port) - int(b.r.Port)
	})
	s.Reals = make([]Real, 0, len(reals))
	enabled := 0
	for i, r := range reals {
		if i > 0 && r.r.AddrPort() == reals[i-1].r.AddrPort() {
			first := reals[i-1].rng
			for j := i - 1; j > 0 && reals[j-1].r.AddrPort() == r.r.AddrPort(); j-- {
				first = reals[j-1].rng
			}
			d.errorAlso(r.rng, first, "remove one of them, or give them different ports", "duplicate real %s in %s", r.r.AddrPort(), f.what())
			continue
		}
		s.Reals = append(s.Reals, r.r)
		if r.r.Enabled {
			enabled++
		}
	}
	return enabled
}

// serviceChecks decodes the health checks into s.Checks, reporting a
// check that repeats another.
func (d *decoder) serviceChecks(f *fields, s *Service, m *serviceMeta) {
	cbs := f.blocksOf("check")
	var checkKeys map[string]span
	if len(cbs) > 1 {
		checkKeys = map[string]span{}
	}
	for _, cb := range cbs {
		c, ok := d.decodeCheck(cb, s, m)
		if !ok {
			continue
		}
		if checkKeys != nil {
			k := c.Key()
			if first, dup := checkKeys[k]; dup {
				d.errorAlso(cb.typeRange, first, "remove one of the two checks", "%s has the same %s check twice", f.what(), c.Type)
				continue
			}
			checkKeys[k] = cb.typeRange
		}
		s.Checks = append(s.Checks, c)
	}
}

// serviceAnnounce decodes the announce block, or the defaults without
// one; an fwmark service without a vip has nothing to announce.
func (d *decoder) serviceAnnounce(f *fields, s *Service, m *serviceMeta, fam Family, enabled int) {
	var ab *block
	if abs := f.blocksOf("announce"); len(abs) > 0 {
		ab = abs[0]
		m.announceRange = d.full(ab.typeRange)
		if !s.VIP.IsValid() && s.FWMark != 0 {
			d.errorf(ab.typeRange, `add vip = "198.51.100.10" to announce it, or remove the announce block`, "%s has no vip to announce", f.what())
		}
	}
	s.Announce = d.decodeAnnounce(ab, fam, enabled)
	if ab == nil && s.FWMark != 0 && !s.VIP.IsValid() {
		s.Announce.Enabled = false // nothing to announce
	}
}

func famName(f Family) string {
	if f == IPv6 {
		return "IPv6"
	}
	return "IPv4"
}

// parseRealLabel parses "10.1.0.11", "10.1.0.11:8080", "2001:db8::1" or
// "[2001:db8::1]:8080".
func parseRealLabel(s string) (netip.Addr, uint16, bool, error) {
	if ip, err := netip.ParseAddr(s); err == nil {
		return ip, 0, false, nil
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return netip.Addr{}, 0, false, err
	}
	return ap.Addr(), ap.Port(), true, nil
}

func (d *decoder) decodeReal(bl *block, s *Service, fam Family, weight int64) (Real, bool) {
	label := bl.labels[0]
	f := d.open(bl.body, realSpec, label)
	what := f.what
	ip, port, hasPort, err := parseRealLabel(label)
	if err != nil || ip.Zone() != "" {
		d.errorf(bl.labelRanges[0], `write real "10.1.0.11", real "10.1.0.11:8080" or real "[2001:db8::1]:8080"`, "real %s is not an address or address:port", quote(label))
		return Real{}, false
	}
	if !d.usableAddr(bl.labelRanges[0], "real", ip, func() string { return `write the address the real server answers on, as in real "10.1.0.11"` }) {
		return Real{}, false
	}
	if hasPort && port == 0 {
		d.errorf(bl.labelRanges[0], "leave the port out to use the service's port", "real %s has port 0", quote(label))
		return Real{}, false
	}
	r := Real{Addr: ip, Port: s.Port, Weight: int(weight), Enabled: true, Source: d.source(bl.typeRange)}
	if hasPort {
		r.Port = port
	}
	if a := f.attr("port"); a != nil {
		if hasPort {
			d.errorf(a.nameRange, "give the port once: in the label or as port", "%s already has a port in its label", what())
		} else {
			r.Port = f.port("port", r.Port)
		}
	}
	if s.FWMark == 0 && r.Port != s.Port && r.Port != 0 && s.Port != 0 && (s.Forward == ForwardTunnel || s.Forward == ForwardDR) {
		rng := bl.labelRanges[0]
		if a := f.attr("port"); a != nil {
			rng = a.val.rng
		}
		d.errorf(rng, `use forward = "nat" to map ports, or give the real the service's port`, "real port %d differs from the service port %d, but forward = %q cannot change ports", r.Port, s.Port, s.Forward)
	}
	r.Weight = int(f.integer("weight", 0, 65535, weight))
	r.UpperThreshold = uint32(f.integer("upper_threshold", 0, 1<<32-1, 0))
	r.LowerThreshold = uint32(f.integer("lower_threshold", 0, 1<<32-1, 0))
	if r.LowerThreshold > 0 {
		if r.UpperThreshold == 0 {
			d.errorf(f.attr("lower_threshold").nameRange, "add upper_threshold (the connection count that stops new connections), above lower_threshold", "lower_threshold needs upper_threshold")
		} else if r.LowerThreshold >= r.UpperThreshold {
			d.errorf(f.attr("lower_threshold").val.rng, "make lower_threshold smaller than upper_threshold", "lower_threshold %d is not below upper_threshold %d", r.LowerThreshold, r.UpperThreshold)
		}
	}
	r.Enabled = f.boolean("enabled", true)
	_ = fam
	return r, true
}

func (d *decoder) decodePersistence(bl *block, fam Family) Persistence {
	f := d.open(bl.body, persistenceSpec, "")
	p := Persistence{Enabled: true, Timeout: f.duration("timeout", 300*time.Second, time.Second)}
	if p.Timeout > 31*24*time.Hour {
		d.errorf(f.attr("timeout").val.rng, `write a timeout of at most "744h" (31 days), such as timeout = "300s"`, "persistence timeout %s is longer than 31 days", p.Timeout)
	}
	maxLen := 32
	if fam == IPv6 {
		maxLen = 128
	}
	p.PrefixLen = maxLen
	a := f.attr("netmask")
	if a == nil {
		return p
	}
	switch a.val.kind {
	case kNumber:
		p.PrefixLen = int(f.integer("netmask", 0, int64(maxLen), int64(maxLen)))
		if a.val.num > float64(maxLen) && a.val.num <= 128 {
			d.diags[len(d.diags)-1].summary = fmt.Sprintf("netmask /%g is longer than an %s address", a.val.num, famName(fam))
			d.diags[len(d.diags)-1].hint = `write a prefix length 0..32, such as netmask = 24, or netmask = "255.255.255.0"`
		}
	case kString:
		if fam == IPv6 {
			d.errorf(a.val.rng, "write netmask = 64 (a prefix length) for an IPv6 service", "netmask %s: an IPv6 service takes a prefix length", quote(a.val.str))
			return p
		}
		ip, err := netip.ParseAddr(a.val.str)
		bits := -1
		if err == nil && ip.Is4() {
			b := ip.As4()
			v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
			ones := 0
			for v&(1<<31) != 0 {
				v <<= 1
				ones++
			}
			if v == 0 {
				bits = ones
			}
		}
		if bits < 0 {
			d.errorf(a.val.rng, `write netmask = "255.255.255.0" or a prefix length such as netmask = 24`, "netmask %s is not a contiguous IPv4 netmask", quote(a.val.str))
			return p
		}
		p.PrefixLen = bits
	default:
		hint := `write netmask = "255.255.255.0" or a prefix length such as netmask = 24`
		if fam == IPv6 {
			hint = "write netmask = 64 (a prefix length) for an IPv6 service"
		}
		d.errorf(a.val.rng, hint, "netmask must be a prefix length or an IPv4 netmask, not %s", a.val.describe())
	}
	return p
}

var (
	dnsTypes  = []string{"A", "AAAA", "CAA", "CNAME", "DNSKEY", "DS", "HTTPS", "MX", "NAPTR", "NS", "PTR", "SOA", "SRV", "SVCB", "TLSA", "TXT"}
	dnsRcodes = []string{"NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "YXDOMAIN", "YXRRSET", "NXRRSET", "NOTAUTH", "NOTZONE"}
	methodRE  = regexp.MustCompile(`^[A-Z]{1,16}$`)
	tokenRE   = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
)

func (d *decoder) decodeCheck(bl *block, s *Service, m *serviceMeta) (Check, bool) {
	typ := bl.labels[0]
	if !slices.Contains(checkTypes, typ) {
		hint := "the check types are " + quoteAll(checkTypes)
		if sg := suggest(strings.ToLower(typ), checkTypes); sg != "" {
			hint = fmt.Sprintf("did you mean %q? (%s)", sg, hint)
		}
		d.errorf(bl.labelRanges[0], hint, "unknown check type %s", quote(typ))
		return Check{}, false
	}
	c := Check{Type: CheckType(typ), Source: d.source(bl.typeRange)}
	f := d.open(bl.body, checkSpec, typ)
	what := f.what
	allowed := checkTypeAttrs[c.Type]
	for i, a := range f.attrs {
		if a == nil {
			continue
		}
		name := a.name
		if slices.Contains(checkCommon, name) || slices.Contains(allowed, name) {
			continue
		}
		var owners []string
		for _, t := range checkTypes {
			if slices.Contains(checkTypeAttrs[CheckType(t)], name) {
				owners = append(owners, t)
			}
		}
		d.errorf(a.nameRange, fmt.Sprintf("remove it: %s applies to %s checks", name, strings.Join(owners, " and ")), "%s is not an attribute of check %q", name, typ)
		if &f.attrs[0] == &bl.body.attrs[0] {
			f.attrs = slices.Clone(f.attrs)
		}
		f.attrs[i] = nil
	}

	c.Interval = f.duration("interval", 5*time.Second, 100*time.Millisecond)
	c.Timeout = f.duration("timeout", 2*time.Second, time.Millisecond)
	if c.Timeout >= c.Interval {
		rng, note := bl.defRange, " (the default)"
		if a := f.attr("timeout"); a != nil {
			rng, note = a.val.rng, ""
		} else if a := f.attr("interval"); a != nil {
			rng = a.val.rng
		}
		d.errorf(rng, fmt.Sprintf("set timeout below interval, such as timeout = %q", (c.Interval/2).String()), "timeout %s%s is not shorter than interval %s", c.Timeout, note, c.Interval)
	}
	c.Rise = int(f.integer("rise", 1, 100, 2))
	c.Fall = int(f.integer("fall", 1, 100, 3))
	c.Port = f.port("port", 0)
	if c.Port == 0 && s.FWMark != 0 {
		for _, r := range s.Reals {
			if r.Port == 0 {
				d.errorf(bl.defRange, "add port = 80 to the check: the reals of this fwmark service have no port", "%s needs a port: real %s has none", what(), r.Addr)
				break
			}
		}
	}
	c.Tunnel = f.boolean("tunnel", false)
	if c.Tunnel {
		a := f.attr("tunnel")
		if !s.VIP.IsValid() {
			d.errorf(a.nameRange, "add a vip to the service, or remove tunnel", "%s: a tunnelled check probes through the vip, and the service has none", what())
		} else if m.tunnelRanges == nil {
			m.tunnelRanges = map[Family]hcl.Range{s.Family: d.full(a.nameRange)}
		} else if _, ok := m.tunnelRanges[s.Family]; !ok {
			m.tunnelRanges[s.Family] = d.full(a.nameRange)
		}
	}

	switch c.Type {
	case CheckHTTP, CheckHTTPS:
		c.HTTP = d.decodeHTTP(f, c.Type)
	case CheckDNS:
		c.DNS = d.decodeDNS(f, bl)
	case CheckSyslog:
		c.Syslog.Transport = Transport(f.enum("transport", []string{"tcp", "udp"}, "tcp"))
		c.Syslog.Message = f.str("message", "kglb health check")
		if strings.ContainsAny(c.Syslog.Message, "\r\n") {
			d.errorf(f.attr("message").val.rng, `write the message on one line, as a quoted string such as message = "kglb health check"`, "message must not contain a line break")
		}
	}
	return c, true
}

// lineBreaking reports whether r has no place in one line of text: a
// control character (newline, tab, escape) or a line or paragraph
// separator (U+2028, U+2029).
func lineBreaking(r rune) bool {
	return unicode.IsControl(r) || unicode.In(r, unicode.Zl, unicode.Zp)
}

func (d *decoder) decodeHTTP(f *fields, typ CheckType) HTTPCheck {
	h := HTTPCheck{Method: "GET", Path: "/", Status: []StatusRange{{200, 200}}}
	if a, ok := f.get("method", kString); ok {
		if !methodRE.MatchString(a.val.str) {
			d.errorf(a.val.rng, f.hintFor("method"), "method %s is not an HTTP method in upper case", quote(a.val.str))
		} else {
			h.Method = a.val.str
		}
	}
	if a, ok := f.get("path", kString); ok {
		if !strings.HasPrefix(a.val.str, "/") || strings.ContainsAny(a.val.str, " \t\r\n") {
			d.errorf(a.val.rng, f.hintFor("path"), "path %s must start with / and contain no spaces", quote(a.val.str))
		} else {
			h.Path = a.val.str
		}
	}
	for _, name := range []string{"host", "sni"} {
		if a, ok := f.get(name, kString); ok {
			if a.val.str == "" || strings.ContainsAny(a.val.str, "/ \t\r\n") {
				d.errorf(a.val.rng, f.hintFor(name)+" (a name, without scheme or path)", "%s %s is not a host name", name, quote(a.val.str))
			} else if name == "host" {
				h.Host = a.val.str
			} else {
				h.SNI = a.val.str
			}
		}
	}
	if a, ok := f.get("headers", kObject); ok {
		h.Headers = make(map[string]string, len(a.val.keys()))
		for i, k := range a.val.keys() {
			v := a.val.elems()[i]
			switch {
			case !tokenRE.MatchString(k):
				d.errorf(v.rng, f.hintFor("headers"), "header name %s is not valid", quote(k))
			case strings.EqualFold(k, "host"):
				d.errorf(v.rng, fmt.Sprintf("write host = %s instead", quote(v.str)), "set the Host header with the host attribute")
			case v.kind != kString:
				hint := f.hintFor("headers")
				switch v.kind {
				case kNumber:
					hint = fmt.Sprintf("quote the value: %s = %q", quote(k), formatNum(v.num))
				case kBool:
					hint = fmt.Sprintf("quote the value: %s = %q", quote(k), strconv.FormatBool(v.bool))
				}
				d.errorf(v.rng, hint, "header %s must be a string, not %s", k, v.describe())
			case strings.ContainsAny(v.str, "\r\n"):
				d.errorf(v.rng, "write the header value on one line", "header %s contains a line break", k)
			default:
				h.Headers[k] = v.str
			}
		}
	}
	if vals, a := f.list("status", kString, false); a != nil {
		h.Status = nil
		for _, v := range vals {
			r, ok := parseStatus(v)
			if !ok {
				d.errorf(v.rng, `write status codes as numbers or ranges: status = [200, "300-399"]`, "status %s is not an HTTP status code (100..599) or a range of them", v.text())
				continue
			}
			h.Status = append(h.Status, r)
		}
		if len(vals) == 0 {
			d.errorf(a.val.rng, "list at least one code, such as status = [200]", "status is empty: no response would be good")
		}
	}
	h.Body = f.str("body", "")
	h.FollowRedirects = f.boolean("follow_redirects", false)
	if a, ok := f.get("ca_file", kString); ok {
		if !filepath.IsAbs(a.val.str) {
			d.errorf(a.val.rng, f.hintFor("ca_file"), "ca_file %s is not an absolute path", quote(a.val.str))
		} else {
			h.CAFile = a.val.str
		}
	}
	h.Insecure = f.boolean("insecure", false)
	if h.Insecure && h.CAFile != "" {
		d.errorf(f.attr("insecure").nameRange, "remove insecure to verify against ca_file, or remove ca_file", "insecure = true and ca_file contradict each other")
	}
	h.MaxBody = int(f.integer("max_body", 1, 16<<20, 65536))
	if a, ok := f.get("proxy_url", kString); ok {
		u, err := url.Parse(a.val.str)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			d.errorf(a.val.rng, f.hintFor("proxy_url"), "proxy_url %s is not an http:// or https:// URL", quote(a.val.str))
		} else {
			h.ProxyURL = a.val.str
		}
		if p := f.attr("path"); p != nil {
			d.errorf(p.nameRange, "remove path: in proxy mode the request goes to proxy_url", "path and proxy_url cannot be combined")
		}
	}
	_ = typ
	return h
}

func parseStatus(v value) (StatusRange, bool) {
	ok := func(n int) bool { return n >= 100 && n <= 599 }
	if v.kind == kNumber {
		n := int(v.num)
		if float64(n) != v.num || !ok(n) {
			return StatusRange{}, false
		}
		return StatusRange{n, n}, true
	}
	lo, hi, isRange := strings.Cut(v.str, "-")
	a, err1 := strconv.Atoi(strings.TrimSpace(lo))
	b := a
	var err2 error
	if isRange {
		b, err2 = strconv.Atoi(strings.TrimSpace(hi))
	}
	if err1 != nil || err2 != nil || !ok(a) || !ok(b) || a > b {
		return StatusRange{}, false
	}
	return StatusRange{a, b}, true
}

// notLabelRune reports a rune that no label of a name a health check queries
// has: names are letters, digits, '-' and '_' (as in _sip._tcp), between
// dots.
func notLabelRune(r rune) bool {
	return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_')
}

func (d *decoder) decodeDNS(f *fields, bl *block) DNSCheck {
	c := DNSCheck{Type: "A", Transport: TransportUDP, Rcode: "NOERROR"}
	if !f.has("name") {
		d.errorf(bl.defRange, `add name = "www.example.com." (the name to query)`, "a dns check needs name")
	} else if a, ok := f.get("name", kString); ok {
		n := strings.TrimSuffix(a.val.str, ".")
		valid := n != "" && len(n) <= 253
		for _, l := range strings.Split(n, ".") {
			if l == "" || len(l) > 63 || strings.IndexFunc(l, notLabelRune) >= 0 {
				valid = false
			}
		}
		switch {
		case strings.Contains(n, "://"):
			d.errorf(a.val.rng, `write the host name alone, such as name = "www.example.com.": a dns check queries a name, not a URL`, "name %s is a URL, not a domain name", quote(a.val.str))
		case !valid:
			d.errorf(a.val.rng, f.hintFor("name"), "name %s is not a domain name", quote(a.val.str))
		default:
			c.Name = n + "."
		}
	}
	c.Type = f.enum("type", dnsTypes, "A")
	c.Transport = Transport(f.enum("transport", []string{"udp", "tcp"}, "udp"))
	c.Rcode = f.enum("rcode", dnsRcodes, "NOERROR")
	if a, ok := f.get("answer", kString); ok {
		ip, err := netip.ParseAddr(a.val.str)
		switch {
		case a.val.str == "":
			d.errorf(a.val.rng, "remove answer to accept any answer", "answer is empty")
		case c.Type == "A" && (err != nil || !ip.Is4()):
			d.errorf(a.val.rng, `write an IPv4 address, such as answer = "192.0.2.80", or set type = "AAAA" for an IPv6 answer`, "answer %s is not an IPv4 address, as a type A answer is", quote(a.val.str))
		case c.Type == "AAAA" && (err != nil || !ip.Is6()):
			d.errorf(a.val.rng, `write an IPv6 address, such as answer = "2001:db8::80", or set type = "A" for an IPv4 answer`, "answer %s is not an IPv6 address, as a type AAAA answer is", quote(a.val.str))
		default:
			c.Answer = a.val.str
		}
	}
	return c
}

var wellKnownCommunities = map[string]Community{
	"graceful-shutdown":   0xFFFF0000,
	"blackhole":           0xFFFF029A,
	"no-export":           0xFFFFFF01,
	"no-advertise":        0xFFFFFF02,
	"no-export-subconfed": 0xFFFFFF03,
}

func parseCommunity(s string) (Community, bool) {
	if c, ok := wellKnownCommunities[s]; ok {
		return c, true
	}
	a, b, ok := strings.Cut(s, ":")
	if !ok {
		return 0, false
	}
	x, err1 := strconv.ParseUint(a, 10, 16)
	y, err2 := strconv.ParseUint(b, 10, 16)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return Community(x<<16 | y), true
}

func parseLargeCommunity(s string) (LargeCommunity, bool) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return LargeCommunity{}, false
	}
	var v [3]uint32
	for i, p := range parts {
		n, err := strconv.ParseUint(p, 10, 32)
		if err != nil {
			return LargeCommunity{}, false
		}
		v[i] = uint32(n)
	}
	return LargeCommunity{v[0], v[1], v[2]}, true
}

// decodeAnnounce decodes a service's announce block, or gives the defaults
// when bl is nil (no block).
func (d *decoder) decodeAnnounce(bl *block, fam Family, enabledReals int) Announce {
	b := &body{}
	if bl != nil {
		b = bl.body
	}
	f := d.open(b, announceSpec, "")
	a := Announce{Enabled: f.boolean("enabled", true)}
	def := Threshold{Value: 50, Percent: true}
	var minAttr, restAttr *attr
	a.MinHealthy, minAttr = f.threshold("min_healthy", def)
	a.RestoreHealthy, restAttr = f.threshold("restore_healthy", a.MinHealthy)
	d.checkCount(a.MinHealthy, minAttr, enabledReals)
	d.checkCount(a.RestoreHealthy, restAttr, enabledReals)
	if restAttr != nil {
		if a.RestoreHealthy.Percent != a.MinHealthy.Percent {
			d.errorf(restAttr.val.rng, "write both as counts or both as percentages", "restore_healthy %s and min_healthy %s are not comparable", a.RestoreHealthy, a.MinHealthy)
		} else if a.RestoreHealthy.Value < a.MinHealthy.Value {
			d.errorf(restAttr.val.rng, fmt.Sprintf("raise restore_healthy to at least %s, or leave it out (it defaults to min_healthy)", a.MinHealthy), "restore_healthy %s is below min_healthy %s", a.RestoreHealthy, a.MinHealthy)
		}
	}
	if db := f.blocksOf("degraded"); len(db) > 0 {
		g := d.open(db[0].body, degradedSpec, "")
		a.Degraded.Enabled = true
		var below *attr
		a.Degraded.Below, below = g.threshold("below", Threshold{})
		if below == nil {
			// null is "unset", and below has no default to fall back on.
			if at := g.attr("below"); at == nil || at.val.kind == kNull {
				d.errorf(db[0].defRange, `add below = "75%" (announce with worse attributes below this)`, "a degraded block needs below")
			}
		} else {
			d.checkCount(a.Degraded.Below, below, enabledReals)
			if a.Degraded.Below.Percent != a.MinHealthy.Percent {
				d.errorf(below.val.rng, "write below and min_healthy both as counts or both as percentages", "below %s and min_healthy %s are not comparable", a.Degraded.Below, a.MinHealthy)
			} else if a.Degraded.Below.Value <= a.MinHealthy.Value {
				d.errorf(below.val.rng, fmt.Sprintf("raise below above min_healthy %s", a.MinHealthy), "degraded below %s is not above min_healthy %s: it would never apply", a.Degraded.Below, a.MinHealthy)
			}
		}
		if g.has("med") {
			a.Degraded.MED, a.Degraded.HasMED = uint32(g.integer("med", 0, 1<<32-1, 0)), true
		}
		a.Degraded.Prepend = int(g.integer("prepend", 0, 32, 0))
		if !a.Degraded.HasMED && a.Degraded.Prepend == 0 {
			d.errorf(db[0].defRange, "add med = 200 or prepend = 2: how the route gets worse", "a degraded block needs med or prepend")
		}
	}
	if ip, at := f.addr("next_hop"); at != nil {
		if fam != "" && FamilyOf(ip) != fam {
			d.errorf(at.val.rng, fmt.Sprintf("use an %s next hop, or leave it out (self)", famName(fam)), "next_hop %s is not of the service's family %s", ip, fam)
		} else {
			a.NextHop = ip
		}
	}
	vals, _ := f.list("communities", kString, false)
	for _, v := range vals {
		c, ok := parseCommunity(v.str)
		if !ok {
			d.errorf(v.rng, `write communities as "asn:value" with both parts in 0..65535, such as "65010:100", or a well-known name ("no-export")`, "community %s is not valid", quote(v.str))
			continue
		}
		a.Communities = append(a.Communities, c)
	}
	slices.Sort(a.Communities)
	a.Communities = slices.Compact(a.Communities)
	vals, _ = f.list("large_communities", kString, false)
	for _, v := range vals {
		c, ok := parseLargeCommunity(v.str)
		if !ok {
			d.errorf(v.rng, `write large communities as "global:local1:local2", each part in 0..4294967295, such as "65010:1:2"`, "large community %s is not valid", quote(v.str))
			continue
		}
		a.LargeCommunities = append(a.LargeCommunities, c)
	}
	slices.SortFunc(a.LargeCommunities, func(x, y LargeCommunity) int {
		return strings.Compare(fmt.Sprintf("%010d%010d%010d", x.Global, x.Local1, x.Local2), fmt.Sprintf("%010d%010d%010d", y.Global, y.Local1, y.Local2))
	})
	a.LargeCommunities = slices.Compact(a.LargeCommunities)
	if f.has("med") {
		a.MED, a.HasMED = uint32(f.integer("med", 0, 1<<32-1, 0)), true
	}
	if f.has("local_pref") {
		a.LocalPref, a.HasLocalPref = uint32(f.integer("local_pref", 0, 1<<32-1, 0)), true
	}
	a.Prepend = int(f.integer("prepend", 0, 32, 0))
	return a
}

// checkCount reports a count threshold larger than the enabled reals.
func (d *decoder) checkCount(t Threshold, a *attr, enabled int) {
	if a == nil || t.Percent || int(t.Value) <= enabled {
		return
	}
	d.errorf(a.val.rng, fmt.Sprintf("lower it to at most %d, or use a percentage", enabled), "%s %s is more than the service's %d enabled reals: it could never be met", a.name, t, enabled)
}
