package config

import (
	"errors"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
)

// TestScanLimits: each limit is reported at its place with the limit in
// the message, before any parser sees the file; input within the limits
// (literal configurations, heredocs, numbers in every form HCL allows)
// passes the scan.
func TestScanLimits(t *testing.T) {
	svc := func(body string) string {
		return "service \"web\" {\n  vip  = \"198.51.100.10\"\n" + body + "}\n"
	}
	tests := []struct {
		name, src string
		want      string // "" for none; else the diagnostic's position and summary
	}{
		{"plain", svc("  port = 80\n"), ""},
		{"fractions and exponents", "a = 1.08\nb = 1e08\nc = 0.5\nd = -1\ne = 0\n", ""},
		{"zeros in text", "# port = 08\na = \"08\" // 08\nx-08 = 1\n/* 08 */\n", ""},
		{"heredoc", "a = <<EOT\n  ${ { [ ( !!!!\n  EOT\n  EOT\nb = 08\n", "f.hcl:5:5: number 08 has a leading zero"},
		{"indented heredoc", "a = <<-EOT\n  \"\n  EOT\nb = [[1]]\n", ""},
		{"leading zero", svc("  port = 08\n"), "f.hcl:3:10: number 08 has a leading zero"},
		{"negative leading zero", "a = -007\n", "f.hcl:1:6: number 007 has a leading zero"},
		{"depth at the limit", "a = " + strings.Repeat("[", MaxNesting) + strings.Repeat("]", MaxNesting) + "\n", ""},
		{"depth over the limit", "a = " + strings.Repeat("[", MaxNesting+1) + strings.Repeat("]", MaxNesting+1) + "\n", "f.hcl:1:37: nesting deeper than the limit of 32 levels"},
		{"negative numbers in a long list", "a = [" + strings.Repeat("-1, ", 100) + "]\n", ""},
		{"negative numbers in an object", "a = {\n" + strings.Repeat("  x = -1\n", 100) + "}\n", ""},
		{"deep blocks", strings.Repeat("b {\n", 40), "f.hcl:33:3: nesting deeper than the limit of 32 levels"},
		{"long line", "a = \"" + strings.Repeat("x", MaxLineLength) + "\"\n", "f.hcl:1:8193: line of 8198 bytes is longer than the limit of 8192 bytes"},
		{"long last line", "\n" + strings.Repeat("#", MaxLineLength+1), "f.hcl:2:8193: line of 8193 bytes is longer than the limit of 8192 bytes"},
		{"long string", "a = \"" + strings.Repeat("x\\n", MaxStringLength/2+1) + "\"\n", "f.hcl:1:5: string longer than the limit of 4096 bytes"},
		{"long heredoc", "a = <<EOT\n" + strings.Repeat("xxxxxxx\n", MaxStringLength/8+1) + "EOT\n", "f.hcl:1:5: string longer than the limit of 4096 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ds := scanLimits("f.hcl", []byte(tt.src))
			got := ""
			if len(ds) > 0 {
				got = ds[0].Subject.Filename + ":" + itoa(ds[0].Subject.Start.Line) + ":" + itoa(ds[0].Subject.Start.Column) + ": " + ds[0].Summary
				if _, ok := ds[0].Extra.(hintText); !ok {
					t.Errorf("no hint: %v", ds[0])
				}
			}
			if got != tt.want || len(ds) > 1 {
				t.Errorf("scanLimits = %q (%d), want %q", got, len(ds), tt.want)
			}
		})
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestDeepNestingRefused: every deep shape is a positioned error from
// Load and Format, with the stack held far below what would crash.
func TestDeepNestingRefused(t *testing.T) {
	defer debug.SetMaxStack(debug.SetMaxStack(64 << 20)) // hclsyntax needed over 1 GB
	for i, shape := range deepShapes(100000) {
		dir := t.TempDir()
		p := filepath.Join(dir, "deep.hcl")
		if err := os.WriteFile(p, []byte(shape), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := Load(dir)
		var ds Diagnostics
		if !errors.As(err, &ds) || len(ds) != 1 || ds[0].Line == 0 || !strings.Contains(ds[0].Summary, "limit") {
			t.Errorf("shape %d: Load = %v", i, err)
		}
		if _, err := Format(p, []byte(shape)); !errors.As(err, &ds) || !strings.Contains(ds[0].Summary, "limit") {
			t.Errorf("shape %d: Format = %v", i, err)
		}
	}
}

// TestDiagnosticString: the one-line form logs and status pages print.
func TestDiagnosticString(t *testing.T) {
	ds := Diagnostics{
		{File: "/etc/kglb/web.hcl", Line: 8, Column: 17, Severity: SeverityError, Summary: "unterminated string literal"},
		{File: "/etc/kglb/x.hcl", Severity: SeverityError, Summary: "cannot read file: is a FIFO, not a regular file"},
		{File: "/etc/kglb/a.hcl", Line: 1, Column: 1, Severity: SeverityWarning, Summary: "w"},
	}
	want := "/etc/kglb/web.hcl:8:17: unterminated string literal\n/etc/kglb/x.hcl: cannot read file: is a FIFO, not a regular file\n/etc/kglb/a.hcl:1:1: warning: w"
	if got := ds.String(); got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if got := ds[0].String(); got != "/etc/kglb/web.hcl:8:17: unterminated string literal" {
		t.Errorf("Diagnostic.String() = %q", got)
	}
	if got := strings.Join(ds.Lines(), "\n"); got != want {
		t.Errorf("Lines() = %q", got)
	}
}
