package config

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

const (
	loaderDaemon = `daemon {
  health_source = ["192.0.2.10"]
}
`
	loaderBGP = `bgp {
  asn       = 65010
  router_id = "192.0.2.10"

  neighbor "tor-a" {
    address = "192.0.2.1"
    asn     = 65000
  }
}
`
	loaderA = `service "a1" {
  vip  = "198.51.100.10"
  port = 443

  check "tcp" {
    tunnel = true
  }

  real "203.0.113.11" { weight = 10 }
  real "203.0.113.12" { weight = 20 }
}

service "a2" {
  vip  = "198.51.100.10"
  port = 80

  real "203.0.113.11" {}
}
`
	loaderB = `service "b1" {
  vip  = "198.51.100.20"
  port = 443

  announce {
    communities = ["65010:100"]
  }

  real "203.0.113.21" {}
}

service "b2" {
  fwmark = 7
  family = "ipv4"

  real "203.0.113.22" { port = 8080 }
}
`
	loaderC = `service "c1" {
  vip  = "198.51.100.30"
  port = 53
  protocol = "udp"

  real "203.0.113.31" {}
}
`
)

// TestLoaderMatchesLoad runs a list of edits over one directory, in order.
// After each, a Loader that has seen every earlier state must return what a
// fresh Load returns (the same Config, or the same diagnostics in the same
// order, source lines included) while decoding only the files that changed.
func TestLoaderMatchesLoad(t *testing.T) {
	dir := t.TempDir()
	put := func(name, content string) func() {
		return func() { write(t, dir, name, content) }
	}
	del := func(name string) func() {
		return func() {
			if err := os.Remove(filepath.Join(dir, name)); err != nil {
				t.Fatal(err)
			}
		}
	}
	both := func(fs ...func()) func() {
		return func() {
			for _, f := range fs {
				f()
			}
		}
	}
	edit := func(content, old, new string) string {
		if !strings.Contains(content, old) {
			t.Fatalf("edit: %q not found", old)
		}
		return strings.Replace(content, old, new, 1)
	}
	tests := []struct {
		name    string
		edit    func()
		decoded int    // files parsed and decoded
		wantErr string // the error's text, paths relative to the directory; empty: none
	}{
		{"first load", both(put("daemon.hcl", loaderDaemon), put("bgp.hcl", loaderBGP), put("a.hcl", loaderA), put("b.hcl", loaderB)), 4, ""},
		{"nothing changed", func() {}, 0, ""},
		{"same content written again", put("a.hcl", loaderA), 0, ""},
		{"one weight", put("a.hcl", edit(loaderA, "weight = 10", "weight = 11")), 1, ""},
		{"a file added", put("c.hcl", loaderC), 1, ""},
		{"a file deleted", del("c.hcl"), 0, ""},
		{"the deleted file back", put("c.hcl", loaderC), 1, ""},
		{"syntax error", put("b.hcl", edit(loaderB, `port = 443`, `port = `)), 1, "b.hcl:3:10: invalid expression"},
		{"syntax error and an unchanged file with a decode error", put("c.hcl", edit(loaderC, `port = 53`, `port = 0`)), 1, "b.hcl:3:10: invalid expression"},
		{"syntax fixed: the decode error shows", put("b.hcl", loaderB), 1, "c.hcl:3:10: port 0 is out of range 1..65535"},
		{"decode error fixed", put("c.hcl", loaderC), 1, ""},
		{"a service renamed into a duplicate in another file", put("b.hcl", edit(loaderB, `"b1"`, `"a1"`)), 1, `b.hcl:1:9: duplicate service "a1"`},
		{"the other file changed, the duplicate stays", put("a.hcl", loaderA), 1, `b.hcl:1:9: duplicate service "a1"`},
		{"renamed back", put("b.hcl", loaderB), 1, ""},
		{"a shared vip announced differently", put("c.hcl", edit(loaderC, `198.51.100.30`, `198.51.100.20`)), 1, `c.hcl:1:9: service "c1" shares vip 198.51.100.20 with service "b1" but announces it differently`},
		{"shared vip fixed", put("c.hcl", loaderC), 1, ""},
		{"daemon block moved to another file", both(del("daemon.hcl"), put("a.hcl", loaderDaemon+loaderA)), 1, ""},
		{"a second daemon block", put("daemon.hcl", loaderDaemon), 1, `daemon.hcl:1:1: more than one daemon block`},
		{"a second daemon block with errors of its own (not reported)", put("daemon.hcl", `daemon {
  vip_interface = "not an interface"
}
`), 1, `daemon.hcl:1:1: more than one daemon block`},
		{"the first daemon block removed: the second is decoded", put("a.hcl", loaderA), 1, "a.hcl:6:5: a tunnelled check of an IPv4 service needs an IPv4 health_source in the daemon block\n" +
			`daemon.hcl:2:19: vip_interface "not an interface" is not a valid interface name (1 to 15 letters, digits, '-', '_', '.')`},
		{"daemon block fixed", put("daemon.hcl", loaderDaemon), 1, ""},
		{"health_source now a VIP of another file", put("c.hcl", edit(loaderC, `198.51.100.30`, `192.0.2.10`)), 1, `daemon.hcl:2:19: health_source 192.0.2.10 is a VIP`},
		{"VIP moved away", put("c.hcl", loaderC), 1, ""},
		{"daemon block removed: tunnelled checks need a health_source", del("daemon.hcl"), 0, "a.hcl:6:5: a tunnelled check of an IPv4 service needs an IPv4 health_source in the daemon block"},
		{"daemon block back, with too few tunnel marks", put("daemon.hcl", edit(loaderDaemon, "\n}", "\n  tunnel_mark_count = 1\n}")), 1, "daemon.hcl:3:23: 2 reals have tunnelled checks but tunnel_mark_count is 1 (one mark per real address)"},
		{"a second bgp block, beside the daemon's problem", put("c.hcl", loaderBGP+loaderC), 1, "c.hcl:1:1: more than one bgp block\n" +
			"daemon.hcl:3:23: 2 reals have tunnelled checks but tunnel_mark_count is 1 (one mark per real address)"},
		{"both fixed", both(put("c.hcl", loaderC), put("daemon.hcl", loaderDaemon)), 2, ""},
		{"a file renamed: decoded again, under its new name", both(del("b.hcl"), put("d.hcl", loaderB)), 1, ""},
		{"a file emptied", put("d.hcl", ""), 1, ""},
		{"every file deleted", both(del("a.hcl"), del("bgp.hcl"), del("c.hcl"), del("d.hcl"), del("daemon.hcl")), 0, ""},
	}
	l := NewLoader()
	for _, tt := range tests {
		tt.edit()
		got, gotErr := l.Load(dir)
		want, wantErr := Load(dir)
		if d := loadDiff(got, gotErr, want, wantErr); d != "" {
			t.Fatalf("%s: Loader.Load differs from Load: %s", tt.name, d)
		}
		if l.decoded != tt.decoded {
			t.Errorf("%s: decoded %d files, want %d", tt.name, l.decoded, tt.decoded)
		}
		errText := ""
		if gotErr != nil {
			errText = strings.ReplaceAll(gotErr.Error(), dir+string(filepath.Separator), "")
		}
		if errText != tt.wantErr {
			t.Fatalf("%s: error\n%s\nwant\n%s", tt.name, errText, tt.wantErr)
		}
	}
}

// TestLoaderDecodesOnlyChangedFiles edits one weight among 20 files: the
// next Load decodes that file alone and returns the new weight.
func TestLoaderDecodesOnlyChangedFiles(t *testing.T) {
	dir := t.TempDir()
	genConfig(t, dir, 2000)
	l := NewLoader()
	if _, err := l.Load(dir); err != nil {
		t.Fatal(err)
	}
	if l.decoded != 20 {
		t.Fatalf("first load decoded %d files, want 20", l.decoded)
	}
	if _, err := l.Load(dir); err != nil || l.decoded != 0 {
		t.Fatalf("unchanged reload decoded %d files (err %v), want 0", l.decoded, err)
	}
	p := filepath.Join(dir, "svc-00007.hcl")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	write(t, dir, filepath.Base(p), strings.Replace(string(b), "{ weight = 105 }", "{ weight = 7 }", 1))
	cfg, err := l.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if l.decoded != 1 {
		t.Errorf("a one-line edit decoded %d files, want 1", l.decoded)
	}
	s, ok := lookup(cfg, "svc-700")
	if !ok || s.Reals[5].Weight != 7 {
		t.Errorf("svc-700 reals after the edit: %+v", s.Reals)
	}
	want, err := Load(dir)
	if d := loadDiff(cfg, nil, want, err); d != "" {
		t.Error(d)
	}
}

// TestLoaderReadsOnlyChangedFiles: files that stat says are unchanged,
// and were read well after their last change, are not read again; a
// same-size edit, a replaced file and a swapped symlink are.
func TestLoaderReadsOnlyChangedFiles(t *testing.T) {
	dir := t.TempDir()
	genConfig(t, dir, 2000)
	l := NewLoader()
	clock := time.Now()
	l.now = func() time.Time { return clock }
	first, err := l.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	// Just written: every file is read again, however its stat looks.
	if _, err := l.Load(dir); err != nil || l.read != 20 || l.decoded != 0 {
		t.Fatalf("reload within the racy window read %d and decoded %d files (err %v), want 20 and 0", l.read, l.decoded, err)
	}
	clock = clock.Add(2 * racyWindow)
	if _, err := l.Load(dir); err != nil || l.read != 20 {
		t.Fatalf("first reload after the window read %d files (err %v), want 20", l.read, err)
	}
	cfg, err := l.Load(dir)
	if err != nil || l.read != 0 || l.decoded != 0 || cfg.Digest != first.Digest {
		t.Fatalf("unchanged reload read %d and decoded %d files, digest same %v (err %v); want 0, 0, true", l.read, l.decoded, cfg.Digest == first.Digest, err)
	}

	// A same-size edit in place: the change time moves.
	p := filepath.Join(dir, "svc-00007.hcl")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, bytes.Replace(b, []byte("{ weight = 105 }"), []byte("{ weight = 106 }"), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err = l.Load(dir)
	if err != nil || l.read != 1 || l.decoded != 1 {
		t.Fatalf("a same-size edit: read %d, decoded %d (err %v); want 1 and 1", l.read, l.decoded, err)
	}
	if s, _ := lookup(cfg, "svc-700"); s.Reals[5].Weight != 106 {
		t.Errorf("svc-700 reals after the edit: %+v", s.Reals)
	}

	// An editor's atomic save and a ConfigMap's symlink swap: new inodes.
	clock = clock.Add(2 * racyWindow)
	tmp := filepath.Join(dir, ".svc-00008.hcl.tmp")
	b8, err := os.ReadFile(filepath.Join(dir, "svc-00008.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tmp, b8, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "svc-00008.hcl")); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Load(dir); err != nil || l.read != 1 || l.decoded != 0 {
		t.Fatalf("an atomic save of the same content: read %d, decoded %d (err %v); want 1 and 0", l.read, l.decoded, err)
	}
	target := t.TempDir()
	for _, v := range []string{"9", "10"} {
		f := filepath.Join(target, "v"+v+".hcl")
		if err := os.WriteFile(f, []byte(`service "linked" {
  vip  = "198.51.100.1"
  port = 80
  real "192.0.2.`+v+`" {}
}
`), 0o644); err != nil {
			t.Fatal(err)
		}
		link := filepath.Join(dir, "linked.hcl")
		os.Remove(link)
		if err := os.Symlink(f, link); err != nil {
			t.Fatal(err)
		}
		clock = clock.Add(2 * racyWindow)
		cfg, err = l.Load(dir)
		if err != nil {
			t.Fatal(err)
		}
		if s, _ := lookup(cfg, "linked"); len(s.Reals) != 1 || s.Reals[0].Addr.String() != "192.0.2."+v {
			t.Errorf("after the symlink points to %s: reals %+v", f, s.Reals)
		}
	}
	want, err := Load(dir)
	if d := loadDiff(cfg, nil, want, err); d != "" {
		t.Error(d)
	}
}

// TestLoaderConcurrent loads from several goroutines at once; run with
// -race.
func TestLoaderConcurrent(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "a.hcl", loaderA)
	write(t, dir, "daemon.hcl", loaderDaemon)
	want, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	l := NewLoader()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 10 {
				got, err := l.Load(dir)
				if d := loadDiff(got, err, want, nil); d != "" {
					t.Error(d)
					return
				}
			}
		})
	}
	wg.Wait()
}

func lookup(cfg *Config, name string) (Service, bool) {
	for _, s := range cfg.Services {
		if s.Name == name {
			return *s, true
		}
	}
	return Service{}, false
}

// loadDiff says how two load results differ, or returns "" when they are
// deeply equal (the diagnostics' source lines included).
func loadDiff(got *Config, gotErr error, want *Config, wantErr error) string {
	if !reflect.DeepEqual(gotErr, wantErr) {
		return fmt.Sprintf("errors differ:\n--- got\n%v\n--- want\n%v", gotErr, wantErr)
	}
	if got != nil && want != nil {
		// Contents are bytes: nil and empty are the same content (the
		// cache may hold a file's bytes as nil where a read gives empty).
		if !slices.EqualFunc(got.Contents, want.Contents, bytes.Equal) {
			return fmt.Sprintf("contents differ:\n--- got\n%q\n--- want\n%q", got.Contents, want.Contents)
		}
		g, w := *got, *want
		g.Contents, w.Contents = nil, nil
		got, want = &g, &w
	}
	if reflect.DeepEqual(got, want) {
		return ""
	}
	// cmp only to show the difference: DeepEqual above decides.
	return "configs differ (-want +got):\n" + cmp.Diff(want, got, cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{}, netip.AddrPort{}))
}

// TestLoaderLoadChanged follows a directory through the edits a watch
// reports, loading only what each names, and compares every result with a
// fresh Load.
func TestLoaderLoadChanged(t *testing.T) {
	dir := t.TempDir()
	genConfig(t, dir, 2000)
	l := NewLoader()
	clock := time.Now()
	l.now = func() time.Time { return clock }
	if _, err := l.LoadChanged(dir, nil); err != nil { // the first is a full load
		t.Fatal(err)
	}
	if l.read != 20 {
		t.Fatalf("first LoadChanged read %d files, want 20", l.read)
	}
	clock = clock.Add(2 * racyWindow)
	if _, err := l.Load(dir); err != nil {
		t.Fatal(err)
	}
	check := func(step string, read int, changed ...string) *Config {
		t.Helper()
		clock = clock.Add(2 * racyWindow)
		got, err := l.LoadChanged(dir, changed)
		want, wantErr := Load(dir)
		if d := loadDiff(got, err, want, wantErr); d != "" {
			t.Fatalf("%s: %s", step, d)
		}
		if read >= 0 && l.read != read {
			t.Errorf("%s: read %d files, want %d", step, l.read, read)
		}
		return got
	}
	p := func(name string) string { return filepath.Join(dir, name) }
	edit := func(name, from, to string) {
		t.Helper()
		b, err := os.ReadFile(p(name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p(name), bytes.Replace(b, []byte(from), []byte(to), 1), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	edit("svc-00007.hcl", "{ weight = 105 }", "{ weight = 7 }")
	check("an edit", 1, p("svc-00007.hcl"), p("svc-00007.hcl"))
	write(t, dir, "new.hcl", "service \"new\" {\n  vip  = \"198.51.100.99\"\n  port = 80\n  real \"192.0.2.1\" {}\n}\n")
	check("a new file", 1, p("new.hcl"))
	write(t, dir, ".new.hcl.swp", "junk")
	write(t, dir, "new.hcl~", "junk")
	check("an editor's temporary and backup", 0, p(".new.hcl.swp"), p("new.hcl~"))
	if err := os.Rename(p("new.hcl"), p("new.hcl.bak")); err != nil {
		t.Fatal(err)
	}
	check("a file renamed away", 0, p("new.hcl"), p("new.hcl.bak"))
	if err := os.Remove(p("svc-00003.hcl")); err != nil {
		t.Fatal(err)
	}
	check("a file removed", 0, p("svc-00003.hcl"))

	// An edit no event reported is not seen: LoadChanged trusts the watch.
	edit("svc-00004.hcl", "{ weight = 105 }", "{ weight = 8 }")
	if got, err := l.LoadChanged(dir, nil); err != nil {
		t.Fatal(err)
	} else if s, _ := lookup(got, "svc-400"); s.Reals[5].Weight != 105 || l.read != 0 {
		t.Errorf("with no event: svc-400 real 5 at weight %d, %d files read; want the old 105 and none", s.Reals[5].Weight, l.read)
	}
	clock = clock.Add(2 * racyWindow)
	if _, err := l.Load(dir); err != nil { // a Load looks at everything
		t.Fatal(err)
	}

	// A ConfigMap: the files are symlinks through ..data, which is swapped.
	for i, v := range []string{"1", "2"} {
		data := filepath.Join(dir, "..v"+v)
		if err := os.Mkdir(data, 0o755); err != nil {
			t.Fatal(err)
		}
		write(t, data, "cm.hcl", "service \"cm\" {\n  vip  = \"198.51.100.98\"\n  port = 80\n  real \"192.0.2."+v+"\" {}\n}\n")
		if err := os.Symlink("..v"+v, p("..data_tmp")); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(p("..data_tmp"), p("..data")); err != nil {
			t.Fatal(err)
		}
		changed := []string{p("..data_tmp"), p("..data")}
		if i == 0 {
			if err := os.Symlink("..data/cm.hcl", p("cm.hcl")); err != nil {
				t.Fatal(err)
			}
			changed = append(changed, p("cm.hcl"))
		}
		got := check("a ConfigMap swap", -1, changed...)
		if s, _ := lookup(got, "cm"); len(s.Reals) != 1 || s.Reals[0].Addr.String() != "192.0.2."+v {
			t.Errorf("after swap %s: cm reals %+v", v, s.Reals)
		}
	}
	check("a path outside the directory", -1, filepath.Join(t.TempDir(), "x.hcl"))
}

// TestLoaderContents: a Config's Contents are the bytes each file was loaded
// from, whether the load read the file, read it again unchanged, or trusted
// it by its stat and read nothing; an edit the load did not see is not in
// them. They are what Digest covers, so a record of them is the config.
func TestLoaderContents(t *testing.T) {
	dir := t.TempDir()
	c2 := strings.NewReplacer(`"c1"`, `"c2"`, "53", "5353").Replace(loaderC) // another size: stat sees it
	write(t, dir, "a.hcl", loaderB)
	write(t, dir, "b.hcl", loaderC)
	l := NewLoader()
	clock := time.Now()
	l.now = func() time.Time { return clock }
	check := func(step string, cfg *Config, err error, want ...string) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		d := NewDigester()
		for i, f := range cfg.Files {
			d.Add(f, sha256.Sum256(cfg.Contents[i]))
		}
		if len(cfg.Contents) != len(want) || d.Sum() != cfg.Digest {
			t.Fatalf("%s: %d contents for %d files, digest of the contents equal: %v", step, len(cfg.Contents), len(cfg.Files), d.Sum() == cfg.Digest)
		}
		for i, w := range want {
			if string(cfg.Contents[i]) != w {
				t.Errorf("%s: contents of %s:\n%s\nwant\n%s", step, cfg.Files[i], cfg.Contents[i], w)
			}
		}
	}
	cfg, err := l.Load(dir)
	check("first load", cfg, err, loaderB, loaderC)
	clock = clock.Add(2 * racyWindow)
	cfg, err = l.Load(dir) // read again, the same content: the cached decode
	check("read again", cfg, err, loaderB, loaderC)
	cfg, err = l.Load(dir)
	if l.read != 0 {
		t.Fatalf("a settled reload read %d files, want none", l.read)
	}
	check("trusted by stat", cfg, err, loaderB, loaderC)
	write(t, dir, "b.hcl", c2)
	cfg, err = l.LoadChanged(dir, nil) // no event: the edit is not seen
	check("an edit no event named", cfg, err, loaderB, loaderC)
	cfg, err = l.LoadChanged(dir, []string{filepath.Join(dir, "b.hcl")})
	check("the edit named", cfg, err, loaderB, c2)
	cfg, err = LoadFiles(filepath.Join(dir, "b.hcl"))
	check("LoadFiles", cfg, err, c2)
}

// DirStamp changes with what a load would see, and only with that.
func TestDirStamp(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "a.hcl", "a\n")
	before := DirStamp(dir)
	if again := DirStamp(dir); again != before {
		t.Errorf("not stable: %q then %q", before, again)
	}
	write(t, dir, ".a.hcl.swp", "x")
	write(t, dir, "a.hcl~", "x")
	if now := DirStamp(dir); now != before {
		t.Errorf("an editor's temporary and backup changed it: %q, was %q", now, before)
	}
	write(t, dir, "a.hcl", "ab\n")
	after := DirStamp(dir)
	if after == before {
		t.Error("unchanged by a write")
	}
	// An editor's save: the same size, another inode.
	write(t, dir, "a.hcl.new", "ac\n")
	if err := os.Rename(filepath.Join(dir, "a.hcl.new"), filepath.Join(dir, "a.hcl")); err != nil {
		t.Fatal(err)
	}
	if DirStamp(dir) == after {
		t.Error("unchanged by a rename over the file")
	}
	if s := DirStamp(filepath.Join(dir, "none")); !strings.HasPrefix(s, "error: ") {
		t.Errorf("a missing directory: %q", s)
	}
}

// TestLoaderManyFiles: a directory of many files, decoded on every CPU,
// loads as its files loaded one by one in order would, with every
// problem, and a later one-file edit decodes that file alone; run with
// -race.
func TestLoaderManyFiles(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "daemon.hcl", loaderDaemon)
	const n = 4 * parallelMin
	for i := range n {
		write(t, dir, fmt.Sprintf("s%03d.hcl", i), fmt.Sprintf("service \"s%03d\" {\n  vip = \"198.51.100.%d\"\n  port = 80\n  real \"10.0.%d.1\" {}\n}\n", i, i+1, i))
	}
	l := NewLoader()
	cfg, err := l.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Services) != n || l.decoded != n+1 {
		t.Fatalf("%d services from %d decoded files, want %d from %d", len(cfg.Services), l.decoded, n, n+1)
	}
	for i, s := range cfg.Services {
		if want := fmt.Sprintf("s%03d", i); s.Name != want {
			t.Fatalf("service %d is %s, want %s", i, s.Name, want)
		}
	}
	// Two broken files: both reported, in file order.
	write(t, dir, "s010.hcl", "service \"s010\" {\n  vip = \"nope\"\n  port = 80\n}\n")
	write(t, dir, "s050.hcl", "service \"s050\" {\n  vip = \"198.51.100.51\"\n  port = 99999\n}\n")
	_, err = l.Load(dir)
	if err == nil || !strings.Contains(err.Error(), "s010.hcl:2") || !strings.Contains(err.Error(), "s050.hcl:3") ||
		strings.Index(err.Error(), "s010.hcl") > strings.Index(err.Error(), "s050.hcl") {
		t.Fatalf("load with two broken files: %v; want both, s010.hcl first", err)
	}
	if l.decoded != 2 {
		t.Errorf("decoded %d files after two edits, want 2", l.decoded)
	}
}

// A load that fails because one file cannot be read (it vanished, or grew
// past the limit, between its stat and its read) must not leave the next
// LoadChanged trusting the cache of another file that the failed load had
// found changed: the edit it saw would be lost until a full Load.
func TestLoadChangedAfterAFailedReadSeesEarlierEdits(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "a.hcl", loaderA)
	write(t, dir, "b.hcl", loaderB)
	write(t, dir, "daemon.hcl", loaderDaemon)
	l := NewLoader()
	clock := time.Now()
	l.now = func() time.Time { return clock }
	if _, err := l.Load(dir); err != nil {
		t.Fatal(err)
	}
	clock = clock.Add(2 * racyWindow)
	if _, err := l.Load(dir); err != nil { // now trusted by stat
		t.Fatal(err)
	}

	// a.hcl and b.hcl are edited, and b.hcl is replaced and and is gone when the load reads
	// it (the test's clock is read just before each file's read).
	write(t, dir, "a.hcl", strings.Replace(loaderA, "{ weight = 10 }", "{ weight = 11 }", 1))
	b2 := strings.Replace(loaderB, "port = 8080", "port = 8081", 1)
	write(t, dir, "b.hcl", b2)
	clock = clock.Add(2 * racyWindow)
	l.now = func() time.Time { os.Remove(filepath.Join(dir, "b.hcl")); return clock }
	if _, err := l.LoadChanged(dir, []string{filepath.Join(dir, "a.hcl"), filepath.Join(dir, "b.hcl")}); err == nil {
		t.Fatal("the load with b.hcl gone while read succeeded")
	}
	l.now = func() time.Time { return clock }

	// b.hcl is back: the watch names it alone.
	write(t, dir, "b.hcl", b2)
	clock = clock.Add(2 * racyWindow)
	got, err := l.LoadChanged(dir, []string{filepath.Join(dir, "b.hcl")})
	want, wantErr := Load(dir)
	if d := loadDiff(got, err, want, wantErr); d != "" {
		t.Fatal(d)
	}
}
