package config

import (
	"bytes"
	"slices"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// A file of many services is decoded service by service: a one-line edit
// in a file of 100 services decodes one service, not 100. decodeBlocks
// splits the text at the top-level service blocks without parsing it, then
// takes each block from the file's previous decode when the block's text
// and first line are the same, or parses and decodes that block alone, in
// place, so every position is what a parse of the whole file gives. A file
// the split is unsure of (anything at the top level but service blocks and
// comments, a heredoc, a template, a syntax error) is decoded whole, so the
// result never differs from decodeFile's.

// blockDecode is one service block decoded alone, filed by the line it
// starts on. A block whose text is the same at the same line is reused; one
// that only moved within its lines (a longer or shorter line above it) is
// reused with its byte offsets moved. A block that moved by whole lines is
// decoded again: the "file:line" of its service, reals and checks changed.
type blockDecode struct {
	byte  int    // the block's first byte in its file
	text  []byte // the block's text, within the file's content
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
	chunks, ok := splitServices(data)
	if !ok || len(chunks) < 2 {
		return decodeFile(name, data)
	}
	if prev == nil || prev.blocks == nil {
		// Nothing to reuse: one parse of the whole file costs less than
		// one per block. Its blocks are kept for the next edit.
		fd := decodeFile(name, data)
		fd.blocks = blocksOf(fd, data, chunks)
		return fd
	}
	fd := &fileDecode{
		services: make([]*Service, 0, len(chunks)),
		metas:    make([]*serviceMeta, 0, len(chunks)),
		blocks:   make(map[int]*blockDecode, len(chunks)),
	}
	for _, c := range chunks {
		text := data[c.start:c.end]
		bd := prev.blocks[c.line]
		switch {
		case bd == nil || !bytes.Equal(bd.text, text) || bd.byte != c.start && len(bd.diags) > 0:
			// New or changed. (Diagnostics carry byte offsets too; a
			// block with problems is rare enough to decode again when it
			// moves.)
			if bd = decodeBlock(name, data, c); bd == nil {
				return decodeFile(name, data)
			}
		default:
			// The same block: a copy that points into this content, so
			// the old content is not kept alive.
			moved := *bd
			moved.text = text
			if bd.byte != c.start {
				moved.byte, moved.meta = c.start, bd.meta.shifted(c.start-bd.byte)
			}
			bd = &moved
		}
		fd.blocks[c.line] = bd
		fd.services = append(fd.services, bd.svc)
		fd.metas = append(fd.metas, bd.meta)
		fd.svcDiags = append(fd.svcDiags, bd.diags...)
	}
	return fd
}

// blocksOf files a whole-file decode's services, and their problems, by
// block; nil when the file is not only service blocks or a problem lies
// outside every block.
func blocksOf(fd *fileDecode, data []byte, chunks []chunk) map[int]*blockDecode {
	if len(fd.parse) > 0 || len(fd.top) > 0 || len(fd.daemons) > 0 || len(fd.bgps) > 0 || len(fd.services) != len(chunks) {
		return nil
	}
	out := make(map[int]*blockDecode, len(chunks))
	diags := fd.svcDiags
	for i, c := range chunks {
		n := 0
		for n < len(diags) && diags[n].rng.Filename != "" && diags[n].rng.Start.Byte >= c.start && diags[n].rng.Start.Byte < c.end {
			n++
		}
		bd := &blockDecode{byte: c.start, text: data[c.start:c.end], svc: fd.services[i], meta: fd.metas[i], diags: slices.Clip(diags[:n])}
		diags = diags[n:]
		out[c.line] = bd
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
	p := &fastParser{src: data[:c.end], slabSize: 32, i: c.start, line: c.line, lineStart: c.start}
	b := &body{}
	if !p.body(b, false) || p.i != c.end {
		f, diags := hclsyntax.ParseConfig(data[c.start:c.end], name, hcl.Pos{Line: c.line, Column: 1, Byte: c.start})
		if diags.HasErrors() || f == nil {
			return nil
		}
		hb, ok := f.Body.(*hclsyntax.Body)
		if !ok {
			return nil
		}
		b = convertBody(hb, &diags)
		if len(diags) > 0 {
			return nil
		}
	}
	d := &decoder{file: name, slab: make([]fields, 32)}
	f := d.open(b, rootSpec, "")
	blocks := f.blocksOf("service")
	if len(d.diags) > 0 || len(blocks) != 1 || len(b.blocks) != 1 || len(b.attrs) != 0 {
		return nil
	}
	s, m := d.decodeService(blocks[0])
	return &blockDecode{byte: c.start, text: data[c.start:c.end], svc: &s, meta: &m, diags: d.diags}
}

// shifted is m with every byte offset moved by delta: the same block, at
// the same lines, after a line above it grew or shrank.
func (m *serviceMeta) shifted(delta int) *serviceMeta {
	out := *m
	shift := func(r *hcl.Range) {
		if r.Filename != "" {
			r.Start.Byte += delta
			r.End.Byte += delta
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

// splitServices finds the top-level service blocks of src without parsing
// it: each starts with "service" at the start of a line outside any block,
// string or comment, and runs to the next one or the end. Before the first
// may be only blanks and comments. It reports false when it is unsure: a
// heredoc, a template in a string, a string across lines, unbalanced
// braces, or anything else at the top level before the first block.
func splitServices(src []byte) ([]chunk, bool) {
	var chunks []chunk
	depth, line := 0, 1
	lineStart := true
	for i := 0; i < len(src); {
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
				return nil, false
			}
			line += bytes.Count(src[i+2:i+2+j], []byte{'\n'})
			i += 2 + j + 2
		case len(chunks) == 0:
			return nil, false // a top-level item that is not a service
		case c == '"':
			i++
			for i < len(src) && src[i] != '"' {
				if !plainInString[src[i]] {
					switch {
					case src[i] == '\n':
						return nil, false
					case src[i] == '\\':
						i++
					case i+1 < len(src) && src[i+1] == '{': // a template: ${ or %{
						return nil, false
					}
				}
				i++
			}
			if i >= len(src) {
				return nil, false
			}
			i++
		case c == '<' && i+1 < len(src) && src[i+1] == '<':
			return nil, false
		case c == '{':
			depth++
			i++
		case c == '}':
			if depth--; depth < 0 {
				return nil, false
			}
			i++
		default:
			// Words, numbers, blanks and punctuation: nothing to track until the
			// next byte that may open or close something.
			i++
			for i < len(src) && plain[src[i]] {
				i++
			}
		}
	}
	if depth != 0 {
		return nil, false
	}
	if len(chunks) > 0 {
		chunks[len(chunks)-1].end = len(src)
	}
	return chunks, true
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
