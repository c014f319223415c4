package main

import (
	"bytes"
	"encoding/json"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func runCmd(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return code, o.String(), e.String()
}

func TestExitCodes(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want int
	}{
		{"no command", nil, exitUsage},
		{"unknown command", []string{"frobnicate"}, exitUsage},
		{"help", []string{"help"}, exitOK},
		{"version", []string{"version"}, exitOK},
		{"version with args", []string{"version", "x"}, exitUsage},
		{"validate examples", []string{"validate", "../../examples"}, exitOK},
		{"validate one example", []string{"validate", "../../examples/quickstart.hcl"}, exitOK},
		{"validate invalid", []string{"validate", "../../config/testdata/invalid/bad_vip.hcl"}, exitInvalid},
		{"validate invalid dir", []string{"validate", "../../config/testdata/invalid/duplicate_service"}, exitInvalid},
		{"validate missing", []string{"validate", "/nonexistent/kglb"}, exitInvalid},
		{"validate bad flag", []string{"validate", "--bogus"}, exitUsage},
		{"validate json invalid", []string{"validate", "--json", "../../config/testdata/invalid/bad_vip.hcl"}, exitInvalid},
		{"validate json valid", []string{"validate", "-json", "../../examples"}, exitOK},
		{"validate json after the path", []string{"validate", "../../config/testdata/invalid/bad_vip.hcl", "--json"}, exitInvalid},
		{"validate bad flag after the path", []string{"validate", "../../examples", "--bogus"}, exitUsage},
		{"validate -- then a dash path", []string{"validate", "--", "-nonexistent.hcl"}, exitInvalid},
		{"fmt check examples", []string{"fmt", "-check", "../../examples"}, exitOK},
		{"fmt check after the path", []string{"fmt", "../../examples", "-check"}, exitOK},
		{"fmt bad flag", []string{"fmt", "-x"}, exitUsage},
		{"fmt broken file", []string{"fmt", "-check", "../../config/testdata/invalid/syntax_unclosed.hcl"}, exitInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if code, o, e := runCmd(tt.args...); code != tt.want {
				t.Errorf("kglb %s = %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(tt.args, " "), code, tt.want, o, e)
			}
		})
	}
}

func TestValidateSummary(t *testing.T) {
	_, out, _ := runCmd("validate", "../../examples")
	if !strings.HasPrefix(out, "valid: ") || !strings.Contains(out, "2 BGP neighbors") || !strings.HasSuffix(out, " files\n") {
		t.Errorf("summary = %q", out)
	}
}

// TestValidateOutput checks that kglb validate prints the rich form that
// config's golden files hold, then a count.
func TestValidateOutput(t *testing.T) {
	fixture := "../../config/testdata/invalid/unknown_attribute.hcl"
	_, out, _ := runCmd("validate", fixture)
	golden, err := os.ReadFile("../../config/testdata/invalid/unknown_attribute.golden")
	if err != nil {
		t.Fatal(err)
	}
	want := strings.ReplaceAll(string(golden), "testdata/invalid/", "../../config/testdata/invalid/") + "\ninvalid: 2 errors\n"
	if out != want {
		t.Errorf("output:\n%s\nwant:\n%s", out, want)
	}
}

func TestValidateJSON(t *testing.T) {
	code, out, _ := runCmd("validate", "--json", "../../config/testdata/invalid/bad_port.hcl")
	var ds []struct {
		File      string `json:"file"`
		Line      int    `json:"line"`
		Column    int    `json:"column"`
		EndLine   int    `json:"end_line"`
		EndColumn int    `json:"end_column"`
		Severity  string `json:"severity"`
		Summary   string `json:"summary"`
		Detail    string `json:"detail"`
		Hint      string `json:"hint"`
	}
	if err := json.Unmarshal([]byte(out), &ds); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if code != exitInvalid || len(ds) != 4 || ds[0].Line != 3 || ds[0].Column != 10 || ds[0].Severity != "error" || ds[0].Hint == "" {
		t.Errorf("code %d, diagnostics %+v", code, ds)
	}
	_, out, _ = runCmd("validate", "--json", "../../examples")
	if strings.TrimSpace(out) != "[]" {
		t.Errorf("valid config JSON = %q, want []", out)
	}
}

func TestFmt(t *testing.T) {
	dir := t.TempDir()
	ugly := "service \"a\" {\nvip = \"198.51.100.1\"\n  port=80\n}\n"
	pretty := "service \"a\" {\n  vip  = \"198.51.100.1\"\n  port = 80\n}\n"
	p := filepath.Join(dir, "a.hcl")
	if err := os.WriteFile(p, []byte(ugly), 0o640); err != nil {
		t.Fatal(err)
	}

	code, out, _ := runCmd("fmt", "-check", dir)
	if code != exitInvalid || out != p+"\n" {
		t.Errorf("fmt -check = %d %q", code, out)
	}
	code, out, _ = runCmd("fmt", "-diff", dir)
	wantDiff := "--- " + p + "\n+++ " + p + "\n@@ -1,4 +1,4 @@\n service \"a\" {\n-vip = \"198.51.100.1\"\n-  port=80\n+  vip  = \"198.51.100.1\"\n+  port = 80\n }\n"
	if code != exitOK || out != wantDiff {
		t.Errorf("fmt -diff = %d\n%s\nwant\n%s", code, out, wantDiff)
	}
	if b, _ := os.ReadFile(p); string(b) != ugly {
		t.Error("fmt -diff wrote the file")
	}
	code, out, _ = runCmd("fmt", dir)
	if code != exitOK || out != p+"\n" {
		t.Errorf("fmt = %d %q", code, out)
	}
	b, _ := os.ReadFile(p)
	if string(b) != pretty {
		t.Errorf("formatted file = %q", b)
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o640 {
		t.Errorf("mode %v not kept", st.Mode().Perm())
	}
	code, out, _ = runCmd("fmt", "-check", dir)
	if code != exitOK || out != "" {
		t.Errorf("second fmt -check = %d %q", code, out)
	}
}

func TestUnifiedDiff(t *testing.T) {
	tests := []struct {
		name, a, b, want string
	}{
		{"equal", "x\n", "x\n", ""},
		{"append", "a\n", "a\nb\n", "--- f\n+++ f\n@@ -1 +1,2 @@\n a\n+b\n"},
		{"from empty", "", "a\n", "--- f\n+++ f\n@@ -0,0 +1 @@\n+a\n"},
		{"two hunks", "1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n11\n", "1\nX\n3\n4\n5\n6\n7\n8\n9\nY\n11\n",
			"--- f\n+++ f\n@@ -1,5 +1,5 @@\n 1\n-2\n+X\n 3\n 4\n 5\n@@ -7,5 +7,5 @@\n 7\n 8\n 9\n-10\n+Y\n 11\n"},
		{"no newline", "a", "b", "--- f\n+++ f\n@@ -1 +1 @@\n-a\n\\ No newline at end of file\n+b\n\\ No newline at end of file\n"},
		{"newline added", "a\nb", "a\nb\n", "--- f\n+++ f\n@@ -1,2 +1,2 @@\n a\n-b\n\\ No newline at end of file\n+b\n"},
	}
	patch, err := exec.LookPath("patch")
	if err != nil && os.Getenv("CI") == "true" {
		t.Fatalf("patch(1) is needed to apply the diffs (apt-get install patch): %v", err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := string(unifiedDiff("f", []byte(tt.a), []byte(tt.b)))
			if got != tt.want {
				t.Errorf("got\n%s\nwant\n%s", got, tt.want)
			}
			if got == "" || patch == "" {
				return
			}
			// What fmt -diff prints must be what patch(1) applies.
			f := filepath.Join(t.TempDir(), "f")
			if err := os.WriteFile(f, []byte(tt.a), 0o600); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(patch, "-s", f)
			cmd.Stdin = strings.NewReader(got)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("patch: %v\n%s", err, out)
			}
			if b, _ := os.ReadFile(f); string(b) != tt.b {
				t.Errorf("patched file = %q, want %q", b, tt.b)
			}
		})
	}
}

// TestNoHCLImports keeps HCL inside package config: every other package of
// the module gets plain typed values.
func TestNoHCLImports(t *testing.T) {
	root := "../.."
	checked := 0
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); path != root && (strings.HasPrefix(n, ".") || n == "testdata" || n == "config") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		pf, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		checked++
		for _, imp := range pf.Imports {
			if p := strings.Trim(imp.Path.Value, `"`); strings.HasPrefix(p, "github.com/hashicorp/hcl") || strings.HasPrefix(p, "github.com/zclconf/go-cty") {
				t.Errorf("%s imports %s; only package config may use HCL", path, p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 20 {
		t.Errorf("checked only %d Go files; is the walk rooted at the module?", checked)
	}
}

// TestFmtKeepsFile: fmt writes the content and nothing else about the
// file changes: a symlink stays a symlink (its target is written), the
// owner, group and mode stay, and hard links stay linked.
func TestFmtKeepsFile(t *testing.T) {
	const ugly = "service \"a\" {\nvip = \"198.51.100.1\"\n  port=80\n}\n"
	const pretty = "service \"a\" {\n  vip  = \"198.51.100.1\"\n  port = 80\n}\n"
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string) (arg, target string) // the fmt argument and the file written
		check func(t *testing.T, dir, arg, target string)
	}{
		{"symlink", func(t *testing.T, dir string) (string, string) {
			target := writeFmt(t, dir, "real.conf", ugly, 0o644)
			arg := filepath.Join(dir, "a.hcl")
			if err := os.Symlink("real.conf", arg); err != nil {
				t.Fatal(err)
			}
			return arg, target
		}, func(t *testing.T, dir, arg, target string) {
			if l, err := os.Readlink(arg); err != nil || l != "real.conf" {
				t.Errorf("symlink = %q, %v; want it kept", l, err)
			}
		}},
		{"owner, group and mode", func(t *testing.T, dir string) (string, string) {
			p := writeFmt(t, dir, "a.hcl", ugly, 0o640)
			if err := os.Chown(p, 4242, 4343); err != nil {
				t.Fatal(err)
			}
			return p, p
		}, func(t *testing.T, dir, arg, target string) {
			var st unix.Stat_t
			if err := unix.Stat(target, &st); err != nil {
				t.Fatal(err)
			}
			if st.Uid != 4242 || st.Gid != 4343 || st.Mode&0o7777 != 0o640 {
				t.Errorf("owner %d:%d mode %04o; want 4242:4343 0640", st.Uid, st.Gid, st.Mode&0o7777)
			}
		}},
		{"hard links", func(t *testing.T, dir string) (string, string) {
			p := writeFmt(t, dir, "a.hcl", ugly, 0o600)
			if err := os.Link(p, filepath.Join(dir, "b.conf")); err != nil {
				t.Fatal(err)
			}
			return p, p
		}, func(t *testing.T, dir, arg, target string) {
			if b, _ := os.ReadFile(filepath.Join(dir, "b.conf")); string(b) != pretty {
				t.Errorf("the other link reads %q; want the formatted content", b)
			}
			var st unix.Stat_t
			if err := unix.Stat(target, &st); err != nil || st.Nlink != 2 {
				t.Errorf("links = %d, %v; want 2", st.Nlink, err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			arg, target := tt.setup(t, dir)
			if code, out, errOut := runCmd("fmt", arg); code != exitOK || out != arg+"\n" {
				t.Fatalf("fmt = %d %q %q", code, out, errOut)
			}
			if b, _ := os.ReadFile(target); string(b) != pretty {
				t.Errorf("%s = %q; want it formatted", target, b)
			}
			tt.check(t, dir, arg, target)
			if ents, _ := os.ReadDir(dir); len(ents) > 2 {
				t.Errorf("left behind: %v", ents)
			}
		})
	}
}

// TestFmtRefuses: fmt writes nothing it could not parse, and refuses what
// is not a regular file without blocking on it.
func TestFmtRefuses(t *testing.T) {
	dir := t.TempDir()
	broken := writeFmt(t, dir, "broken.hcl", "service \"a\" {\nvip = (((\n", 0o644)
	deep := writeFmt(t, dir, "deep.hcl", "a = "+strings.Repeat("(\n", 100000), 0o644)
	fifo := filepath.Join(dir, "fifo.hcl")
	if err := unix.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct{ name, path, want string }{
		{"syntax error", broken, "broken.hcl:3:1"},
		{"deep nesting", deep, "nesting deeper than the limit of 32 levels"},
		{"fifo", fifo, "is a FIFO, not a regular file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var before []byte
			if tt.name != "fifo" { // reading it would block
				before, _ = os.ReadFile(tt.path)
			}
			code, out, errOut := runCmd("fmt", tt.path)
			if code != exitInvalid || out != "" || !strings.Contains(errOut, tt.want) {
				t.Errorf("fmt = %d %q %q; want exit 1 and %q", code, out, errOut, tt.want)
			}
			if tt.name != "fifo" {
				if after, _ := os.ReadFile(tt.path); !bytes.Equal(after, before) {
					t.Error("fmt wrote a file it could not parse")
				}
			}
			code, out, _ = runCmd("validate", tt.path)
			if code != exitInvalid || !strings.Contains(out, tt.want) {
				t.Errorf("validate = %d %q; want exit 1 and %q", code, out, tt.want)
			}
		})
	}
}

func writeFmt(t *testing.T, dir, name, content string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestValidateReadability: validate, run as root, refuses the files the
// daemon (without CAP_DAC_OVERRIDE) could not read, and says whose
// credentials it judged with.
func TestValidateReadability(t *testing.T) {
	const svc = "service \"a\" {\n  vip  = \"198.51.100.1\"\n  port = 80\n}\n"
	want := "is not readable by " + validateReader().String()
	tests := []struct {
		name  string
		mode  os.FileMode
		owner int
		ok    bool
	}{
		{"mode 000", 0, 0, false},
		{"another user's 0600", 0o600, 4242, false},
		{"another user's 0644", 0o644, 4242, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.Chmod(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			p := writeFmt(t, dir, "a.hcl", svc, tt.mode)
			if err := os.Chown(p, tt.owner, tt.owner); err != nil {
				t.Fatal(err)
			}
			code, out, _ := runCmd("validate", dir)
			if tt.ok {
				if code != exitOK {
					t.Errorf("validate = %d %q; want valid", code, out)
				}
				return
			}
			if code != exitInvalid || !strings.Contains(out, p+": error: cannot read file: "+want) || !strings.Contains(out, "hint: make it readable by") {
				t.Errorf("validate = %d %q; want exit 1 and %q", code, out, want)
			}
		})
	}
}

// TestValidateRefusesFIFOPasswordFile: a password_file that is not a
// regular file (here a FIFO with a mode the secret check accepts) is
// refused by validate, as by the daemon's load, instead of passing
// validate and then hanging the daemon, whose reload reads the password
// files to tell a rotated key.
func TestValidateRefusesFIFOPasswordFile(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(t.TempDir(), "tor-a.secret")
	if err := unix.Mkfifo(fifo, 0o640); err != nil {
		t.Fatal(err)
	}
	writeFmt(t, dir, "kglb.hcl", "bgp {\n  asn       = 65010\n  router_id = \"192.0.2.10\"\n  neighbor \"tor-a\" {\n    address       = \"192.0.2.1\"\n    asn           = 65000\n    password_file = \""+fifo+"\"\n  }\n}\n", 0o644)
	code, out, errOut := runCmd("validate", dir)
	if code != exitInvalid || !strings.Contains(out, "is a FIFO, not a regular file") {
		t.Errorf("validate = %d\nstdout: %s\nstderr: %s\nwant exit 1 and the FIFO named", code, out, errOut)
	}
}
