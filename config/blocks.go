package config

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/hashicorp/hcl/v2"
)

// A file of many services is decoded service by service: a one-line edit
// in a file of 100 services decodes one service, not 100. decodeBlocks
// compares the new text with the file's previous content: the service
// blocks wholly before the first changed byte are the same blocks, those
// wholly after the last are the same blocks moved by the edit's bytes and
// lines, and only the text between is split again at its top-level service
// blocks, without parsing it. Each block of that text whose text and line
// are unchanged is reused too; the rest are parsed and decoded alone, in
// place, so every position is what a parse of the whole file gives. A file
// the split is unsure of (anything at the top level but service blocks and
// comments, a heredoc, a template, a syntax error) is decoded whole, so the
// result never differs from decodeFile's.

// blockDecode is one service block decoded alone: the chunk of the file's
// content it is in (see chunk) and what it decoded to.
type blockDecode struct {
	chunk
	sum   [32]byte // SHA-256 of the chunk's text
	svc   *Service
	meta  *serviceMeta
	diags []diag
}

// chunk is one top-level service block with the comments and blank lines
// that follow it, from the start of its first line.
type chunk struct{ start, end, line int }

// decodeBlocks decodes data as decodeFile does, reusing the blocks of prev
// (the same file's last decode, or nil) that did not change.
func decodeBlocks(name string, data []byte, prev *fileDecode) *fileDecode {
	whole := func() *fileDecode {
		fd := decodeFile(name, data)
		fd.sum = sha256.Sum256(data)
		return fd
	}
	if prev == nil || prev.blocks == nil {
		// Nothing to reuse: one parse of the whole file costs less than
		// one per block. Its blocks are kept for the next edit.
		chunks, ok := splitServices(data)
		if !ok || len(chunks) < 2 {
			return whole()
		}
		fd := decodeFile(name, data)
		if fd.blocks = blocksOf(fd, data, chunks); fd.blocks == nil {
			fd.sum = sha256.Sum256(data)
			return fd
		}
		fd.data, fd.sum = data, fileSum(data, fd.blocks)
		return fd
	}
	if ds := scanLimits(name, data); ds.HasErrors() {
		return whole() // which reports it
	}
	old, ob := prev.data, prev.blocks
	p := commonPrefix(old, data)
	cut := len(old) - commonSuffix(old[p:], data[p:])
	delta := len(data) - len(old)
	// Blocks before i end before the first change, and blocks from j on
	// start after the last (strictly after: the line break before each is
	// unchanged too). The text from the block before i (or the file's
	// start) to block j is split again, that block too, because text added
	// at its end may be its trailing comments.
	i, _ := slices.BinarySearchFunc(ob, p, func(b *blockDecode, p int) int { return cmp.Compare(b.end, p+1) })
	j, _ := slices.BinarySearchFunc(ob, cut+1, func(b *blockDecode, c int) int { return cmp.Compare(b.start, c) })
	i = max(i-1, 0)
	from, line, started := 0, 1, false
	if i > 0 {
		from, line, started = ob[i].start, ob[i].line, true
	}
	to := len(data)
	if j < len(ob) {
		to = ob[j].start + delta
	}
	mid, endLine, ok := splitRange(data[:to], from, line, started)
	if !ok {
		return decodeBlocks(name, data, nil)
	}
	dl := 0
	if j < len(ob) {
		dl = endLine - ob[j].line
	}
	n := i + len(mid) + len(ob) - j
	if n < 2 {
		return whole()
	}
	fd := &fileDecode{
		services: make([]*Service, 0, n),
		metas:    make([]*serviceMeta, 0, n),
		blocks:   make([]*blockDecode, 0, n),
		data:     data,
	}
	add := func(bd *blockDecode) {
		fd.blocks = append(fd.blocks, bd)
		fd.services = append(fd.services, bd.svc)
		fd.metas = append(fd.metas, bd.meta)
		fd.svcDiags = append(fd.svcDiags, bd.diags...)
	}
	for _, bd := range ob[:i] {
		add(bd)
	}
	// The blocks between, matched with the old ones between by line.
	var byLine map[int]*blockDecode
	if len(mid) > 0 {
		byLine = make(map[int]*blockDecode, j-i)
		for _, bd := range ob[i:j] {
			byLine[bd.line] = bd
		}
	}
	for _, c := range mid {
		bd := byLine[c.line]
		if bd == nil || !bytes.Equal(old[bd.start:bd.end], data[c.start:c.end]) || bd.start != c.start && len(bd.diags) > 0 {
			if bd = decodeBlock(name, data, c); bd == nil {
				return whole()
			}
			add(bd)
			continue
		}
		add(bd.at(c))
	}
	for _, bd := range ob[j:] {
		c := chunk{start: bd.start + delta, end: bd.end + delta, line: bd.line + dl}
		if (delta != 0 || dl != 0) && len(bd.diags) > 0 {
			// Diagnostics carry positions too; a block with problems is
			// rare enough to decode again when it moves.
			if bd = decodeBlock(name, data, c); bd == nil {
				return whole()
			}
			add(bd)
			continue
		}
		add(bd.at(c))
	}
	fd.sum = fileSum(data, fd.blocks)
	return fd
}

// fileSum identifies the content of a file decoded block by block: the
// SHA-256 of the text before the first block and of each block's sum, so
// that an edit hashes the blocks it changed, not the file. Files with the
// same sum have the same content (the blocks and what precedes them are the
// whole file).
func fileSum(data []byte, blocks []*blockDecode) [32]byte {
	h := sha256.New()
	h.Write([]byte("kglb blocks\x00"))
	head := sha256.Sum256(data[:blocks[0].start])
	h.Write(head[:])
	for _, bd := range blocks {
		h.Write(bd.sum[:])
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// blockDecodes counts decodeBlock's calls, for tests.
var blockDecodes atomic.Int64

// at is bd moved to chunk c, where its text is the same: bd itself when
// it did not move, or a copy with its positions moved, and its service too
// when it moved by whole lines (its "file:line" and its reals' and checks'
// changed).
func (bd *blockDecode) at(c chunk) *blockDecode {
	if c == bd.chunk {
		return bd
	}
	out := *bd
	out.chunk = c
	dl, db := c.line-bd.line, c.start-bd.start
	if dl != 0 || db != 0 {
		out.meta = bd.meta.shifted(dl, db)
	}
	if dl != 0 {
		out.svc = bd.svc.shifted(dl)
	}
	return &out
}

// commonPrefix is the length of the longest common prefix of a and b. It
// compares by halves with bytes.Equal, which compares many bytes at a time,
// down to the first difference.
func commonPrefix(a, b []byte) int {
	n := min(len(a), len(b))
	a, b = a[:n], b[:n]
	off := 0
	for len(a) > 64 {
		h := len(a) / 2
		if bytes.Equal(a[:h], b[:h]) {
			off += h
			a, b = a[h:], b[h:]
		} else {
			a, b = a[:h], b[:h]
		}
	}
	i := 0
	for i < len(a) && a[i] == b[i] {
		i++
	}
	return off + i
}

// commonSuffix is the length of the longest common suffix of a and b, found
// as commonPrefix finds a prefix.
func commonSuffix(a, b []byte) int {
	n := min(len(a), len(b))
	a, b = a[len(a)-n:], b[len(b)-n:]
	off := 0
	for len(a) > 64 {
		h := len(a) / 2
		if bytes.Equal(a[len(a)-h:], b[len(b)-h:]) {
			off += h
			a, b = a[:len(a)-h], b[:len(b)-h]
		} else {
			a, b = a[len(a)-h:], b[len(b)-h:]
		}
	}
	i := 0
	for i < len(a) && a[len(a)-1-i] == b[len(b)-1-i] {
		i++
	}
	return off + i
}

// blocksOf files a whole-file decode's services, and their problems, by
// block; nil when the file is not only service blocks or a problem lies
// outside every block.
func blocksOf(fd *fileDecode, data []byte, chunks []chunk) []*blockDecode {
	if len(fd.parse) > 0 || len(fd.top) > 0 || len(fd.daemons) > 0 || len(fd.bgps) > 0 || len(fd.services) != len(chunks) {
		return nil
	}
	out := make([]*blockDecode, 0, len(chunks))
	diags := fd.svcDiags
	for i, c := range chunks {
		n := 0
		for n < len(diags) && diags[n].rng.Filename != "" && diags[n].rng.Start.Byte >= c.start && diags[n].rng.Start.Byte < c.end {
			n++
		}
		out = append(out, &blockDecode{chunk: c, sum: sha256.Sum256(data[c.start:c.end]), svc: fd.services[i], meta: fd.metas[i], diags: slices.Clip(diags[:n])})
		diags = diags[n:]
	}
	if len(diags) > 0 {
		return nil
	}
	return out
}

// decodeBlock parses and decodes the chunk c of data, positioned in data.
// It returns nil when the chunk is not exactly one service block that
// parses cleanly: the caller then decodes the whole file.
func decodeBlock(name string, data []byte, c chunk) *blockDecode {
	blockDecodes.Add(1)
	// Slabs the size of the block: a node per brace or equals sign (and a
	// few more), not the 256 a whole file's parse carves.
	text := data[c.start:c.end]
	n := bytes.Count(text, []byte{'{'}) + bytes.Count(text, []byte{'='}) + 4
	p := &fastParser{src: data[:c.end], slabSize: n, i: c.start, line: c.line, lineStart: c.start}
	b := &body{}
	if !p.body(b, false) || p.i != c.end {
		var diags hcl.Diagnostics
		if b, diags = slowParse(name, text, hcl.Pos{Line: c.line, Column: 1, Byte: c.start}); b == nil || len(diags) > 0 {
			return nil
		}
	}
	d := &decoder{file: name, slab: make([]fields, bytes.Count(text, []byte{'{'})+1)}
	f := d.open(b, rootSpec, "")
	blocks := f.blocksOf("service")
	if len(d.diags) > 0 || len(blocks) != 1 || len(b.blocks) != 1 || len(b.attrs) != 0 {
		return nil
	}
	s, m := d.decodeService(blocks[0])
	return &blockDecode{chunk: c, sum: sha256.Sum256(data[c.start:c.end]), svc: &s, meta: &m, diags: d.diags}
}

// shifted is m with every position moved by dl lines and db bytes: the same
// block, moved by an edit above it.
func (m *serviceMeta) shifted(dl, db int) *serviceMeta {
	out := *m
	shift := func(r *hcl.Range) {
		if r.Filename != "" {
			r.Start.Line += dl
			r.End.Line += dl
			r.Start.Byte += db
			r.End.Byte += db
		}
	}
	shift(&out.nameRange)
	shift(&out.endpointRange)
	shift(&out.fwmarkRange)
	shift(&out.announceRange)
	if m.tunnelRanges != nil {
		out.tunnelRanges = make(map[Family]hcl.Range, len(m.tunnelRanges))
		for f, r := range m.tunnelRanges {
			shift(&r)
			out.tunnelRanges[f] = r
		}
	}
	return &out
}

// shifted is a copy of s whose "file:line" sources, and its reals' and
// checks', are dl lines further down.
func (s *Service) shifted(dl int) *Service {
	out := *s
	out.Source = shiftSource(s.Source, dl)
	out.Reals = slices.Clone(s.Reals)
	for i := range out.Reals {
		out.Reals[i].Source = shiftSource(out.Reals[i].Source, dl)
	}
	out.Checks = slices.Clone(s.Checks)
	for i := range out.Checks {
		out.Checks[i].Source = shiftSource(out.Checks[i].Source, dl)
	}
	return &out
}

func shiftSource(src string, dl int) string {
	i := strings.LastIndexByte(src, ':')
	if i < 0 {
		return src
	}
	n, err := strconv.Atoi(src[i+1:])
	if err != nil {
		return src
	}
	return src[:i+1] + strconv.Itoa(n+dl)
}

// splitServices finds the top-level service blocks of src without parsing
// it: each starts with "service" at the start of a line outside any block,
// string or comment, and runs to the next one or the end. Before the first
// may be only blanks and comments. It reports false when it is unsure: a
// heredoc, a template in a string, a string across lines, unbalanced
// braces, or anything else at the top level before the first block.
func splitServices(src []byte) ([]chunk, bool) {
	chunks, _, ok := splitRange(src, 0, 1, false)
	return chunks, ok
}

// splitRange is splitServices for src[from:], where from is the start of
// line line and outside any block; started says a service block came
// before. It returns the line src ends on, which must be outside any block
// too.
func splitRange(src []byte, from, line int, started bool) ([]chunk, int, bool) {
	var chunks []chunk
	depth := 0
	lineStart := true
	for i := from; i < len(src); {
		if lineStart {
			lineStart = false
			if depth == 0 && hasWord(src[i:], "service") {
				if len(chunks) > 0 {
					chunks[len(chunks)-1].end = i
				}
				chunks = append(chunks, chunk{start: i, line: line})
			}
		}
		c := src[i]
		switch {
		case c == '\n':
			line++
			lineStart = true
			i++
		case c == '#' || c == '/' && i+1 < len(src) && src[i+1] == '/':
			if j := bytes.IndexByte(src[i:], '\n'); j >= 0 {
				i += j
			} else {
				i = len(src)
			}
		case c == '/' && i+1 < len(src) && src[i+1] == '*':
			j := bytes.Index(src[i+2:], []byte("*/"))
			if j < 0 {
				return nil, 0, false
			}
			line += bytes.Count(src[i+2:i+2+j], []byte{'\n'})
			i += 2 + j + 2
		case len(chunks) == 0 && !started:
			return nil, 0, false // a top-level item that is not a service
		case c == '"':
			i++
			for i < len(src) && src[i] != '"' {
				if !plainInString[src[i]] {
					switch {
					case src[i] == '\n':
						return nil, 0, false
					case src[i] == '\\':
						i++
					case i+1 < len(src) && src[i+1] == '{': // a template: ${ or %{
						return nil, 0, false
					}
				}
				i++
			}
			if i >= len(src) {
				return nil, 0, false
			}
			i++
		case c == '<' && i+1 < len(src) && src[i+1] == '<':
			return nil, 0, false
		case c == '{':
			depth++
			i++
		case c == '}':
			if depth--; depth < 0 {
				return nil, 0, false
			}
			i++
		default:
			// Words, numbers, blanks and punctuation: nothing to track
			// until the next byte that may open or close something.
			i++
			for i < len(src) && plain[src[i]] {
				i++
			}
		}
	}
	if depth != 0 || started && from < len(src) && (len(chunks) == 0 || chunks[0].start != from) {
		return nil, 0, false
	}
	if len(chunks) > 0 {
		chunks[len(chunks)-1].end = len(src)
	}
	return chunks, line, true
}

// plain marks the bytes splitServices skips without a look outside
// strings (blanks among them: they matter only at the start of a line,
// which is looked at before), and plainInString those it skips inside one.
var plain, plainInString = func() (p, q [256]bool) {
	for c := range 256 {
		p[c], q[c] = true, true
	}
	for _, c := range []byte("\n#/\"<{}") {
		p[c] = false
	}
	for _, c := range []byte("\n\\$%\"") {
		q[c] = false
	}
	return p, q
}()

// hasWord reports whether b starts with word followed by a blank or a
// quote.
func hasWord(b []byte, word string) bool {
	return len(b) > len(word) && string(b[:len(word)]) == word && (b[len(word)] == ' ' || b[len(word)] == '\t' || b[len(word)] == '"')
}
