package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// FuzzLoad feeds arbitrary files to the loader. Nothing may panic or
// overflow a small stack; a
// failed load returns positioned Diagnostics and no Config; a good load
// returns sorted services. Input split at NUL bytes becomes several files,
// so the checks across files run too. Where the fast parser accepts a file,
// its tree must be exactly hclsyntax's; a Loader must agree with a fresh
// load. With KGLB_FUZZ_WATCHDOG set, an input that takes over 3s panics, so
// the fuzzer reports it as a crasher.
func FuzzLoad(f *testing.F) {
	// A file within the limits nests at most MaxNesting levels, a few
	// hundred KB of stack in either parser; 64 MB (not Go's 1 GB) turns a
	// file that gets past scanLimits and still nests deep into a crash.
	debug.SetMaxStack(64 << 20)
	seeds, _ := filepath.Glob("../examples/*.hcl")
	more, _ := filepath.Glob("testdata/invalid/*.hcl")
	seeds = append(seeds, more...)
	for _, p := range seeds {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	dirs, _ := filepath.Glob("testdata/invalid/*/")
	for _, d := range dirs {
		files, _ := ListFiles(d, nil)
		var parts [][]byte
		for _, p := range files {
			b, _ := os.ReadFile(p)
			parts = append(parts, b)
		}
		if len(parts) > 0 {
			f.Add(bytes.Join(parts, []byte{0}))
		}
	}
	// Deep nesting of every kind the parsers descend into, on one line and
	// over many. At 100,000 levels each overflowed the stack before
	// scanLimits (TestDeepNestingRefused loads those); 1,000 levels are as
	// far past the limit, and small enough for the fuzzer to mutate and
	// minimize quickly.
	for _, shape := range deepShapes(1000) {
		f.Add([]byte(shape))
	}
	// One file before and after an edit, as a Loader sees it.
	base := "service \"a\" {\n  vip  = \"198.51.100.1\"\n  port = 80\n  real \"192.0.2.1\" { weight = 100 }\n}\n"
	f.Add([]byte(base + "\x00" + strings.Replace(base, "weight = 100", "weight = 2000", 1)))
	f.Fuzz(func(t *testing.T, data []byte) {
		if os.Getenv("KGLB_FUZZ_WATCHDOG") != "" {
			tm := time.AfterFunc(3*time.Second, func() { panic(fmt.Sprintf("slow input %q", data)) })
			defer tm.Stop()
		}
		parts := bytes.SplitN(data, []byte{0}, 3)
		var srcs []source
		for i, p := range parts {
			srcs = append(srcs, source{name: fmt.Sprintf("f%d.hcl", i), data: p})
			checkFastParse(t, srcs[i].name, p)
		}
		cfg, err := loadSources(srcs)
		// A Loader that saw another first file reuses the other files'
		// decodes, and must still return exactly what a fresh load does.
		l := NewLoader()
		l.load(append([]source{{name: srcs[0].name}}, srcs[1:]...))
		got, gotErr := l.load(srcs)
		if d := loadDiff(got, gotErr, cfg, err); d != "" {
			t.Fatalf("a Loader's result differs from a fresh load: %s", d)
		}
		if err != nil {
			if cfg != nil {
				t.Fatal("a failed load returned a Config")
			}
			var ds Diagnostics
			if !errors.As(err, &ds) || len(ds) == 0 || !ds.HasErrors() {
				t.Fatalf("error is not a non-empty Diagnostics: %v", err)
			}
			for _, d := range ds {
				if d.Line == 0 || d.Summary == "" || d.Hint == "" {
					t.Fatalf("diagnostic without position, summary or hint: %+v", d)
				}
			}
			_ = ds.Error()
			var buf bytes.Buffer
			if ds.WriteText(&buf) != nil || ds.WriteJSON(&buf) != nil {
				t.Fatal("write failed")
			}
			return
		}
		for i := 1; i < len(cfg.Services); i++ {
			if cfg.Services[i-1].Name >= cfg.Services[i].Name {
				t.Fatalf("services not sorted or not unique: %q, %q", cfg.Services[i-1].Name, cfg.Services[i].Name)
			}
		}
		for _, s := range cfg.Services {
			for _, c := range s.Checks {
				if c.Timeout >= c.Interval || c.Rise < 1 || c.Fall < 1 {
					t.Fatalf("invalid check passed: %+v", c)
				}
			}
			for _, r := range s.Reals {
				if FamilyOf(r.Addr) != s.Family {
					t.Fatalf("mixed families passed: %+v", s)
				}
			}
		}
	})
}

// checkFastParse fails when the fast parser accepts src but hclsyntax
// rejects it or reads it differently.
func checkFastParse(t *testing.T, name string, src []byte) {
	t.Helper()
	if scanLimits(name, src).HasErrors() {
		return // neither parser ever sees it
	}
	fb := fastParse(src)
	if fb == nil {
		return
	}
	f, diags := hclsyntax.ParseConfig(src, name, hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatalf("fast parser accepted %q, hclsyntax rejects it: %v", src, diags)
	}
	var cd hcl.Diagnostics
	sb := convertBody(f.Body.(*hclsyntax.Body), &cd)
	if cd.HasErrors() {
		t.Fatalf("fast parser accepted %q, hclsyntax cannot evaluate it: %v", src, cd)
	}
	if d := diffBody(fb, sb); d != "" {
		t.Fatalf("fast parser and hclsyntax differ on %q:\n%s", src, d)
	}
}

func diffBody(a, b *body) string {
	if len(a.attrs) != len(b.attrs) || len(a.blocks) != len(b.blocks) {
		return fmt.Sprintf("%d attrs, %d blocks vs %d, %d", len(a.attrs), len(a.blocks), len(b.attrs), len(b.blocks))
	}
	for i := range a.attrs {
		x, y := a.attrs[i], b.attrs[i]
		if x.name != y.name || x.nameRange != y.nameRange {
			return fmt.Sprintf("attr %q %v vs %q %v", x.name, x.nameRange, y.name, y.nameRange)
		}
		if d := diffValue(x.val, y.val); d != "" {
			return "attr " + x.name + ": " + d
		}
	}
	for i := range a.blocks {
		x, y := a.blocks[i], b.blocks[i]
		if x.typ != y.typ || x.typeRange != y.typeRange || x.defRange != y.defRange || strings.Join(x.labels, "\x00") != strings.Join(y.labels, "\x00") || len(x.labelRanges) != len(y.labelRanges) {
			return fmt.Sprintf("block %q %v %v %q vs %q %v %v %q", x.typ, x.typeRange, x.defRange, x.labels, y.typ, y.typeRange, y.defRange, y.labels)
		}
		for j := range x.labelRanges {
			if x.labelRanges[j] != y.labelRanges[j] {
				return fmt.Sprintf("block %q label range %v vs %v", x.typ, x.labelRanges[j], y.labelRanges[j])
			}
		}
		if d := diffBody(x.body, y.body); d != "" {
			return "block " + x.typ + ": " + d
		}
	}
	return ""
}

func diffValue(x, y value) string {
	if x.kind != y.kind || x.str != y.str || x.num != y.num || x.exact != y.exact || x.bool != y.bool || x.rng != y.rng ||
		len(x.elems()) != len(y.elems()) || strings.Join(x.keys(), "\x00") != strings.Join(y.keys(), "\x00") {
		return fmt.Sprintf("%+v vs %+v", x, y)
	}
	for i := range x.elems() {
		if d := diffValue(x.elems()[i], y.elems()[i]); d != "" {
			return d
		}
	}
	return ""
}

// TestFastParseMatchesHCL runs the differential check on every example and
// fixture, and on a few hand-picked shapes.
func TestFastParseMatchesHCL(t *testing.T) {
	files, _ := filepath.Glob("../examples/*.hcl")
	more, _ := filepath.Glob("testdata/invalid/*.hcl")
	accepted := 0
	for _, p := range append(files, more...) {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		checkFastParse(t, p, b)
		if fastParse(b) != nil {
			accepted++
		}
	}
	for _, p := range files {
		b, _ := os.ReadFile(p)
		if fastParse(b) == nil {
			t.Errorf("the fast parser refuses example %s", p)
		}
	}
	shapes := []string{
		"a = 1\n",
		"a = -12 # c\n// d\nb = [1, 2,\n  3,\n]\n",
		"x \"y\" z {\n}\n",
		"x { a = \"b\" }\n",
		"x {}",
		"h = { \"A-B\" = \"c\", d: \"e\"\n  f = \"g\" # x\n}\n",
		"s = \"a\\\"b\\\\c\\n\"\n",
		"n = 123456789012345678901234567890\n",
		"t = true\nf = false\nz = null\n",
		"e = []\no = {}\n",
	}
	for _, s := range shapes {
		if fastParse([]byte(s)) == nil {
			t.Errorf("fast parser refuses %q", s)
		}
		checkFastParse(t, "s.hcl", []byte(s))
	}
	t.Logf("fast parser took %d of %d files", accepted, len(files)+len(more))
}

// deepShapes are files nesting n levels deep, in each way the parsers
// descend: parentheses, templates, lists, objects, blocks, unary
// operators and conditionals, on one line and over many.
func deepShapes(n int) []string {
	r := strings.Repeat
	return []string{
		"a = " + r("(", n) + "1" + r(")", n) + "\n",
		"a = " + r("(\n", n) + "1\n",
		"a = " + r(`"${`, n) + "1" + r(`}"`, n) + "\n",
		"a = <<EOT\n" + r("${", n) + "\nEOT\n",
		"a = " + r("[", n) + r("]", n) + "\n",
		"a = " + r("[\n", n),
		"a = " + r("{a=", n) + "1" + r("}", n) + "\n",
		r("b {\n", n) + r("}\n", n),
		r("b { ", n) + "\n",
		"a = " + r("!", n) + "true\n",
		"a = " + r("-", n) + "1\n",
		"a = " + r("true ? 1 : ", n) + "1\n",
		"a = (" + r("true ?\n1 :\n", n) + "1)\n",
	}
}
