//go:build vmtest

package daemon

import (
	"context"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/kglb/kglb/config"
	"github.com/kglb/kglb/examples"
	"github.com/kglb/kglb/internal/nstest"
	mobyipvs "github.com/moby/ipvs"
)

// daemonOverride drops the attributes the test sets itself from an
// example's daemon block; exampleDaemon is what it sets instead.
var daemonOverride = regexp.MustCompile(`(?m)^\s*(state_dir|stats_address|stop_hold|on_stop)\s*=.*$`)

var passwordFile = regexp.MustCompile(`password_file\s*=\s*"([^"]*)"`)

const exampleDaemon = `  state_dir     = %q
  stats_address = %q
  stop_hold     = "0s"
  on_stop       = "cleanup"
`

// TestDaemonServesExamples runs `kglb run` on every shipped example, each in
// a network namespace of its own: the daemon creates every service of the
// example in the kernel, answers /status for each, and stops cleaning up.
// The VM has no network card and the namespaces no routes, so the
// examples' health checks and BGP sessions reach nothing outside.
func TestDaemonServesExamples(t *testing.T) {
	names, err := fs.Glob(examples.FS, "*.hcl")
	if err != nil || len(names) < 4 {
		t.Fatalf("examples: %v, %v", names, err)
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			src, err := fs.ReadFile(examples.FS, name)
			if err != nil {
				t.Fatal(err)
			}
			dir, state := t.TempDir(), t.TempDir()
			override := fmt.Sprintf(exampleDaemon, state, statsAddr)
			text := string(src)
			if strings.Contains(text, "\ndaemon {") || strings.HasPrefix(text, "daemon {") {
				text = daemonOverride.ReplaceAllString(text, "")
				text = strings.Replace(text, "daemon {\n", "daemon {\n"+override, 1)
			} else {
				text += "\ndaemon {\n" + override + "}\n"
			}
			// Password files move into the test's directory, with a secret.
			text = passwordFile.ReplaceAllStringFunc(text, func(m string) string {
				p := filepath.Join(dir, filepath.Base(passwordFile.FindStringSubmatch(m)[1]))
				if err := os.WriteFile(p, []byte("example-secret\n"), 0o600); err != nil {
					t.Fatal(err)
				}
				return fmt.Sprintf("password_file = %q", p)
			})
			if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
			cfg, err := config.Load(dir)
			if err != nil {
				t.Fatalf("the example with the test's daemon settings: %v", err)
			}

			ns := nstest.New(t)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- Run(ctx, Options{ConfigDir: dir, LogLevel: "warn", NetNS: ns.Path}) }()
			stopped := false
			stop := func() {
				if stopped {
					return
				}
				stopped = true
				cancel()
				if err := <-done; err != nil {
					t.Errorf("daemon on %s: %v", name, err)
				}
			}
			defer stop()

			want := map[string]bool{}
			for _, s := range cfg.Services {
				if s.Enabled {
					want[s.Endpoint()] = true
				}
			}
			waitFor(t, "every service of "+name+" in the kernel", func() bool {
				got := kernelEndpoints(t, ns.Path)
				for ep := range want {
					if !got[ep] {
						return false
					}
				}
				return true
			})
			// The engine publishes /status at the end of the pass that wrote
			// the kernel, so the listing may trail the kernel by a moment.
			var st Status
			listed := map[string]bool{}
			waitFor(t, "/status listing every service of "+name, func() bool {
				var err error
				if st, err = Fetch(statsAddr); err != nil {
					return false
				}
				clear(listed)
				for _, s := range st.Services {
					listed[s.Name] = true
				}
				for _, s := range cfg.Services {
					if !listed[s.Name] {
						return false
					}
				}
				return true
			})
			if st.Error != "" {
				t.Errorf("/status reports %q", st.Error)
			}

			stop()
			if left := kernelEndpoints(t, ns.Path); len(left) != 0 {
				t.Errorf("on_stop = cleanup left %v in the kernel", left)
			}
		})
	}
}

// kernelEndpoints lists the IPVS services of the namespace at path, named
// as config.Service.Endpoint names them.
func kernelEndpoints(t *testing.T, path string) map[string]bool {
	t.Helper()
	h, err := mobyipvs.New(path)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	svcs, err := h.GetServices()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, s := range svcs {
		if s.FWMark != 0 {
			fam := config.IPv4
			if s.AddressFamily == syscall.AF_INET6 {
				fam = config.IPv6
			}
			out[fmt.Sprintf("fwmark/%d/%s", s.FWMark, fam)] = true
			continue
		}
		proto := map[uint16]config.Protocol{syscall.IPPROTO_TCP: config.TCP, syscall.IPPROTO_UDP: config.UDP, syscall.IPPROTO_SCTP: config.SCTP}[s.Protocol]
		addr, _ := netip.AddrFromSlice(s.Address)
		out[fmt.Sprintf("%s/%s", proto, netip.AddrPortFrom(addr.Unmap(), s.Port))] = true
	}
	return out
}
