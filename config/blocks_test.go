package config

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// blocksFile is a file of n services of several shapes, with comments
// between them.
func blocksFile(n int) string {
	var b strings.Builder
	b.WriteString("# pools of the edge\n\n")
	for i := range n {
		switch i % 3 {
		case 0:
			fmt.Fprintf(&b, "service \"s%d\" {\n  vip  = \"10.0.%d.1\"\n  port = 443\n\n  real \"192.0.2.%d\" { weight = 100 }\n  real \"192.0.2.%d\" {}\n\n  check \"tcp\" {\n    interval = \"2s\"\n    timeout  = \"1s\"\n  }\n}\n\n", i, i, 1+i%200, 2+i%200)
		case 1:
			fmt.Fprintf(&b, "// an fwmark service\nservice \"s%d\" {\n  fwmark = %d\n  real \"192.0.2.%d\" {}\n  check \"http\" {\n    path   = \"/x\" # why not\n    port   = 80\n  }\n}\n", i, 100+i, 1+i%200)
		default:
			fmt.Fprintf(&b, "service \"s%d\" {\n  vip = \"10.0.%d.1\"\n  port = 53\n  protocol = \"udp\"\n  /* a block\n     comment */\n  real \"192.0.2.%d\" { weight = 7 }\n  announce {\n    min_healthy = \"50%%\"\n  }\n}\n", i, i, 1+i%200)
		}
	}
	return b.String()
}

// sameDecode compares two decodes of one file by value.
func sameDecode(t *testing.T, what string, got, want *fileDecode) {
	t.Helper()
	deref := func(fd *fileDecode) (svcs []Service, metas []serviceMeta) {
		for i := range fd.services {
			svcs = append(svcs, *fd.services[i])
			metas = append(metas, *fd.metas[i])
		}
		return svcs, metas
	}
	gs, gm := deref(got)
	ws, wm := deref(want)
	if !reflect.DeepEqual(gs, ws) {
		t.Fatalf("%s: services differ from a whole-file decode:\n%+v\n%+v", what, gs, ws)
	}
	if !reflect.DeepEqual(gm, wm) {
		t.Fatalf("%s: metas differ from a whole-file decode:\n%+v\n%+v", what, gm, wm)
	}
	// A parse's diagnostics come in map order: compare them sorted.
	sorted := func(fd *fileDecode) string {
		var ps []string
		for _, d := range fd.parse {
			ps = append(ps, fmt.Sprint(d))
		}
		slices.Sort(ps)
		return fmt.Sprint(ps, fd.top, fd.svcDiags, fd.daemons, fd.bgps)
	}
	if sorted(got) != sorted(want) {
		t.Fatalf("%s: diagnostics differ from a whole-file decode:\n%v %v %v\n%v %v %v", what, got.parse, got.top, got.svcDiags, want.parse, want.top, want.svcDiags)
	}
}

// TestDecodeBlocksMatchesDecodeFile edits a file of services at random and
// decodes each version block by block, from the version before: the result
// is always exactly a whole-file decode, and an edit inside one block that
// keeps the lines in place decodes that block alone.
func TestDecodeBlocksMatchesDecodeFile(t *testing.T) {
	const name = "/etc/kglb/pools.hcl"
	src := blocksFile(30)
	prev := decodeBlocks(name, []byte(src), nil)
	sameDecode(t, "first decode", prev, decodeFile(name, []byte(src)))
	if prev.blocks == nil {
		t.Fatal("a file of services was not decoded block by block")
	}
	r := rand.New(rand.NewPCG(1, 2))
	edits := []struct {
		what string
		do   func(string) string
	}{
		{"same-length weight", func(s string) string { return strings.Replace(s, "weight = 100", "weight = 200", 1) }},
		{"longer weight", func(s string) string { return strings.Replace(s, "weight = 7 ", "weight = 70 ", 1) }},
		{"shorter weight", func(s string) string { return strings.Replace(s, "weight = 200", "weight = 2", 1) }},
		{"a line added", func(s string) string {
			return strings.Replace(s, "  real \"192.0.2.2\" {}\n", "  real \"192.0.2.2\" {}\n  real \"192.0.2.250\" {}\n", 1)
		}},
		{"a line removed", func(s string) string { return strings.Replace(s, "  port = 53\n", "", 1) }},
		{"a service appended", func(s string) string {
			return s + "service \"new\" {\n  vip = \"10.9.9.9\"\n  port = 1\n  real \"192.0.2.9\" {}\n}\n"
		}},
		{"a service removed", func(s string) string {
			i := strings.Index(s, "service \"s4\"")
			j := strings.Index(s, "service \"s5\"")
			if i < 0 || j < 0 {
				return s
			}
			return s[:i] + s[j:]
		}},
		{"an invalid value", func(s string) string { return strings.Replace(s, "port = 443", "port = 99999", 1) }},
		{"the invalid value fixed", func(s string) string { return strings.Replace(s, "port = 99999", "port = 443", 1) }},
		{"a syntax error", func(s string) string { return strings.Replace(s, "port = 443\n", "port = = 443\n", 1) }},
		{"the syntax error fixed", func(s string) string { return strings.Replace(s, "port = = 443\n", "port = 443\n", 1) }},
		{"a daemon block", func(s string) string { return s + "daemon {\n  log_level = \"debug\"\n}\n" }},
		{"the daemon block removed", func(s string) string {
			if i := strings.LastIndex(s, "daemon {"); i >= 0 {
				return s[:i]
			}
			return s
		}},
		{"a heredoc", func(s string) string { return strings.Replace(s, "path   = \"/x\"", "path = <<EOT\n/x\nEOT\n", 1) }},
		{"the heredoc removed", func(s string) string { return strings.Replace(s, "path = <<EOT\n/x\nEOT\n", "path   = \"/x\"", 1) }},
		{"an indented service", func(s string) string {
			return s + "  service \"ind\" {\n  vip = \"10.9.9.8\"\n  port = 1\n  real \"192.0.2.9\" {}\n}\n"
		}},
		{"the indent removed", func(s string) string { return strings.Replace(s, "  service \"ind\"", "service \"ind\"", 1) }},
		{"a duplicate name", func(s string) string { return strings.Replace(s, "service \"s7\"", "service \"s8\"", 1) }},
		{"a comment line above everything", func(s string) string { return "# moved\n" + s }},
		{"a comment between blocks", func(s string) string { return strings.Replace(s, "}\n\nservice", "}\n# between\nservice", 1) }},
		{"text glued before a block", func(s string) string { return strings.Replace(s, "\nservice \"s6\"", "\n# x\nservice \"s6\"", 1) }},
		{"a keyword broken", func(s string) string { return strings.Replace(s, "service \"s3\"", "servic \"s3\"", 1) }},
		{"the keyword fixed", func(s string) string { return strings.Replace(s, "servic \"s3\"", "service \"s3\"", 1) }},
		{"the head edited", func(s string) string { return strings.Replace(s, "# pools of the edge", "# pools", 1) }},
		{"a closing brace removed", func(s string) string {
			return strings.Replace(s, "  }\n}\n\nservice \"s9\"", "  }\n\nservice \"s9\"", 1)
		}},
		{"the closing brace back", func(s string) string {
			return strings.Replace(s, "  }\n\nservice \"s9\"", "  }\n}\n\nservice \"s9\"", 1)
		}},
		{"two blocks edited", func(s string) string {
			s = strings.Replace(s, "port = 443", "port = 444", 1)
			i := strings.LastIndex(s, "weight = 7 ")
			if i < 0 {
				return s
			}
			return s[:i] + "weight = 8 " + s[i+len("weight = 7 "):]
		}},
		{"a block cut in two files' worth", func(s string) string {
			if i := strings.Index(s, "service \"s20\""); i >= 0 {
				return s[:i]
			}
			return s
		}},
		{"blocks swapped", func(s string) string {
			i, j := strings.Index(s, "service \"s1\""), strings.Index(s, "service \"s2\"")
			k := strings.Index(s, "service \"s3\"")
			if i < 0 || j < i || k < j {
				return s
			}
			return s[:i] + s[j:k] + s[i:j] + s[k:]
		}},
		{"everything replaced", func(s string) string { return blocksFile(5 + r.IntN(30)) }},
		{"CRLF line ends", func(s string) string { return strings.ReplaceAll(strings.ReplaceAll(s, "\r\n", "\n"), "\n", "\r\n") }},
		{"LF line ends again", func(s string) string { return strings.ReplaceAll(s, "\r\n", "\n") }},
		{"one CRLF line", func(s string) string { return strings.Replace(s, "port = 443\n", "port = 443\r\n", 1) }},
	}
	for step := range 1000 {
		e := edits[r.IntN(len(edits))]
		if step < len(edits) {
			e = edits[step]
		}
		next := e.do(src)
		got := decodeBlocks(name, []byte(next), prev)
		sameDecode(t, fmt.Sprintf("step %d (%s)", step, e.what), got, decodeFile(name, []byte(next)))
		src, prev = next, got
	}
}

// TestDecodeBlocksReuses checks what a block-by-block decode keeps: an
// edit inside one block decodes that block alone; the services below a
// longer line are the same values, their offsets moved; those below an
// added line are copies with their lines moved.
func TestDecodeBlocksReuses(t *testing.T) {
	const name = "a.hcl"
	src := blocksFile(9)
	prev := decodeBlocks(name, []byte(src), nil)
	n := blockDecodes.Load()
	next := strings.Replace(src, "weight = 100", "weight = 100000", 1) // in s0
	got := decodeBlocks(name, []byte(next), prev)
	if d := blockDecodes.Load() - n; d != 1 {
		t.Errorf("a longer line decoded %d blocks, want 1", d)
	}
	if got.services[0] == prev.services[0] {
		t.Error("the edited service is the old value")
	}
	for i := 1; i < len(got.services); i++ {
		if got.services[i] != prev.services[i] {
			t.Errorf("service %d, below a longer line, was decoded again", i)
		}
		if got.metas[i].nameRange.Start.Byte != prev.metas[i].nameRange.Start.Byte+3 {
			t.Errorf("service %d: name at byte %d, was %d; want 3 more", i, got.metas[i].nameRange.Start.Byte, prev.metas[i].nameRange.Start.Byte)
		}
	}
	sameDecode(t, "after a longer line", got, decodeFile(name, []byte(next)))

	prev, src = got, next
	n = blockDecodes.Load()
	next = strings.Replace(src, "  real \"192.0.2.2\" {}\n", "  real \"192.0.2.2\" {}\n  real \"192.0.2.99\" {}\n", 1) // in s0
	got = decodeBlocks(name, []byte(next), prev)
	if d := blockDecodes.Load() - n; d != 1 {
		t.Errorf("an added line decoded %d blocks, want 1", d)
	}
	for i := 1; i < len(got.services); i++ {
		if got.services[i].Source == prev.services[i].Source {
			t.Errorf("service %d, below an added line, still says %s", i, got.services[i].Source)
		}
	}
	sameDecode(t, "after an added line", got, decodeFile(name, []byte(next)))
}

// TestCommonPrefixSuffix checks the halving search against a byte loop.
func TestCommonPrefixSuffix(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 2000 {
		a := make([]byte, r.IntN(300))
		for i := range a {
			a[i] = byte('a' + r.IntN(2))
		}
		b := slices.Clone(a)
		if len(b) > 0 && r.IntN(4) > 0 {
			b[r.IntN(len(b))] ^= 1
		}
		if r.IntN(3) == 0 {
			b = append(b, 'x')
		}
		if r.IntN(3) == 0 {
			b = append([]byte{'y'}, b...)
		}
		p := 0
		for p < min(len(a), len(b)) && a[p] == b[p] {
			p++
		}
		s := 0
		for s < min(len(a), len(b)) && a[len(a)-1-s] == b[len(b)-1-s] {
			s++
		}
		if got := commonPrefix(a, b); got != p {
			t.Fatalf("commonPrefix(%q, %q) = %d, want %d", a, b, got, p)
		}
		if got := commonSuffix(a, b); got != s {
			t.Fatalf("commonSuffix(%q, %q) = %d, want %d", a, b, got, s)
		}
	}
}
