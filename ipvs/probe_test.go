package ipvs

import (
	"errors"
	"os"
	"strings"
	"testing"
)

// TestProbe checks the probe against the kernel it runs on: on the
// development and CI hosts (no IPVS) it must fail with the fix in the
// message, and NewNetlink must refuse to hand out a handle that would
// silently do nothing; in the VM (ip_vs loaded) it must pass.
func TestProbe(t *testing.T) {
	_, statErr := os.Stat("/proc/net/ip_vs")
	has := statErr == nil
	if os.Getenv("KGLB_VM") == "1" && !has {
		t.Fatal("in the VM but /proc/net/ip_vs is missing: the harness did not load ip_vs")
	}
	for _, path := range []string{"", "/proc/self/ns/net"} {
		err := Probe(path)
		t.Logf("Probe(%q): %v", path, err)
		switch {
		case has && err != nil:
			t.Errorf("Probe(%q) on a kernel with IPVS: %v", path, err)
		case !has && err == nil:
			t.Errorf("Probe(%q) on a kernel without IPVS reported nothing", path)
		case !has:
			if !errors.Is(err, ErrNoIPVS) || !strings.Contains(err.Error(), "modprobe ip_vs") {
				t.Errorf("Probe(%q) = %v, want ErrNoIPVS naming `modprobe ip_vs`", path, err)
			}
		}
	}
	if !has {
		if n, err := NewNetlink(""); err == nil {
			n.Close()
			t.Error("NewNetlink succeeded on a kernel without IPVS")
		}
	}
	if err := Probe("/nonexistent/netns"); err == nil || !strings.Contains(err.Error(), "/nonexistent/netns") {
		t.Errorf("Probe of a missing netns path = %v", err)
	}
}

func TestNetmaskConversion(t *testing.T) {
	tests := []struct {
		fam  Family
		bits uint8
	}{{IPv4, 32}, {IPv4, 24}, {IPv4, 0}, {IPv4, 1}, {IPv6, 128}, {IPv6, 64}}
	for _, tt := range tests {
		if got := netmaskFromKernel(tt.fam, netmaskToKernel(tt.fam, tt.bits)); got != tt.bits {
			t.Errorf("%s /%d came back /%d", tt.fam, tt.bits, got)
		}
	}
	if netmaskToKernel(IPv4, 32) != 0xffffffff {
		t.Error("/32 is not 0xffffffff")
	}
}
