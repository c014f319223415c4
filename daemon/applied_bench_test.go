package daemon

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kglb/kglb/config"
	"github.com/kglb/kglb/internal/atomicfile"
)

// BenchmarkAppliedSave is the record a cold start at 1,000 services (one
// file each, 10 reals) makes after its first pass, on the disk that holds
// the test's temporary directory (KGLB_BENCH_DIR to choose another): the
// daemon's saveApplied (write every file as loaded, one syncfs), beside the
// two ways it could sync instead, as baselines of the sync step alone: an
// fsync per file as it is written (what it did before), and every file
// written first, then an fsync per file. cpu-ms/op is the process's CPU per record.
func BenchmarkAppliedSave(b *testing.B) {
	const n = 1000
	root := os.Getenv("KGLB_BENCH_DIR")
	if root == "" {
		root = b.TempDir()
	}
	dir, err := os.MkdirTemp(root, "applied-bench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	cfgDir, state := filepath.Join(dir, "etc"), filepath.Join(dir, "state")
	for _, d := range []string{cfgDir, state} {
		if err := os.Mkdir(d, 0o755); err != nil {
			b.Fatal(err)
		}
	}
	files := map[string]string{}
	for i := range n {
		var b strings.Builder
		fmt.Fprintf(&b, "service \"svc-%04d\" {\n  vip  = \"198.51.100.1\"\n  port = %d\n", i, 1000+i)
		for r := range 10 {
			fmt.Fprintf(&b, "  real \"203.0.113.%d\" {}\n", r+1)
		}
		b.WriteString("  check \"tcp\" {\n    interval = \"1s\"\n    timeout  = \"500ms\"\n  }\n}\n")
		files[fmt.Sprintf("svc-%04d.hcl", i)] = b.String()
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(cfgDir, name), []byte(content), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	cfg, err := config.Load(cfgDir)
	if err != nil {
		b.Fatal(err)
	}
	cfg.Daemon.StateDir = state
	run := func(b *testing.B, save func() error) {
		cpu0 := benchCPU()
		for b.Loop() {
			if err := save(); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(benchCPU()-cpu0)/1e6/float64(b.N), "cpu-ms/op")
	}
	b.Run("syncfs", func(b *testing.B) {
		run(b, func() error { return saveApplied(cfg, cfgDir, time.Now()) })
	})
	copyTo := func(syncEach, syncAfter bool) error {
		tmp := filepath.Join(state, "baseline")
		if err := os.RemoveAll(tmp); err != nil {
			return err
		}
		if err := os.Mkdir(tmp, 0o750); err != nil {
			return err
		}
		var written []*os.File
		defer func() {
			for _, f := range written {
				f.Close()
			}
		}()
		for i, p := range cfg.Files {
			f, err := os.OpenFile(filepath.Join(tmp, filepath.Base(p)), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
			if err != nil {
				return err
			}
			written = append(written, f)
			if _, err := f.Write(cfg.Contents[i]); err != nil {
				return err
			}
			if syncEach {
				if err := f.Sync(); err != nil {
					return err
				}
			}
		}
		if syncAfter {
			for _, f := range written {
				if err := f.Sync(); err != nil {
					return err
				}
			}
		}
		return atomicfile.SyncDir(tmp)
	}
	b.Run("fsync-each", func(b *testing.B) { run(b, func() error { return copyTo(true, false) }) })
	b.Run("write-all-then-fsync-each", func(b *testing.B) { run(b, func() error { return copyTo(false, true) }) })
}

func benchCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
