package config

import (
	"bytes"
	"fmt"
	"unicode/utf8"

	"github.com/hashicorp/hcl/v2"
)

// The limits every file is held to before any parser sees it. Both parsers
// (fastParse and hclsyntax) descend recursively, one Go call per level of
// nesting: 100,000 nested parentheses overflowed the stack of the daemon,
// kglb validate and kglb fmt alike. A configuration needs a handful of
// levels (service, health, http, headers); the limits are far above what a
// real file uses and far below what costs memory or time.
const (
	// MaxFileSize bounds one configuration file; a larger one is refused.
	MaxFileSize = 64 << 20
	// MaxNesting bounds how deeply blocks, lists, objects, parentheses,
	// strings and templates nest, counting each operator (!, -, ?) that
	// the parser would descend into as a level too.
	MaxNesting = 32
	// MaxLineLength bounds one line, in bytes.
	MaxLineLength = 8 << 10
	// MaxStringLength bounds one string or heredoc value, in bytes as
	// written.
	MaxStringLength = 4 << 10
)

// scanLimits checks src against the limits above, and that no number is
// written with a leading zero, in one pass that keeps no more than
// MaxNesting levels of state, whatever the input. It is the gate in front
// of both parsers (see decodeFile and Format): a file it reports a problem
// for is not parsed. It follows just enough of HCL's
// lexical structure (strings, templates, heredocs, comments) to tell code
// from text; anything it misreads is still parsed, and reported, by the
// parsers, which only ever see input of bounded depth.
func scanLimits(name string, src []byte) hcl.Diagnostics {
	s := scanner{src: src, line: 1}
	if len(src) > MaxFileSize {
		return s.fail(0, fmt.Sprintf("file of %d bytes is larger than the limit of %d MiB", len(src), MaxFileSize>>20), "split the configuration over several files of the directory", name)
	}
	for start := 0; start < len(src); {
		n := bytes.IndexByte(src[start:], '\n')
		if n < 0 {
			n = len(src) - start
		}
		if n > MaxLineLength {
			s.lineStart = start
			at := start + MaxLineLength
			for at > start && !utf8.RuneStart(src[at]) {
				at--
			}
			return s.fail(at, fmt.Sprintf("line of %d bytes is longer than the limit of %d bytes", n, MaxLineLength), "break the line: one attribute per line, and long lists over several lines", name)
		}
		start += n + 1
		s.line++
	}
	s.line = 1
	return s.run(name)
}

type scanner struct {
	src       []byte
	i         int
	line      int
	lineStart int
	// stack holds the open levels: '{', '[', '(', 't' (a template's ${ or
	// %{), '"' (a quoted string), 'h' (a heredoc, ending at marker) and
	// 'o' (a prefix operator, ending with the item it applies to).
	stack   []byte
	markers [][]byte // of the open heredocs, innermost last
	// strStart is where the string or heredoc text being read started,
	// and strOpen the position of its opening quote or <<.
	strStart int
	strOpen  rawPos
}

// rawPos is a position before its column is counted: the scan counts
// columns only for the one position it reports.
type rawPos struct{ line, lineStart, i int }

func (s *scanner) raw(i int) rawPos { return rawPos{s.line, s.lineStart, i} }

func (s *scanner) pos(i int) hcl.Pos {
	col := 1 + utf8.RuneCount(s.src[s.lineStart:i])
	return hcl.Pos{Line: s.line, Column: col, Byte: i}
}

// hintText is a hint carried in an hcl.Diagnostic's Extra, for the
// problems kglb itself reports in HCL's form (see fromHCL).
type hintText string

func (s *scanner) fail(i int, summary, hint, name string) hcl.Diagnostics {
	return s.failAt(s.raw(i), summary, hint, name)
}

func (s *scanner) failAt(at rawPos, summary, hint, name string) hcl.Diagnostics {
	s.line, s.lineStart = at.line, at.lineStart
	i := at.i
	p := s.pos(i)
	end := p
	if i < len(s.src) {
		end = hcl.Pos{Line: p.Line, Column: p.Column + 1, Byte: i + 1}
	}
	return hcl.Diagnostics{{Severity: hcl.DiagError, Summary: summary, Subject: &hcl.Range{Filename: name, Start: p, End: end}, Extra: hintText(hint)}}
}

// top is the innermost level that is not an operator, or 0.
func (s *scanner) top() byte {
	for k := len(s.stack) - 1; k >= 0; k-- {
		if s.stack[k] != 'o' {
			return s.stack[k]
		}
	}
	return 0
}

// popOps ends the operators that apply to the item just ended.
func (s *scanner) popOps() {
	for len(s.stack) > 0 && s.stack[len(s.stack)-1] == 'o' {
		s.stack = s.stack[:len(s.stack)-1]
	}
}

// pop closes the innermost level of one of the kinds, with the operators
// above it.
func (s *scanner) pop(kinds string) {
	s.popOps()
	if n := len(s.stack); n > 0 {
		for k := 0; k < len(kinds); k++ {
			if s.stack[n-1] == kinds[k] {
				s.stack = s.stack[:n-1]
				s.popOps()
				return
			}
		}
	}
}

func isIdentByte(c byte) bool { return isLetter(c) || isDigit(c) || c == '_' || c == '-' }

// run scans src from s.i: newlines, and between them stretches of code and
// of text (in strings and heredocs), each scanned in one call that ends at
// a newline or where the other begins. The first problem ends the scan.
func (s *scanner) run(name string) hcl.Diagnostics {
	for s.i < len(s.src) {
		if s.src[s.i] == '\n' {
			s.newline()
			continue
		}
		var diags hcl.Diagnostics
		if top := s.top(); top == '"' || top == 'h' {
			diags = s.text(name, top)
		} else {
			diags = s.code(name)
		}
		if diags != nil {
			return diags
		}
	}
	return nil
}

// newline steps over a newline, which ends an unterminated string (HCL
// ends it there too), the operators of an attribute, and a heredoc whose
// marker is the next line.
func (s *scanner) newline() {
	switch s.top() {
	case '"':
		s.pop(`"`)
	case 0, '{':
		s.popOps()
	}
	s.i++
	s.line, s.lineStart = s.line+1, s.i
	if s.top() == 'h' && s.heredocEnds() {
		s.pop("h")
		s.markers = s.markers[:len(s.markers)-1]
	}
}

// text scans the text of a string (top '"') or heredoc ('h') up to a
// newline, its closing quote or a template's ${ or %{. Plain text, the
// bulk of a string, goes in one step.
func (s *scanner) text(name string, top byte) hcl.Diagnostics {
	src := s.src
	for s.i < len(src) && src[s.i] != '\n' {
		i := s.i
		j := i
		for j < len(src) && !textSpecial[src[j]] {
			j++
		}
		if j > i {
			if j-s.strStart > MaxStringLength {
				return s.stringTooLong(name)
			}
			s.i = j
			continue
		}
		switch c := src[i]; {
		case c == '\\' && top == '"':
			s.i++
			if s.i < len(src) && src[s.i] != '\n' { // a newline ends the string all the same
				s.i++
			}
			continue
		case (c == '$' || c == '%') && i+1 < len(src) && src[i+1] == c:
			s.i += 2 // $$ and %% escape a template
			continue
		case (c == '$' || c == '%') && i+1 < len(src) && src[i+1] == '{':
			if !s.push('t') {
				return s.tooDeep(i, name)
			}
			s.i += 2
			return nil
		case c == '"' && top == '"':
			s.pop(`"`)
			s.i++
			return nil
		}
		if i-s.strStart >= MaxStringLength {
			return s.stringTooLong(name)
		}
		s.i++
	}
	return nil
}

// code scans code up to a newline, a string or heredoc, or a } (which may
// end a template): top level, a block body, a list, an object,
// parentheses or a template's expression. Names, spaces and = go in one
// step.
func (s *scanner) code(name string) hcl.Diagnostics {
	src := s.src
	for s.i < len(src) && src[s.i] != '\n' {
		i := s.i
		c := src[i]
		if !codeSpecial[c] {
			j := i + 1
			for j < len(src) && !codeSpecial[src[j]] {
				j++
			}
			s.i = j
			continue
		}
		switch {
		case c == '#' || c == '/' && i+1 < len(src) && src[i+1] == '/':
			s.lineComment()
			continue
		case c == '/' && i+1 < len(src) && src[i+1] == '*':
			s.blockComment()
			continue
		case c == '{' || c == '[' || c == '(':
			if !s.push(c) {
				return s.tooDeep(i, name)
			}
		case c == '}':
			s.pop("{t")
			s.i++
			return nil
		case c == ']':
			s.pop("[")
		case c == ')':
			s.pop("(")
		case c == ',':
			s.popOps()
		case c == '!' || c == '-' || c == '?':
			if !s.push('o') {
				return s.tooDeep(i, name)
			}
		case c == '"':
			if !s.push('"') {
				return s.tooDeep(i, name)
			}
			s.strStart, s.strOpen = i+1, s.raw(i)
			s.i++
			return nil
		case c == '<' && i+1 < len(src) && src[i+1] == '<':
			if diags := s.heredoc(name); diags != nil {
				return diags
			}
			continue
		case isDigit(c) && numberStart(src, i):
			if diags := s.number(name); diags != nil {
				return diags
			}
			continue
		}
		s.i++
	}
	return nil
}

// push opens a level of kind k; false when MaxNesting are open.
func (s *scanner) push(k byte) bool {
	if len(s.stack) >= MaxNesting {
		return false
	}
	s.stack = append(s.stack, k)
	return true
}

func (s *scanner) tooDeep(i int, name string) hcl.Diagnostics {
	return s.fail(i, fmt.Sprintf("nesting deeper than the limit of %d levels", MaxNesting), "write literal values: a configuration's blocks, lists and objects nest a few levels deep (see docs/config.md)", name)
}

func (s *scanner) stringTooLong(name string) hcl.Diagnostics {
	return s.failAt(s.strOpen, fmt.Sprintf("string longer than the limit of %d bytes", MaxStringLength), "shorten the value: no attribute takes text this long", name)
}

// lineComment steps to the end of a # or // comment.
func (s *scanner) lineComment() {
	for s.i < len(s.src) && s.src[s.i] != '\n' {
		s.i++
	}
}

// blockComment steps over a /* */ comment, counting its lines.
func (s *scanner) blockComment() {
	src := s.src
	s.i += 2
	for s.i < len(src) && !(src[s.i] == '*' && s.i+1 < len(src) && src[s.i+1] == '/') {
		if src[s.i] == '\n' {
			s.line, s.lineStart = s.line+1, s.i+1
		}
		s.i++
	}
	s.i += 2
}

// heredoc opens the heredoc that starts at s.i: <<EOT or <<-EOT, then a
// newline. Anything else is a << that the parsers report.
func (s *scanner) heredoc(name string) hcl.Diagnostics {
	src, i := s.src, s.i
	j := i + 2
	if j < len(src) && src[j] == '-' {
		j++
	}
	k := j
	for k < len(src) && isIdentByte(src[k]) {
		k++
	}
	if k == j || k >= len(src) || src[k] != '\n' {
		s.i++
		return nil
	}
	if !s.push('h') {
		return s.tooDeep(i, name)
	}
	s.markers = append(s.markers, src[j:k])
	s.strStart, s.strOpen = k+1, s.raw(i)
	s.i = k
	return nil
}

// number steps over the digits of the number that starts at s.i, which
// are refused with a leading zero.
func (s *scanner) number(name string) hcl.Diagnostics {
	src, i := s.src, s.i
	j := i
	for j < len(src) && isDigit(src[j]) {
		j++
	}
	if src[i] == '0' && j > i+1 {
		k := i + 1
		for k < j-1 && src[k] == '0' {
			k++
		}
		p := s.pos(i)
		return hcl.Diagnostics{{Severity: hcl.DiagError, Summary: fmt.Sprintf("number %s has a leading zero", src[i:j]), Subject: &hcl.Range{Filename: name, Start: p, End: hcl.Pos{Line: p.Line, Column: p.Column + j - i, Byte: j}},
			Extra: hintText(fmt.Sprintf("write the number without leading zeros, as %s: numbers are decimal", src[k:j]))}}
	}
	s.i = j
	return nil
}

// heredocEnds reports whether the line that starts at s.i closes the open
// heredoc: its marker alone on the line, spaces around it allowed.
func (s *scanner) heredocEnds() bool {
	marker := s.markers[len(s.markers)-1]
	j := s.i
	for j < len(s.src) && (s.src[j] == ' ' || s.src[j] == '\t') {
		j++
	}
	if len(s.src)-j < len(marker) || string(s.src[j:j+len(marker)]) != string(marker) {
		return false
	}
	j += len(marker)
	for j < len(s.src) && (s.src[j] == ' ' || s.src[j] == '\t' || s.src[j] == '\r') {
		j++
	}
	return j == len(s.src) || s.src[j] == '\n'
}

// textSpecial and codeSpecial are the bytes the scan looks at in text and
// in code; it steps over runs of the others.
var textSpecial, codeSpecial [256]bool

func init() {
	for _, c := range []byte("\n\\\"$%") {
		textSpecial[c] = true
	}
	for _, c := range []byte("\n#/{[()]},!-?\"<0123456789") {
		codeSpecial[c] = true
	}
}

// numberStart reports whether the digit at i starts a number: it follows
// no identifier, digit or decimal point, or a sign that does not (so the
// exponent of 1e-08 or 1e+08 is not one).
func numberStart(src []byte, i int) bool {
	if i > 0 && (src[i-1] == '-' || src[i-1] == '+') {
		i--
	}
	return i == 0 || !isIdentByte(src[i-1]) && src[i-1] != '.'
}
