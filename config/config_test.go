package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"golang.org/x/sys/unix"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// golden compares got with the file, or rewrites it with -update.
func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (go test -update rewrites it)\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

// loadPath loads a directory or a single file.
func loadPath(p string) (*Config, error) {
	if st, err := os.Stat(p); err == nil && st.IsDir() {
		return Load(p)
	}
	return LoadFiles(p)
}

// TestInvalid loads every broken fixture under testdata/invalid (a file, or
// a directory for problems across files) and compares what kglb validate
// prints with NAME.golden. Every problem must carry a position, the source
// line and a hint.
func TestInvalid(t *testing.T) {
	ents, err := os.ReadDir("testdata/invalid")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		name := e.Name()
		if !e.IsDir() && !strings.HasSuffix(name, ".hcl") {
			continue
		}
		n++
		base := strings.TrimSuffix(name, ".hcl")
		t.Run(base, func(t *testing.T) {
			p := filepath.Join("testdata/invalid", name)
			cfg, err := loadPath(p)
			if err == nil {
				t.Fatalf("loaded without error: %+v", cfg)
			}
			if cfg != nil {
				t.Errorf("a failed load returned a Config")
			}
			var ds Diagnostics
			if !errors.As(err, &ds) {
				t.Fatalf("error %T is not Diagnostics: %v", err, err)
			}
			for _, d := range ds {
				if d.Line == 0 || d.Column == 0 || d.source == "" || d.Hint == "" || d.Summary == "" {
					t.Errorf("diagnostic without position, source line, summary or hint: %+v", d)
				}
				if !strings.HasPrefix(d.File, p) {
					t.Errorf("diagnostic file %q is not under %q", d.File, p)
				}
			}
			if lines := strings.Count(err.Error(), "\n") + 1; lines != len(ds) {
				t.Errorf("Error() has %d lines for %d diagnostics", lines, len(ds))
			}
			var buf bytes.Buffer
			if err := ds.WriteText(&buf); err != nil {
				t.Fatal(err)
			}
			golden(t, filepath.Join("testdata/invalid", base+".golden"), buf.Bytes())
		})
	}
	if n < 40 {
		t.Errorf("only %d fixtures", n)
	}
}

func TestDiagnosticsJSON(t *testing.T) {
	_, err := LoadFiles("testdata/invalid/bad_vip.hcl")
	var ds Diagnostics
	if !errors.As(err, &ds) {
		t.Fatalf("want Diagnostics, got %v", err)
	}
	var buf bytes.Buffer
	if err := ds.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var got []map[string]any
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(ds) {
		t.Fatalf("%d objects for %d diagnostics", len(got), len(ds))
	}
	for _, key := range []string{"file", "line", "column", "end_line", "end_column", "severity", "summary", "detail", "hint"} {
		if _, ok := got[0][key]; !ok {
			t.Errorf("JSON lacks %q: %s", key, buf.Bytes())
		}
	}
	if got[0]["file"] != "testdata/invalid/bad_vip.hcl" || got[0]["line"] != 2.0 || got[0]["column"] != 10.0 || got[0]["severity"] != "error" {
		t.Errorf("first diagnostic = %v", got[0])
	}
}

func TestErrorLines(t *testing.T) {
	_, err := LoadFiles("testdata/invalid/bad_port.hcl")
	want := []string{
		"testdata/invalid/bad_port.hcl:3:10: port 0 is out of range 1..65535",
		"testdata/invalid/bad_port.hcl:8:10: port 70000 is out of range 1..65535",
		"testdata/invalid/bad_port.hcl:13:10: port must be a whole number",
		`testdata/invalid/bad_port.hcl:16:1: service "none" needs a port`,
	}
	if err == nil || err.Error() != strings.Join(want, "\n") {
		t.Errorf("Error() =\n%v\nwant\n%s", err, strings.Join(want, "\n"))
	}
}

// TestExamples loads each example alone and all of them together, and
// compares each decoded Config with testdata/examples/NAME.json.
func TestExamples(t *testing.T) {
	files, err := ListFiles("../examples", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 5 {
		t.Fatalf("only %d examples", len(files))
	}
	if _, err := Load("../examples"); err != nil {
		t.Fatalf("the examples do not load together:\n%v", err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".hcl")
		t.Run(name, func(t *testing.T) {
			cfg, err := LoadFiles(f)
			if err != nil {
				t.Fatalf("%v", err)
			}
			src, _ := os.ReadFile(f)
			out, err := Format(f, src)
			if err != nil || !bytes.Equal(out, src) {
				t.Errorf("%s is not formatted (kglb fmt %s)", f, f)
			}
			cfg.Digest = [32]byte{}
			b, err := json.MarshalIndent(cfg, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			golden(t, filepath.Join("testdata/examples", name+".json"), append(b, '\n'))
		})
	}
}

func TestDefaults(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "a.hcl", `
service "web" {
  vip  = "198.51.100.10"
  port = 80
  real "203.0.113.11" {}
  real "203.0.113.12" { weight = 5 }
  check "http" {}
}`)
	cfg, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Daemon.Source != "" || cfg.Daemon.VIPInterface != "kglb0" || cfg.BGP.Enabled {
		t.Errorf("daemon/bgp defaults: %+v %+v", cfg.Daemon, cfg.BGP)
	}
	s := cfg.Services[0]
	if s.Protocol != TCP || s.Scheduler != SchedWRR || s.Forward != ForwardTunnel || s.Family != IPv4 ||
		s.WhenAllDown != FailOpen || !s.Enabled || s.Drain.String() != "30s" || s.Source != "a.hcl:2" {
		t.Errorf("service defaults: %+v", s)
	}
	if s.Reals[0].Port != 80 || s.Reals[0].Weight != 100 || !s.Reals[0].Enabled || s.Reals[1].Weight != 5 {
		t.Errorf("real defaults: %+v", s.Reals)
	}
	c := s.Checks[0]
	if c.Interval.String() != "5s" || c.Timeout.String() != "2s" || c.Rise != 2 || c.Fall != 3 ||
		c.HTTP.Method != "GET" || c.HTTP.Path != "/" || c.HTTP.MaxBody != 65536 || len(c.HTTP.Status) != 1 {
		t.Errorf("check defaults: %+v", c)
	}
	a := s.Announce
	if !a.Enabled || a.MinHealthy != (Threshold{50, true}) || a.RestoreHealthy != a.MinHealthy {
		t.Errorf("announce defaults: %+v", a)
	}
}

func write(t *testing.T, dir, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestListFilesSkipsTemporaries(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"b.hcl", "a.hcl", ".#a.hcl", "#a.hcl#", "a.hcl~", ".a.hcl.swp", ".hidden.hcl", "notes.txt", "c.hcl.bak"} {
		write(t, dir, n, "")
	}
	got, err := ListFiles(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{filepath.Join(dir, "a.hcl"), filepath.Join(dir, "b.hcl")}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("ListFiles = %v, want %v", got, want)
	}
}

func TestDigest(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "a.hcl", `service "a" {
  vip  = "198.51.100.10"
  port = 80
}
`)
	c1, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	c2, _ := Load(dir)
	if c1.Digest != c2.Digest {
		t.Error("same files, different digests")
	}
	write(t, dir, "a.hcl", `service "a" {
  vip  = "198.51.100.10"
  port = 81
}
`)
	c3, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if c3.Digest == c1.Digest {
		t.Error("edited file, same digest")
	}
	if c3.Services[0].Port != 81 {
		t.Error("a reload returned the old content: the parser cache leaked")
	}
}

func TestLoadMissingDir(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope"))
	var ds Diagnostics
	if !errors.As(err, &ds) || len(ds) != 1 || !strings.Contains(ds[0].Summary, "no such file") {
		t.Errorf("err = %v", err)
	}
}

// TestLoadFilesUnreadable covers the files that cannot be read: the
// problem names the file and the reason, has no position, and fails the
// whole load.
func TestLoadFilesUnreadable(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "big.hcl")
	if err := os.WriteFile(big, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(big, MaxFileSize+1); err != nil { // sparse: no 64 MiB written
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo.hcl")
	if err := unix.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path, want string
	}{
		{"missing", filepath.Join(dir, "nope.hcl"), "cannot read file: no such file or directory"},
		{"directory", dir, "cannot read file: is a directory, not a regular file"},
		{"too large", big, "cannot read file: is larger than the limit of 64 MiB"},
		{"fifo", fifo, "cannot read file: is a FIFO, not a regular file"}, // and no hang
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := LoadFiles(tt.path)
			var ds Diagnostics
			if cfg != nil || !errors.As(err, &ds) || len(ds) != 1 {
				t.Fatalf("LoadFiles = %v, %v", cfg, err)
			}
			if ds[0].File != tt.path || ds[0].Line != 0 || ds[0].Hint == "" {
				t.Errorf("diagnostic = %+v", ds[0])
			}
			if strings.Contains(ds[0].Hint, "check the path") && tt.name != "missing" {
				t.Errorf("hint %q does not say what is wrong", ds[0].Hint)
			}
			if want := tt.path + ": " + tt.want; err.Error() != want {
				t.Errorf("Error() = %q, want %q", err, want)
			}
		})
	}
}

// TestLoadRefusesEntries: every *.hcl entry of the directory is read or
// refused, by Load and by LoadChanged after a good load; editor temporaries
// stay skipped.
func TestLoadRefusesEntries(t *testing.T) {
	const good = "service \"web\" {\n  vip  = \"198.51.100.10\"\n  port = 80\n}\n"
	other := Reader{UID: 4242, GIDs: []uint32{4242}, Name: "user test"}
	tests := []struct {
		name   string
		reader *Reader                               // nil: this process
		make   func(t *testing.T, dir string) string // the entry, made in dir
		want   string                                // in the summary
	}{
		{"dangling symlink", nil, func(t *testing.T, dir string) string {
			return symlink(t, "gone.hcl", filepath.Join(dir, "x.hcl"))
		}, `is a dangling symlink: its target "gone.hcl" does not exist`},
		{"a loaded file swapped for a dangling symlink", nil, func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "a.hcl")
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
			return symlink(t, "..data/a.hcl", p)
		}, `is a dangling symlink: its target "..data/a.hcl" does not exist`},
		{"symlink loop", nil, func(t *testing.T, dir string) string {
			symlink(t, "x.hcl", filepath.Join(dir, "y"))
			return symlink(t, "y", filepath.Join(dir, "x.hcl"))
		}, "is a symlink loop"},
		{"directory", nil, func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "x.hcl")
			if err := os.Mkdir(p, 0o755); err != nil {
				t.Fatal(err)
			}
			return p
		}, "is a directory, not a regular file"},
		{"fifo", nil, func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "x.hcl")
			if err := unix.Mkfifo(p, 0o644); err != nil {
				t.Fatal(err)
			}
			return p
		}, "is a FIFO, not a regular file"},
		{"socket", nil, func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "x.hcl")
			fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(fd)
			if err := unix.Bind(fd, &unix.SockaddrUnix{Name: p}); err != nil {
				t.Fatal(err)
			}
			return p
		}, "is a socket, not a regular file"},
		{"mode 000, even as root", nil, func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "x.hcl")
			write(t, dir, "x.hcl", good)
			if err := os.Chmod(p, 0); err != nil {
				t.Fatal(err)
			}
			return p
		}, "is not readable by this process"},
		{"owner-only, another reader", &other, func(t *testing.T, dir string) string {
			write(t, dir, "x.hcl", good)
			p := filepath.Join(dir, "x.hcl")
			if err := os.Chmod(p, 0o600); err != nil {
				t.Fatal(err)
			}
			return p
		}, "is not readable by user test (uid 4242, gids 4242): mode 0600, owner 0:0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.Chmod(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			write(t, dir, "a.hcl", strings.ReplaceAll(good, "web", "a"))
			write(t, dir, ".#x.hcl", "garbage {") // editor temporaries stay skipped
			write(t, dir, "x.hcl~", "garbage {")
			l := NewLoader()
			if tt.reader != nil {
				l.Reader = *tt.reader
			}
			if _, err := l.Load(dir); err != nil {
				t.Fatal(err)
			}
			p := tt.make(t, dir)
			check := func(what string, cfg *Config, err error) {
				t.Helper()
				var ds Diagnostics
				if cfg != nil || !errors.As(err, &ds) {
					t.Fatalf("%s = %v, %v; want a refusal", what, cfg, err)
				}
				if len(ds) != 1 || ds[0].File != p || !strings.Contains(ds[0].Summary, tt.want) || ds[0].Hint == "" {
					t.Errorf("%s: %s\nwant %s: ...%s... with a hint", what, err, p, tt.want)
				}
			}
			cfg, err := l.LoadChanged(dir, []string{p})
			check("LoadChanged", cfg, err)
			cfg, err = l.Load(dir)
			check("Load", cfg, err)
			_, err = ListFiles(dir, &l.Reader)
			check("ListFiles", nil, err)
		})
	}
}

// TestLoadDirNotSearchable: a directory the reader cannot search is
// refused, not read as empty.
func TestLoadDirNotSearchable(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "a.hcl", "service \"a\" {\n  vip  = \"198.51.100.10\"\n  port = 80\n}\n")
	if err := os.Chmod(dir, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(dir)
	if cfg != nil || err == nil || !strings.Contains(err.Error(), "not readable and searchable by this process") {
		t.Fatalf("Load = %v, %v", cfg, err)
	}
}

func symlink(t *testing.T, target, p string) string {
	t.Helper()
	if err := os.Symlink(target, p); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestTunnelMarkCountWithoutDaemon needs more reals with tunnelled checks
// than the default tunnel_mark_count, too many for a fixture. Without a
// daemon block the problem points at a tunnel = true, beside the missing
// health_source.
func TestTunnelMarkCountWithoutDaemon(t *testing.T) {
	n := int(DefaultDaemon().TunnelMarkCount) + 1
	var b strings.Builder
	b.WriteString("service \"web\" {\n  vip  = \"198.51.100.10\"\n  port = 80\n\n  check \"tcp\" {\n    tunnel = true\n  }\n\n")
	for i := range n {
		fmt.Fprintf(&b, "  real \"10.%d.%d.1\" {}\n", i>>8, i&255)
	}
	b.WriteString("}\n")
	dir := t.TempDir()
	write(t, dir, "web.hcl", b.String())
	_, err := Load(dir)
	var ds Diagnostics
	if !errors.As(err, &ds) || len(ds) != 2 || !strings.Contains(ds[0].Summary, "health_source") {
		t.Fatalf("err = %v", err)
	}
	d := ds[1]
	wantSummary := fmt.Sprintf("%d reals have tunnelled checks but tunnel_mark_count is %d (one mark per real address)", n, n-1)
	wantHint := fmt.Sprintf("add a daemon block with tunnel_mark_count = %d or more", n)
	if d.Line != 6 || d.Column != 5 || d.Summary != wantSummary || d.Hint != wantHint {
		t.Errorf("diagnostic = %+v", d)
	}
}

// TestSyntaxHintFallback: an HCL problem without a hint of its own still
// gets one.
func TestSyntaxHintFallback(t *testing.T) {
	_, err := Format("x.hcl", []byte("message = \"kglb %{HOSTNAME}\"\n"))
	var ds Diagnostics
	if !errors.As(err, &ds) || len(ds) != 1 {
		t.Fatalf("err = %v", err)
	}
	if ds[0].Summary != "invalid template control keyword" || !strings.Contains(ds[0].Hint, "docs/config.md") {
		t.Errorf("diagnostic = %+v", ds[0])
	}
}

func TestEmptyDirIsValid(t *testing.T) {
	cfg, err := Load(t.TempDir())
	if err != nil || len(cfg.Services) != 0 || len(cfg.Files) != 0 {
		t.Errorf("cfg = %+v, err = %v", cfg, err)
	}
}

func TestServicesSorted(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "a.hcl", `
service "zeta" {
  vip  = "198.51.100.10"
  port = 80
}
service "alpha" {
  vip  = "198.51.100.11"
  port = 80
  real "203.0.113.12" {}
  real "203.0.113.11:80" {}
}`)
	cfg, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Services[0].Name != "alpha" || cfg.Services[1].Name != "zeta" {
		t.Errorf("services not sorted: %s, %s", cfg.Services[0].Name, cfg.Services[1].Name)
	}
	if r := cfg.Services[0].Reals; r[0].Addr.String() != "203.0.113.11" {
		t.Errorf("reals not sorted: %v", r)
	}
}

func TestThresholdNeed(t *testing.T) {
	tests := []struct {
		name  string
		t     Threshold
		total int
		want  int
	}{
		{"count", Threshold{Value: 2}, 10, 2},
		{"half of 4", Threshold{Value: 50, Percent: true}, 4, 2},
		{"half of 3 rounds up", Threshold{Value: 50, Percent: true}, 3, 2},
		{"a third of 3", Threshold{Value: 100.0 / 3, Percent: true}, 3, 1},
		{"zero", Threshold{Value: 0, Percent: true}, 3, 0},
		{"all", Threshold{Value: 100, Percent: true}, 7, 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.t.Need(tt.total); got != tt.want {
				t.Errorf("Need(%d) = %d, want %d", tt.total, got, tt.want)
			}
		})
	}
}

func TestFormat(t *testing.T) {
	tests := []struct {
		name, in, want string
		wantErr        bool
	}{
		{"aligns", "service \"a\" {\nvip = \"198.51.100.1\"\n  port=80\n}\n", "service \"a\" {\n  vip  = \"198.51.100.1\"\n  port = 80\n}\n", false},
		{"canonical stays", "service \"a\" {\n  port = 80\n}\n", "service \"a\" {\n  port = 80\n}\n", false},
		{"broken is refused", "service \"a\" {\n", "service \"a\" {\n", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Format("x.hcl", []byte(tt.in))
			if (err != nil) != tt.wantErr || string(got) != tt.want {
				t.Errorf("Format = %q, %v; want %q", got, err, tt.want)
			}
			if err == nil {
				again, _ := Format("x.hcl", got)
				if !bytes.Equal(again, got) {
					t.Errorf("not idempotent: %q", again)
				}
			}
		})
	}
}

// TestFormatRoundTrip strips every example of its layout (indentation and
// alignment) and expects kglb fmt to restore it exactly, and the stripped
// file to load to the same Config.
func TestFormatRoundTrip(t *testing.T) {
	files, _ := filepath.Glob("../examples/*.hcl")
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var ugly []string
			for _, l := range strings.Split(string(src), "\n") {
				ugly = append(ugly, strings.Join(strings.Fields(l), " "))
			}
			out, err := Format(f, []byte(strings.Join(ugly, "\n")))
			if err != nil {
				t.Fatal(err)
			}
			if string(out) != string(src) {
				t.Errorf("fmt of the stripped file differs:\n%s", out)
			}
			dir := t.TempDir()
			write(t, dir, filepath.Base(f), strings.Join(ugly, "\n"))
			a, err1 := LoadFiles(f)
			b, err2 := Load(dir)
			if err1 != nil || err2 != nil {
				t.Fatal(err1, err2)
			}
			a.Digest, b.Digest, a.Files, b.Files = [32]byte{}, [32]byte{}, nil, nil
			ja, _ := json.Marshal(a)
			jb, _ := json.Marshal(b)
			if string(ja) != string(jb) {
				t.Errorf("stripped file loads differently")
			}
		})
	}
}

// A service's description is one line of bounded length, kept as written.
func TestServiceDescription(t *testing.T) {
	svc := func(desc string) string {
		return "service \"web\" {\n  vip         = \"198.51.100.10\"\n  port        = 80\n  description = " + desc + "\n  real \"203.0.113.11\" {}\n}\n"
	}
	dir := t.TempDir()
	write(t, dir, "a.hcl", svc(`"checkout API, team payments"`))
	cfg, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Services[0].Description; got != "checkout API, team payments" {
		t.Errorf("description %q", got)
	}
	for _, bad := range []string{`"two\nlines"`, `"two\u2028lines"`, `"two\u2029paragraphs"`, `"` + strings.Repeat("x", MaxDescription+1) + `"`, `42`} {
		write(t, dir, "a.hcl", svc(bad))
		_, err := Load(dir)
		var ds Diagnostics
		if !errors.As(err, &ds) || len(ds) != 1 || ds[0].Line != 4 || ds[0].Column != 17 || ds[0].Hint == "" {
			t.Errorf("description = %.20s: %v, want one error at 4:17 with a hint", bad, err)
		}
	}
}
