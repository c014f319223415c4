package config

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// genConfig writes services x 10 reals into dir, 100 services per file,
// each with an http check and an announce block: a large production set.
func genConfig(tb testing.TB, dir string, services int) { genConfigFiles(tb, dir, services, 100) }

// genConfigFiles is genConfig with perFile services per file.
func genConfigFiles(tb testing.TB, dir string, services, perFile int) {
	tb.Helper()
	var b strings.Builder
	flush := func(n int) {
		if b.Len() == 0 {
			return
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("svc-%05d.hcl", n)), []byte(b.String()), 0o644); err != nil {
			tb.Fatal(err)
		}
		b.Reset()
	}
	for i := range services {
		fmt.Fprintf(&b, `service "svc-%d" {
  vip       = "10.%d.%d.%d"
  port      = 443
  scheduler = "mh"
  flags     = ["mh-port"]
  drain     = "30s"

  check "http" {
    path     = "/healthz"
    status   = [200]
    interval = "2s"
    timeout  = "1s"
  }

  announce {
    min_healthy = "50%%"
    communities = ["65010:100"]
  }
`, i, 100+i/65536, i/256%256, i%256)
		for j := range 10 {
			fmt.Fprintf(&b, "  real \"172.%d.%d.%d\" { weight = %d }\n", 16+i/65536, i/256%256, 10+j, 100+j)
		}
		b.WriteString("}\n\n")
		if (i+1)%perFile == 0 {
			flush(i / perFile)
		}
	}
	flush(services / perFile)
}

func benchLoad(b *testing.B, services int) { benchLoadFiles(b, services, 100) }

func benchLoadFiles(b *testing.B, services, perFile int) {
	dir := b.TempDir()
	genConfigFiles(b, dir, services, perFile)
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	alloc0 := ms.TotalAlloc
	for b.Loop() {
		cfg, err := Load(dir)
		if err != nil {
			b.Fatal(err)
		}
		if len(cfg.Services) != services {
			b.Fatalf("%d services", len(cfg.Services))
		}
	}
	// The machine is shared: CPU time (this process, GC included) is a
	// steadier figure than wall time.
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/1000/float64(b.N), "cpu-ms/op")
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(ms.TotalAlloc-alloc0)/float64(b.N)/float64(services), "B/service")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkLoad100 is load + validate of 100 services x 10 reals.
func BenchmarkLoad100(b *testing.B) { benchLoad(b, 100) }

// BenchmarkLoadFiles1000 is load + validate of 1,000 services x 10 reals,
// one service per file, the layout of issue 11's end-to-end benchmark. Its
// bytes per service are what the parser's slabs cost for small files: the
// allocation a daemon's cold start pays before its first write, and its
// heap's high-water mark.
func BenchmarkLoadFiles1000(b *testing.B) { benchLoadFiles(b, 1000, 1) }

// BenchmarkLoad10000 is load + validate of 10,000 services x 10 reals.
func BenchmarkLoad10000(b *testing.B) { benchLoad(b, 10000) }

// BenchmarkLoaderEdit10000 is the reload of a one-line edit (one real's
// weight) among 10,000 services x 10 reals in 100 files, with a Loader that
// loaded the directory before, by Load (the full pass of a SIGHUP or the
// poll) moments after the files were written: every file changed too
// recently for its stat to be trusted, so every one is read and compared,
// and the one file that changed is decoded. (lb's BenchmarkReloadScaling times
// the watch's path, LoadChanged, on settled files.) Writing the file is
// not timed.
func BenchmarkLoaderEdit10000(b *testing.B) {
	const services = 10000
	dir := b.TempDir()
	genConfig(b, dir, services)
	p := filepath.Join(dir, "svc-00042.hcl")
	orig, err := os.ReadFile(p)
	if err != nil {
		b.Fatal(err)
	}
	edited := strings.Replace(string(orig), "{ weight = 100 }", "{ weight = 7 }", 1)
	l := NewLoader()
	if _, err := l.Load(dir); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		content := edited
		if i%2 == 1 {
			content = string(orig)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		cfg, err := l.Load(dir)
		if err != nil {
			b.Fatal(err)
		}
		if len(cfg.Services) != services || l.decoded != 1 {
			b.Fatalf("%d services, %d files decoded", len(cfg.Services), l.decoded)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/edit")
	// CPU time includes the untimed writes, a few microseconds each.
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/1000/float64(b.N), "cpu-ms/op")
}

// rssChildEnv, set to a file, makes the test binary load it as kglb
// validate does and exit (TestMain), in a process of its own whose peak
// RSS BenchmarkValidateRSS reads.
const rssChildEnv = "KGLB_RSS_CHILD"

func TestMain(m *testing.M) {
	if p := os.Getenv(rssChildEnv); p != "" {
		if _, err := NewLoader().LoadFiles(p); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// BenchmarkValidateRSS is the memory that validating a large valid file
// takes: the peak RSS of a process that loads one file of 20 MB (about
// 260,000 small services, the shape: 760 MB, 38 MB per MB, before),
// less that of the same process loading a one-service file, per MB of the
// file. RSS rather than heap, because RSS is what the issue measured and
// what the OOM killer and a unit's MemoryMax count: it includes the garbage
// the collector has not returned yet. The 2 MB row beside it shows the
// cost per MB does not grow with the size.
//
// Target: under 25 MB of RSS per MB. A load keeps the file and the decoded
// Config, and per service of ~80 bytes of text that is a Service (448
// bytes), its serviceMeta of positions (264), a Real (72) and their
// strings: about 10 bytes per byte of text. While a file is decoded its
// parse tree (~3 per byte) is alive too, and the collector lets the heap
// grow to twice what is live before it collects (GOGC=100): 2 x (1 + 10 +
// ~1.5 on average for the tree) = 25. Less needs a smaller Config, not a
// smaller parser.
func BenchmarkValidateRSS(b *testing.B) {
	if testing.Short() {
		b.Skip("a 20 MB file")
	}
	dir := b.TempDir()
	run := func(p string) int64 {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), rssChildEnv+"="+p)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("child: %v\n%s", err, out)
		}
		return cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss << 10 // KiB on Linux
	}
	gen := func(name string, mb int) (string, float64) {
		var buf strings.Builder
		for i := 0; buf.Len() < mb<<20; i++ {
			fmt.Fprintf(&buf, "service \"s%d\" {\n  vip  = \"10.%d.%d.%d\"\n  port = 80\n  real \"172.16.%d.%d\" {}\n}\n", i, 64+i>>16, i>>8&255, i&255, i>>8&255, i&255)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(buf.String()), 0o644); err != nil {
			b.Fatal(err)
		}
		return p, float64(buf.Len()) / (1 << 20)
	}
	small, _ := gen("small.hcl", 0)
	for _, mb := range []int{2, 20} {
		b.Run(fmt.Sprintf("mb=%d", mb), func(b *testing.B) {
			p, size := gen(fmt.Sprintf("big%d.hcl", mb), mb)
			var base, big int64
			for b.Loop() {
				base, big = run(small), run(p)
			}
			b.ReportMetric(float64(big-base)/(1<<20)/size, "rss-MB/MB")
			b.ReportMetric(float64(big)/(1<<20), "rss-MB")
		})
	}
}
