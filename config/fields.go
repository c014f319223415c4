package config

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
)

// diag is a diagnostic before it is resolved against the sources.
type diag struct {
	sev     Severity
	rng     hcl.Range
	summary string
	detail  string
	hint    string
}

type decoder struct {
	file  string // the file being decoded: spans are in it
	diags []diag
	slab  []fields // fields are carved from here (see slabSize)
	slabN int      // the last slab's length
}

func (d *decoder) errorf(rng span, hint, format string, args ...any) {
	d.diags = append(d.diags, diag{sev: SeverityError, rng: rng.full(d.file), summary: fmt.Sprintf(format, args...), hint: hint})
}

// errorAlso is an error that cites an earlier place in the same file.
func (d *decoder) errorAlso(rng, first span, hint, format string, args ...any) {
	d.errorAt(d.full(rng), d.full(first), hint, format, args...)
}

// errorAt is an error at a range of any file; first, when set, is cited.
func (d *decoder) errorAt(rng, first hcl.Range, hint, format string, args ...any) {
	dg := diag{sev: SeverityError, rng: rng, summary: fmt.Sprintf(format, args...), hint: hint}
	if first.Filename != "" {
		dg.detail = "first defined at " + posString(first)
	}
	d.diags = append(d.diags, dg)
}

func (d *decoder) full(s span) hcl.Range { return s.full(d.file) }

func posString(r hcl.Range) string {
	return fmt.Sprintf("%s:%d:%d", r.Filename, r.Start.Line, r.Start.Column)
}

// source is "file.hcl:12" for logs.
func (d *decoder) source(r span) string {
	base := d.file
	if i := strings.LastIndexByte(base, '/'); i >= 0 {
		base = base[i+1:]
	}
	var buf [24]byte
	return base + ":" + string(strconv.AppendInt(buf[:0], int64(r.start.line), 10))
}

// fields is one block body checked against its spec: its known attributes
// and its child blocks by type.
type fields struct {
	d      *decoder
	spec   *blockSpec
	label  string
	attrs  []*attr    // known attributes; nil entries were dropped
	blocks [][]*block // child blocks, by the index of their spec in spec.blocks; nil when none
}

// blocksOf returns the child blocks of type typ.
func (f *fields) blocksOf(typ string) []*block {
	if i := f.spec.childIndex(typ); i >= 0 && f.blocks != nil {
		return f.blocks[i]
	}
	return nil
}

// what names the block for messages: `service "web"`, `bgp block`.
func (f *fields) what() string {
	switch {
	case f.spec.label != "":
		return f.spec.typ + " " + strconv.Quote(f.label)
	case f.spec == bgpSpec:
		return "bgp block"
	}
	return f.spec.typ
}

// attr returns the attribute name, or nil. Bodies are small: a scan beats
// a map here.
func (f *fields) attr(name string) *attr {
	for _, a := range f.attrs {
		if a != nil && a.name == name {
			return a
		}
	}
	return nil
}

// open checks a body against spec: unknown attributes and block types, and
// repeated single blocks, are reported here. label is the block's label.
func (d *decoder) open(b *body, spec *blockSpec, label string) *fields {
	if len(d.slab) == 0 {
		d.slab = make([]fields, slabSize(&d.slabN))
	}
	f := &d.slab[0]
	d.slab = d.slab[1:]
	*f = fields{d: d, spec: spec, label: label, attrs: b.attrs}
	for i, a := range b.attrs {
		if _, ok := spec.attr(a.name); !ok {
			if f.attrs == nil || &f.attrs[0] == &b.attrs[0] {
				f.attrs = slices.Clone(b.attrs)
			}
			d.unknownAttr(a, spec, label, f.what())
			f.attrs[i] = nil
		}
	}
	// Group the child blocks by type, the groups carved from one array.
	if len(b.blocks) > 0 && len(spec.blocks) > 0 {
		counts := make([]int, len(spec.blocks))
		for _, bl := range b.blocks {
			if i := spec.childIndex(bl.typ); i >= 0 {
				counts[i]++
			}
		}
		f.blocks = make([][]*block, len(spec.blocks))
		backing := make([]*block, 0, len(b.blocks))
		for i, n := range counts {
			f.blocks[i] = backing[len(backing) : len(backing) : len(backing)+n]
			backing = backing[:len(backing)+n]
		}
	}
	for _, bl := range b.blocks {
		ci := spec.childIndex(bl.typ)
		if ci < 0 {
			d.unknownBlock(bl, spec, f.what())
			continue
		}
		cs := spec.blocks[ci]
		if cs.single && len(f.blocks[ci]) > 0 && spec != rootSpec {
			d.errorAlso(bl.typeRange, f.blocks[ci][0].typeRange, "merge the two "+bl.typ+" blocks into one", "%s has more than one %s block", f.what(), bl.typ)
			continue
		}
		if !d.checkLabels(bl, cs) {
			continue
		}
		f.blocks[ci] = append(f.blocks[ci], bl)
	}
	return f
}

func (d *decoder) checkLabels(bl *block, cs *blockSpec) bool {
	want := 0
	if cs.label != "" {
		want = 1
	}
	if len(bl.labels) == want {
		return true
	}
	if want == 0 {
		d.errorf(bl.labelRanges[0], fmt.Sprintf("write %s { ... }", bl.typ), "a %s block takes no label", bl.typ)
		return false
	}
	rng := bl.typeRange
	if len(bl.labels) > 1 {
		rng = bl.labelRanges[1]
	}
	ex := map[string]string{"service": `service "web" { ... }`, "real": `real "10.1.0.11" { ... }, or with a port, real "10.1.0.11:8080" { ... }`, "check": `check "http" { ... }`, "neighbor": `neighbor "tor-a" { ... }`}[bl.typ]
	d.errorf(rng, "write "+ex, "a %s block needs exactly one label, its %s", bl.typ, cs.label)
	return false
}

// unknownAttr reports an attribute that spec does not have. A check's
// hint names only the attributes of its type: the others would be refused
// too.
func (d *decoder) unknownAttr(a *attr, spec *blockSpec, label, what string) {
	names := make([]string, 0, len(spec.attrs))
	for _, s := range spec.attrs {
		if s.name == "password" {
			continue
		}
		if spec == checkSpec && !slices.Contains(checkCommon, s.name) && !slices.Contains(checkTypeAttrs[CheckType(label)], s.name) {
			continue
		}
		names = append(names, s.name)
	}
	hint := "valid attributes here: " + strings.Join(names, ", ")
	if len(names) == 0 {
		hint = "this block has no attributes"
	}
	if s := suggest(a.name, names); s != "" {
		hint = fmt.Sprintf("did you mean %q?", s)
	}
	where := "in " + what
	if spec == rootSpec {
		where = "at the top level"
		hint = "attributes go inside a daemon, bgp or service block"
	}
	d.errorf(a.nameRange, hint, "unknown attribute %q %s", a.name, where)
}

func (d *decoder) unknownBlock(bl *block, spec *blockSpec, what string) {
	names := make([]string, 0, len(spec.blocks))
	for _, s := range spec.blocks {
		names = append(names, s.typ)
	}
	hint := "this block takes no blocks"
	if len(names) > 0 {
		hint = "valid blocks here: " + strings.Join(names, ", ")
	}
	if s := suggest(bl.typ, names); s != "" {
		hint = fmt.Sprintf("did you mean %q?", s)
	}
	where := "in " + what
	if spec == rootSpec {
		where = "at the top level"
	}
	if _, isAttr := spec.attr(bl.typ); isAttr {
		hint = fmt.Sprintf("%s is an attribute: write %s = ...", bl.typ, bl.typ)
	}
	d.errorf(bl.typeRange, hint, "unknown block type %q %s", bl.typ, where)
}

// suggest returns the candidate closest to s when it is close enough.
func suggest(s string, candidates []string) string {
	best, bestD := "", 3
	for _, c := range candidates {
		if dist := levenshtein(s, c); dist < bestD {
			best, bestD = c, dist
		}
	}
	return best
}

func levenshtein(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 99
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := 1
			if a[i-1] == b[j-1] {
				c = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+c)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// hintFor is "write name = example".
func (f *fields) hintFor(name string) string {
	s, _ := f.spec.attr(name)
	return fmt.Sprintf("write %s = %s", name, s.example)
}

func (f *fields) has(name string) bool { return f.attr(name) != nil }

// get returns the attribute when set, and whether it has the wanted kind;
// a wrong kind is reported.
func (f *fields) get(name string, want kind) (*attr, bool) {
	a := f.attr(name)
	if a == nil {
		return nil, false
	}
	if a.val.kind != want {
		if a.val.kind != kNull {
			hint := f.hintFor(name)
			if a.val.kind == kString && (want == kNumber || want == kBool) {
				if _, err := strconv.ParseFloat(a.val.str, 64); err == nil || a.val.str == "true" || a.val.str == "false" {
					hint = fmt.Sprintf("write %s = %s, without quotes", name, a.val.str)
				}
			}
			f.d.errorf(a.val.rng, hint, "%s must be %s, not %s", name, want, a.val.describe())
		}
		return a, false
	}
	return a, true
}

func (f *fields) str(name, def string) string {
	a, ok := f.get(name, kString)
	if !ok {
		return def
	}
	return a.val.str
}

func (f *fields) boolean(name string, def bool) bool {
	a, ok := f.get(name, kBool)
	if !ok {
		return def
	}
	return a.val.bool
}

// integer reads a whole number in [lo, hi].
func (f *fields) integer(name string, lo, hi int64, def int64) int64 {
	a, ok := f.get(name, kNumber)
	if !ok {
		return def
	}
	v, ok := f.d.intValue(a.val, name, lo, hi, func() string { return f.hintFor(name) })
	if !ok {
		return def
	}
	return v
}

func (d *decoder) intValue(v value, name string, lo, hi int64, hint func() string) (int64, bool) {
	if math.IsInf(v.num, 0) || v.num < float64(lo) || v.num > float64(hi) {
		d.errorf(v.rng, hint(), "%s %s is out of range %d..%d", name, formatNum(v.num), lo, hi)
		return 0, false
	}
	if !v.exact || v.num != math.Trunc(v.num) {
		d.errorf(v.rng, hint(), "%s must be a whole number", name)
		return 0, false
	}
	return int64(v.num), true
}

// mark reads an fwmark-like number, given as a number or a "0x..." string.
func (f *fields) mark(name string, lo, hi int64, def int64) int64 {
	a := f.attr(name)
	if a != nil && a.val.kind == kString {
		s := a.val.str
		if !strings.HasPrefix(s, "0x") && !strings.HasPrefix(s, "0X") {
			hint := f.hintFor(name) + ` or a hex string such as "0x10000"`
			if n, err := strconv.ParseUint(s, 10, 64); err == nil {
				hint = fmt.Sprintf(`write %s = %s, without quotes, or the hex string "0x%x"`, name, s, n)
			}
			f.d.errorf(a.val.rng, hint, "%s must be a number or a hex string, not %s", name, a.val.describe())
			return def
		}
		u, err := strconv.ParseUint(s[2:], 16, 64)
		if err != nil || int64(u) < lo || int64(u) > hi || u > math.MaxInt64 {
			f.d.errorf(a.val.rng, fmt.Sprintf("write a hex number in 0x%x..0x%x", lo, hi), "%s %s is not a hex number in range", name, quote(s))
			return def
		}
		return int64(u)
	}
	return f.integer(name, lo, hi, def)
}

func (f *fields) port(name string, def uint16) uint16 {
	return uint16(f.integer(name, 1, 65535, int64(def)))
}

// duration reads a Go duration string ("5s", "1m30s", "250ms") >= lo.
func (f *fields) duration(name string, def, lo time.Duration) time.Duration {
	a, ok := f.get(name, kString)
	if !ok {
		if a != nil && a.val.kind == kNumber {
			// Already reported; say the fix concretely.
			f.d.diags[len(f.d.diags)-1].hint = fmt.Sprintf("durations are strings with a unit: write %s = \"%ss\"", name, strconv.FormatFloat(a.val.num, 'f', -1, 64))
		}
		return def
	}
	v, err := time.ParseDuration(a.val.str)
	if err != nil {
		f.d.errorf(a.val.rng, f.hintFor(name)+` (units: ms, s, m, h)`, "%s %s is not a duration", name, quote(a.val.str))
		return def
	}
	if v < lo {
		f.d.errorf(a.val.rng, f.hintFor(name), "%s must be at least %s", name, lo)
		return def
	}
	return v
}

// enum reads one of allowed.
func (f *fields) enum(name string, allowed []string, def string) string {
	a, ok := f.get(name, kString)
	if !ok {
		return def
	}
	if slices.Contains(allowed, a.val.str) {
		return a.val.str
	}
	hint := "write one of: " + quoteAll(allowed)
	if low := strings.ToLower(a.val.str); slices.Contains(allowed, low) {
		hint = fmt.Sprintf("write %s = %q (lower case)", name, low)
	} else if s := suggest(low, allowed); s != "" {
		hint = fmt.Sprintf("did you mean %q? (one of: %s)", s, quoteAll(allowed))
	}
	f.d.errorf(a.val.rng, hint, "%s %s is not valid", name, quote(a.val.str))
	return def
}

func quoteAll(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, ", ")
}

// addr reads an IP address (no zone).
func (f *fields) addr(name string) (netip.Addr, *attr) {
	a, ok := f.get(name, kString)
	if !ok {
		return netip.Addr{}, nil
	}
	ip, ok := f.d.parseAddr(a.val, name, func() string { return f.hintFor(name) })
	if !ok {
		return netip.Addr{}, nil
	}
	return ip, a
}

func (d *decoder) parseAddr(v value, name string, hint func() string) (netip.Addr, bool) {
	ip, err := netip.ParseAddr(v.str)
	if err != nil || ip.Zone() != "" {
		d.errorf(v.rng, hint(), "%s %s is not an IP address", name, quote(v.str))
		return netip.Addr{}, false
	}
	return ip, d.usableAddr(v.rng, name, ip, hint)
}

// usableAddr reports whether ip can work as the address of a VIP, a real,
// a BGP peer or next hop, or a probe's source, reporting it when not. The
// kinds refused are those no packet to or from a peer can use: the
// unspecified address, loopback (it never leaves the host), multicast and
// the broadcast address (no TCP to or from them), link-local (it needs an
// interface, which these attributes do not take) and IPv4-mapped IPv6
// (IPVS and the kernel's routes want the IPv4 address itself).
func (d *decoder) usableAddr(rng span, name string, ip netip.Addr, hint func() string) bool {
	var what, why string
	switch {
	case ip.Is4In6():
		hint := fmt.Sprintf("write %s = %q", name, ip.Unmap())
		if name == "real" {
			hint = fmt.Sprintf("write real %q", ip.Unmap())
		}
		d.errorf(rng, hint, "%s %s is an IPv4-mapped IPv6 address", name, ip)
		return false
	case ip.IsUnspecified():
		what, why = "the unspecified address", "it names no host"
	case ip.IsLoopback():
		what, why = "a loopback address", "traffic to it never leaves this host"
	case ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		what, why = "the broadcast address", "it names every host of a link, and carries no TCP"
	case ip.IsMulticast():
		what, why = "a multicast address", "it names a group, not a host, and carries no TCP"
	case ip.IsLinkLocalUnicast():
		what, why = "a link-local address", "it is only meaningful with an interface, which this attribute does not take"
	default:
		return true
	}
	d.errorf(rng, why+": "+hint(), "%s %s is %s", name, ip, what)
	return false
}

// list reads a list whose items are all of kind want (a single item is
// accepted as a list of one when single is set).
func (f *fields) list(name string, want kind, single bool) ([]value, *attr) {
	a := f.attr(name)
	if a == nil {
		return nil, nil
	}
	if single && a.val.kind == want {
		return []value{a.val}, a
	}
	if a.val.kind != kList {
		if a.val.kind != kNull {
			f.d.errorf(a.val.rng, f.hintFor(name), "%s must be a list, not %s", name, a.val.describe())
		}
		return nil, nil
	}
	out := make([]value, 0, len(a.val.elems()))
	for _, el := range a.val.elems() {
		if el.kind != want && !(want == kString && el.kind == kNumber && name == "status") {
			f.d.errorf(el.rng, f.hintFor(name), "each item of %s must be %s, not %s", name, want, el.describe())
			continue
		}
		out = append(out, el)
	}
	return out, a
}

// percent parses "50%" into 50.
func parsePercent(s string) (float64, bool) {
	t, ok := strings.CutSuffix(strings.TrimSpace(s), "%")
	if !ok {
		return 0, false
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(t), 64)
	if err != nil || v < 0 || v > 100 || math.IsNaN(v) {
		return 0, false
	}
	return v, true
}

// threshold reads a count (a number, or a string of digits) or a
// percentage ("50%").
func (f *fields) threshold(name string, def Threshold) (Threshold, *attr) {
	a := f.attr(name)
	if a == nil {
		return def, nil
	}
	hint := func() string {
		return fmt.Sprintf(`write a count of reals (%s = 2) or a percentage of enabled reals (%s = "50%%")`, name, name)
	}
	switch a.val.kind {
	case kNumber:
		n, ok := f.d.intValue(a.val, name, 0, 1<<20, hint)
		if !ok {
			return def, nil
		}
		return Threshold{Value: float64(n)}, a
	case kString:
		if p, ok := parsePercent(a.val.str); ok {
			return Threshold{Value: p, Percent: true}, a
		}
		if n, err := strconv.ParseUint(a.val.str, 10, 20); err == nil {
			return Threshold{Value: float64(n)}, a
		}
		f.d.errorf(a.val.rng, hint(), "%s %s is neither a count nor a percentage between 0%% and 100%%", name, quote(a.val.str))
		return def, nil
	case kNull:
		return def, nil
	}
	f.d.errorf(a.val.rng, hint(), "%s must be a count or a percentage, not %s", name, a.val.describe())
	return def, nil
}
