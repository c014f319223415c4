package config

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/hashicorp/hcl/v2/hclwrite"
)

// MaxFileSize bounds one configuration file; a larger one is refused.
const MaxFileSize = 64 << 20

// ListFiles returns the *.hcl files of dir, sorted, skipping hidden files,
// editor temporaries and backups (".#x.hcl", "#x.hcl#", "x.hcl~") and
// directories.
func ListFiles(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		name := e.Name()
		if !strings.HasSuffix(name, ".hcl") || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "#") {
			continue
		}
		p := filepath.Join(dir, name)
		st, err := os.Stat(p) // follows symlinks, as a ConfigMap's are
		if err != nil || !st.Mode().IsRegular() {
			continue
		}
		out = append(out, p)
	}
	slices.Sort(out)
	return out, nil
}

// Load reads and validates every *.hcl file of dir (see ListFiles) as one
// configuration. On failure the error is a Diagnostics with every problem
// found.
func Load(dir string) (*Config, error) {
	files, err := ListFiles(dir)
	if err != nil {
		return nil, Diagnostics{{File: dir, Severity: SeverityError, Summary: "cannot read configuration directory: " + errText(err), Hint: "give a directory of *.hcl files, such as /etc/kglb"}}
	}
	return LoadFiles(files...)
}

// LoadFiles is Load for a list of files. They are loaded in sorted order;
// a file given twice is loaded once.
func LoadFiles(paths ...string) (*Config, error) {
	paths = slices.Clone(paths)
	slices.Sort(paths)
	paths = slices.Compact(paths)
	srcs := make([]source, 0, len(paths))
	var ds Diagnostics
	for _, p := range paths {
		b, err := readFile(p)
		if err != nil {
			ds = append(ds, Diagnostic{File: p, Severity: SeverityError, Summary: "cannot read file: " + errText(err), Hint: "check the path and its permissions"})
			continue
		}
		srcs = append(srcs, source{name: p, data: b})
	}
	if len(ds) > 0 {
		return nil, ds
	}
	return loadSources(srcs)
}

func errText(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

func readFile(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	size := 512
	if st, err := f.Stat(); err == nil && st.Size() < MaxFileSize {
		size = int(st.Size()) + 1
	}
	buf := bytes.NewBuffer(make([]byte, 0, size))
	_, err = buf.ReadFrom(io.LimitReader(f, MaxFileSize+1))
	b := buf.Bytes()
	if err != nil {
		return nil, err
	}
	if len(b) > MaxFileSize {
		return nil, fmt.Errorf("larger than %d MiB", MaxFileSize>>20)
	}
	return b, nil
}

type source struct {
	name string
	data []byte
}

// loadSources is the whole load of files already in memory.
func loadSources(srcs []source) (*Config, error) {
	d := &decoder{}
	sum := sha256.New()
	var lenBuf [8]byte
	parser := hclparse.NewParser() // fresh each load: a Parser caches files by name
	cfg := &Config{Daemon: DefaultDaemon(), Files: make([]string, 0, len(srcs))}
	var parseDiags hcl.Diagnostics
	var daemonAt, bgpAt *block
	var daemonAtRange, bgpAtRange hcl.Range
	var daemonFields *fields
	var daemonFile string
	// Size the service slices up front; the count is only an estimate.
	est := 0
	for _, s := range srcs {
		est += bytes.Count(s.data, []byte("service "))
	}
	cfg.Services = make([]Service, 0, est)
	metas := make([]serviceMeta, 0, est)
	for _, s := range srcs {
		cfg.Files = append(cfg.Files, s.name)
		for _, part := range [][]byte{[]byte(filepath.Base(s.name)), s.data} {
			binary.BigEndian.PutUint64(lenBuf[:], uint64(len(part)))
			sum.Write(lenBuf[:])
			sum.Write(part)
		}
		b := fastParse(s.data)
		if b == nil {
			f, diags := parser.ParseHCL(s.data, s.name)
			parseDiags = append(parseDiags, diags...)
			if diags.HasErrors() || f == nil {
				continue
			}
			hb, ok := f.Body.(*hclsyntax.Body)
			if !ok {
				continue
			}
			b = convertBody(hb, &parseDiags)
		}
		if parseDiags.HasErrors() {
			continue // only syntax errors are reported now
		}
		// Decode each file as soon as it is parsed, so only one file's
		// tree is alive at a time: less for the GC to trace.
		d.file = s.name
		f := d.open(b, rootSpec, "")
		for _, bl := range f.blocksOf("daemon") {
			if daemonAt != nil {
				d.errorAt(d.full(bl.typeRange), daemonAtRange, "keep a single daemon block, in one file", "more than one daemon block")
				continue
			}
			daemonAt, daemonAtRange, daemonFile = bl, d.full(bl.typeRange), d.file
			cfg.Daemon, daemonFields = d.decodeDaemon(bl)
		}
		for _, bl := range f.blocksOf("bgp") {
			if bgpAt != nil {
				d.errorAt(d.full(bl.typeRange), bgpAtRange, "keep a single bgp block, in one file; list every router as a neighbor in it", "more than one bgp block")
				continue
			}
			bgpAt, bgpAtRange = bl, d.full(bl.typeRange)
			cfg.BGP = d.decodeBGP(bl)
		}
		for _, bl := range f.blocksOf("service") {
			s, m := d.decodeService(bl)
			cfg.Services = append(cfg.Services, s)
			metas = append(metas, m)
		}
	}
	// Syntax errors come alone: decoding a half-parsed file gives noise.
	if parseDiags.HasErrors() {
		return nil, resolve(srcs, fromHCL(parseDiags))
	}
	copy(cfg.Digest[:], sum.Sum(nil))
	d.validate(cfg, metas, daemonAt, daemonFields, daemonFile)
	if len(d.diags) > 0 {
		ds := resolve(srcs, d.diags)
		if ds.HasErrors() {
			return nil, ds
		}
	}
	return cfg, nil
}

// fromHCL turns HCL's own diagnostics into ours, with friendlier text.
func fromHCL(hd hcl.Diagnostics) []diag {
	out := make([]diag, 0, len(hd))
	for _, h := range hd {
		dg := diag{sev: SeverityError, summary: lowerFirst(h.Summary), detail: h.Detail}
		if h.Severity == hcl.DiagWarning {
			dg.sev = SeverityWarning
		}
		if h.Subject != nil {
			dg.rng = *h.Subject
		}
		dg.hint = syntaxHints[h.Summary]
		if dg.hint == "" {
			dg.hint = "see docs/config.md for the syntax: name = value, and blocks as type \"label\" { ... }"
		}
		out = append(out, dg)
	}
	return out
}

var syntaxHints = map[string]string{
	"Argument or block definition required":    `each line is an attribute (name = value) or a block (type "label" { ... })`,
	"Unclosed configuration block":             "add the missing closing brace }",
	"Invalid character":                        "remove the character, or quote the value",
	"Missing newline after argument":           "put each attribute on its own line",
	"Missing newline after block definition":   "put the closing brace } on its own line",
	"Unterminated template string":             `close the string with a double quote "`,
	"Invalid expression":                       `write a literal value: "text", 42, true, [ ... ] or { ... }`,
	"Attribute redefined":                      "set each attribute once; remove one of them",
	"Variables not allowed":                    `the configuration has no variables: write the value itself, quoted if it is text ("tcp")`,
	"Function calls not allowed":               "the configuration has no functions: write the value itself",
	"Missing item separator":                   "separate list items with commas",
	"Invalid block definition":                 `write a block as type "label" { on one line, with the body on the next lines`,
	"Missing attribute value":                  `write a value after =, such as "text" or 42`,
	"Invalid multi-line string":                "use a heredoc (<<EOT ... EOT) for text on several lines",
	"Unsupported operator":                     "write the value itself",
	"Missing key/value separator":              `separate each key from its value with =, such as { "X-Probe" = "kglb" }`,
	"Invalid argument name":                    "attribute names are bare words such as port",
	"Invalid single-argument block definition": "close the block on the same line, as in real \"10.1.0.11\" { weight = 2 }, or put the attribute on its own line",
}

func lowerFirst(s string) string {
	r, n := utf8.DecodeRuneInString(s)
	if r >= 'A' && r <= 'Z' && !(len(s) > n && s[n] >= 'A' && s[n] <= 'Z') {
		return string(r+'a'-'A') + s[n:]
	}
	return s
}

// resolve sorts the diagnostics by position and attaches the source lines.
func resolve(srcs []source, ds []diag) Diagnostics {
	data := make(map[string][]byte, len(srcs))
	for _, s := range srcs {
		data[s.name] = s.data
	}
	slices.SortStableFunc(ds, func(a, b diag) int {
		return cmp.Or(cmp.Compare(a.rng.Filename, b.rng.Filename), cmp.Compare(a.rng.Start.Byte, b.rng.Start.Byte))
	})
	out := make(Diagnostics, 0, len(ds))
	for _, dg := range ds {
		o := Diagnostic{
			File: dg.rng.Filename, Line: dg.rng.Start.Line, Column: dg.rng.Start.Column,
			EndLine: dg.rng.End.Line, EndColumn: dg.rng.End.Column,
			Severity: dg.sev, Summary: dg.summary, Detail: dg.detail, Hint: dg.hint,
		}
		if src := data[o.File]; src != nil && o.Line > 0 {
			start := min(max(dg.rng.Start.Byte, 0), len(src))
			ls := bytes.LastIndexByte(src[:start], '\n') + 1
			le := bytes.IndexByte(src[start:], '\n')
			if le < 0 {
				le = len(src)
			} else {
				le += start
			}
			line := strings.TrimRight(string(src[ls:le]), "\r")
			if utf8.ValidString(line) && len(line) <= 400 {
				o.source = line
				o.caretStart = start - ls
				end := dg.rng.End.Byte
				if dg.rng.End.Line != dg.rng.Start.Line || end > ls+len(line) {
					end = ls + len(line)
				}
				o.caretEnd = end - ls
			}
		}
		out = append(out, o)
	}
	return out
}

// Format returns src in canonical layout (hclwrite). A file that does not
// parse is returned unchanged with its diagnostics as the error, since
// formatting broken syntax could lose text.
func Format(name string, src []byte) ([]byte, error) {
	_, diags := hclsyntax.ParseConfig(src, name, hcl.InitialPos)
	if diags.HasErrors() {
		return src, resolve([]source{{name, src}}, fromHCL(diags))
	}
	return hclwrite.Format(src), nil
}
