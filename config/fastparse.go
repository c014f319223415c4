package config

import (
	"math/big"
	"strconv"
	"unicode/utf8"

	"github.com/zclconf/go-cty/cty"
)

// fastParse parses the plain subset of HCL that configurations are written
// in (blocks, attributes, quoted strings without templates, numbers, bools,
// lists, objects, line comments; ASCII outside comments) straight into the
// decoder's tree. hclsyntax allocates a token slice and an AST several
// times the file's size, which made it 5x too slow for 10,000 services.
//
// It returns nil for anything outside the subset, and for anything invalid:
// the caller then parses the file with hclsyntax, so behaviour and error
// messages are HCL's. For input it accepts, the tree (values and ranges) is
// exactly what hclsyntax would give; FuzzLoad checks this.
func fastParse(src []byte) *body {
	if len(src) > 1<<30 {
		return nil
	}
	p := &fastParser{src: src, line: 1, lineStart: 0}
	b := &body{}
	if !p.body(b, false) || p.i != len(src) {
		return nil
	}
	return b
}

type fastParser struct {
	// Nodes are carved from slabs (see slabSize); the ints are each
	// kind's last slab length.
	slab        []attr
	blocks      []block
	bodies      []body
	labels      []string
	labelRanges []span
	ptrs        []*attr
	src         []byte
	i           int
	line        int
	lineStart   int // byte offset where the current line starts

	attrsN, blocksN, ptrsN int
}

// slabSize is the length of the next slab of a kind of node whose last
// slab was *last long: 16 at first, doubling up to 256. A file of one
// service (a common layout) allocates for about the nodes it has rather
// than 256 of each kind, which at 1,000 such files was 100 MB per load
// (BenchmarkLoadFiles); a large file still takes one allocation per 256.
func slabSize(last *int) int {
	switch {
	case *last == 0:
		*last = 16
	case *last < 256:
		*last *= 2
	}
	return *last
}

func (p *fastParser) pos() pos32 {
	return pos32{int32(p.line), int32(p.i - p.lineStart + 1), int32(p.i)}
}

func (p *fastParser) rangeFrom(start pos32) span {
	return span{start, p.pos()}
}

// space skips blanks (not newlines).
func (p *fastParser) space() {
	for p.i < len(p.src) && (p.src[p.i] == ' ' || p.src[p.i] == '\t') {
		p.i++
	}
}

// comment skips a line comment up to (not including) its newline; it
// reports false on a block comment, and on a comment that is not valid
// UTF-8 (hclsyntax's scanner may then read the newline as part of a
// character), which are left to hclsyntax.
func (p *fastParser) comment() bool {
	if p.i >= len(p.src) {
		return true
	}
	c := p.src[p.i]
	if c == '#' || c == '/' && p.i+1 < len(p.src) && p.src[p.i+1] == '/' {
		start, ascii := p.i, true
		for p.i < len(p.src) && p.src[p.i] != '\n' {
			ascii = ascii && p.src[p.i] < utf8.RuneSelf
			p.i++
		}
		return ascii || utf8.Valid(p.src[start:p.i])
	}
	return !(c == '/' && p.i+1 < len(p.src) && p.src[p.i+1] == '*')
}

func (p *fastParser) newline() {
	p.i++
	p.line++
	p.lineStart = p.i
}

// skipLines skips blanks, comments and newlines.
func (p *fastParser) skipLines() bool {
	for {
		p.space()
		if !p.comment() {
			return false
		}
		if p.i < len(p.src) && p.src[p.i] == '\n' {
			p.newline()
			continue
		}
		return true
	}
}

// endOfLine expects optional blanks and a comment, then a newline (eaten)
// or the end of input.
func (p *fastParser) endOfLine() bool {
	p.space()
	if !p.comment() {
		return false
	}
	if p.i == len(p.src) {
		return true
	}
	if p.src[p.i] == '\n' {
		p.newline()
		return true
	}
	return false
}

func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
func isDigit(c byte) bool  { return c >= '0' && c <= '9' }

func (p *fastParser) ident() (string, span, bool) {
	start := p.pos()
	if p.i >= len(p.src) || !isLetter(p.src[p.i]) {
		return "", span{}, false
	}
	for p.i < len(p.src) && (isLetter(p.src[p.i]) || isDigit(p.src[p.i]) || p.src[p.i] == '_' || p.src[p.i] == '-') {
		p.i++
	}
	word := p.src[start.byte:p.i]
	if s, ok := keywords[string(word)]; ok { // no allocation for the lookup
		return s, p.rangeFrom(start), true
	}
	return string(word), p.rangeFrom(start), true
}

// keywords holds every name of the schema, so parsing them allocates
// nothing.
var keywords = func() map[string]string {
	m := map[string]string{"true": "true", "false": "false", "null": "null"}
	var walk func(*blockSpec)
	walk = func(s *blockSpec) {
		m[s.typ] = s.typ
		for _, a := range s.attrs {
			m[a.name] = a.name
		}
		for _, c := range s.blocks {
			walk(c)
		}
	}
	walk(rootSpec)
	return m
}()

// body parses items up to a closing brace (inner) or the end of input.
func (p *fastParser) body(b *body, inner bool) bool {
	for {
		if !p.skipLines() {
			return false
		}
		if p.i == len(p.src) {
			return !inner
		}
		if p.src[p.i] == '}' {
			return inner
		}
		name, nameRange, ok := p.ident()
		if !ok {
			return false
		}
		p.space()
		if p.i < len(p.src) && p.src[p.i] == '=' {
			for _, a := range b.attrs {
				if a.name == name {
					return false // "Attribute redefined": hclsyntax says it
				}
			}
			a, ok := p.attribute(name, nameRange)
			if !ok || !p.endOfLine() {
				return false
			}
			b.attrs = append(b.attrs, a)
			continue
		}
		bl, ok := p.block(name, nameRange)
		if !ok {
			return false
		}
		b.blocks = append(b.blocks, bl)
	}
}

func (p *fastParser) attribute(name string, nameRange span) (*attr, bool) {
	p.i++ // =
	p.space()
	v, ok := p.value()
	if !ok {
		return nil, false
	}
	if len(p.slab) == 0 {
		p.slab = make([]attr, slabSize(&p.attrsN))
	}
	a := &p.slab[0]
	p.slab = p.slab[1:]
	*a = attr{name: name, nameRange: nameRange, val: v}
	return a, true
}

func (p *fastParser) block(typ string, typeRange span) (*block, bool) {
	if len(p.blocks) == 0 {
		n := slabSize(&p.blocksN)
		p.blocks = make([]block, n)
		p.bodies = make([]body, n)
		p.labels = make([]string, n)
		p.labelRanges = make([]span, n)
	}
	bl := &p.blocks[0]
	*bl = block{typ: typ, typeRange: typeRange, body: &p.bodies[0], labels: p.labels[0:0:1], labelRanges: p.labelRanges[0:0:1]}
	p.blocks, p.bodies, p.labels, p.labelRanges = p.blocks[1:], p.bodies[1:], p.labels[1:], p.labelRanges[1:]
	for {
		p.space()
		if p.i >= len(p.src) {
			return nil, false
		}
		c := p.src[p.i]
		if c == '{' {
			break
		}
		var label string
		var rng span
		var ok bool
		if c == '"' {
			var v value
			v, ok = p.str()
			label, rng = v.str, v.rng
		} else {
			label, rng, ok = p.ident()
		}
		if !ok {
			return nil, false
		}
		bl.labels = append(bl.labels, label)
		bl.labelRanges = append(bl.labelRanges, rng)
	}
	open := p.pos()
	p.i++
	bl.defRange = spanBetween(typeRange, p.rangeFrom(open))
	p.space()
	if p.i < len(p.src) && p.src[p.i] != '\n' && p.src[p.i] != '#' && p.src[p.i] != '/' {
		// Single-line block: {} or { name = value }.
		if p.src[p.i] != '}' {
			name, nameRange, ok := p.ident()
			if !ok {
				return nil, false
			}
			p.space()
			if p.i >= len(p.src) || p.src[p.i] != '=' {
				return nil, false
			}
			a, ok := p.attribute(name, nameRange)
			if !ok {
				return nil, false
			}
			if len(p.ptrs) == 0 {
				p.ptrs = make([]*attr, slabSize(&p.ptrsN))
			}
			bl.body.attrs = p.ptrs[0:1:1]
			p.ptrs = p.ptrs[1:]
			bl.body.attrs[0] = a
			p.space()
			if p.i >= len(p.src) || p.src[p.i] != '}' {
				return nil, false
			}
		}
		p.i++
		return bl, p.endOfLine()
	}
	if !p.endOfLine() {
		return nil, false
	}
	if !p.body(bl.body, true) {
		return nil, false
	}
	p.i++ // }
	return bl, p.endOfLine()
}

// value parses a literal: string, number, bool, null, list or object.
func (p *fastParser) value() (value, bool) {
	if p.i >= len(p.src) {
		return value{}, false
	}
	start := p.pos()
	c := p.src[p.i]
	switch {
	case c == '"':
		return p.str()
	case isDigit(c) || c == '-' && p.i+1 < len(p.src) && isDigit(p.src[p.i+1]):
		return p.number()
	case c == '[':
		return p.list()
	case c == '{':
		return p.object()
	case isLetter(c):
		word, rng, _ := p.ident()
		switch word {
		case "true", "false":
			return value{kind: kBool, bool: word == "true", rng: rng}, true
		case "null":
			return value{kind: kNull, rng: rng}, true
		}
	}
	_ = start
	return value{}, false
}

func (p *fastParser) str() (value, bool) {
	start := p.pos()
	p.i++ // "
	from := p.i
	plain := true
	for ; p.i < len(p.src); p.i++ {
		c := p.src[p.i]
		switch {
		case c == '"':
			s := string(p.src[from:p.i])
			if !plain {
				var ok bool
				if s, ok = unescape(p.src[from:p.i]); !ok {
					return value{}, false
				}
			}
			p.i++
			return value{kind: kString, str: s, rng: p.rangeFrom(start)}, true
		case c == '\\':
			plain = false
			p.i++
		case c >= 0x80 || c < 0x20:
			return value{}, false
		case (c == '$' || c == '%') && p.i+1 < len(p.src) && p.src[p.i+1] == '{':
			return value{}, false // a template: hclsyntax evaluates it
		}
	}
	return value{}, false
}

func unescape(b []byte) (string, bool) {
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		if b[i] != '\\' {
			out = append(out, b[i])
			continue
		}
		i++
		if i >= len(b) {
			return "", false
		}
		switch b[i] {
		case 'n':
			out = append(out, '\n')
		case 't':
			out = append(out, '\t')
		case 'r':
			out = append(out, '\r')
		case '"':
			out = append(out, '"')
		case '\\':
			out = append(out, '\\')
		default:
			return "", false
		}
	}
	return string(out), true
}

func (p *fastParser) number() (value, bool) {
	start := p.pos()
	from := p.i
	if p.src[p.i] == '-' {
		p.i++
	}
	digits := p.i
	for p.i < len(p.src) && isDigit(p.src[p.i]) {
		p.i++
	}
	simple := p.i-digits <= 15
	if p.i < len(p.src) && (p.src[p.i] == '.' || p.src[p.i] == 'e' || p.src[p.i] == 'E') {
		return value{}, false // fractions and exponents: leave to hclsyntax
	}
	if p.i < len(p.src) && (isLetter(p.src[p.i]) || p.src[p.i] == '_') {
		return value{}, false
	}
	text := string(p.src[from:p.i])
	v := value{kind: kNumber, rng: p.rangeFrom(start), exact: true}
	if simple {
		n, err := strconv.ParseInt(text, 10, 64)
		if err != nil {
			return value{}, false
		}
		v.num = float64(n)
		return v, true
	}
	nv, err := cty.ParseNumberVal(text)
	if err != nil {
		return value{}, false
	}
	f, acc := nv.AsBigFloat().Float64()
	v.num, v.exact = f, acc == big.Exact
	return v, true
}

// list parses [a, b, ...]; newlines and comments may separate items.
func (p *fastParser) list() (value, bool) {
	start := p.pos()
	p.i++
	v := value{kind: kList}
	for {
		if !p.skipLines() || p.i >= len(p.src) {
			return value{}, false
		}
		if p.src[p.i] == ']' {
			p.i++
			v.rng = p.rangeFrom(start)
			return v, true
		}
		el, ok := p.value()
		if !ok {
			return value{}, false
		}
		v.add("", el)
		if !p.skipLines() || p.i >= len(p.src) {
			return value{}, false
		}
		switch p.src[p.i] {
		case ',':
			p.i++
		case ']':
		default:
			return value{}, false
		}
	}
}

// object parses { key = value, ... } with string or bare-word keys,
// separated by commas or newlines.
func (p *fastParser) object() (value, bool) {
	start := p.pos()
	p.i++
	v := value{kind: kObject}
	for {
		if !p.skipLines() || p.i >= len(p.src) {
			return value{}, false
		}
		if p.src[p.i] == '}' {
			p.i++
			v.rng = p.rangeFrom(start)
			return v, true
		}
		var key string
		if p.src[p.i] == '"' {
			k, ok := p.str()
			if !ok {
				return value{}, false
			}
			key = k.str
		} else {
			k, _, ok := p.ident()
			if !ok || k == "true" || k == "false" || k == "null" {
				return value{}, false
			}
			key = k
		}
		p.space()
		if p.i >= len(p.src) || p.src[p.i] != '=' && p.src[p.i] != ':' {
			return value{}, false
		}
		p.i++
		p.space()
		el, ok := p.value()
		if !ok {
			return value{}, false
		}
		v.add(key, el)
		p.space()
		if !p.comment() || p.i >= len(p.src) {
			return value{}, false
		}
		switch p.src[p.i] {
		case ',', '\n':
			if p.src[p.i] == '\n' {
				p.newline()
			} else {
				p.i++
			}
		case '}':
		default:
			return value{}, false
		}
	}
}
