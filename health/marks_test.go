package health

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"testing"
)

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func marksString(m map[netip.Addr]uint32) string {
	var parts []string
	for a, mk := range m {
		parts = append(parts, fmt.Sprintf("%s=%d", a, mk))
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

func TestMarksSync(t *testing.T) {
	// Each step syncs a set of reals and checks the whole allocation.
	steps := []struct {
		name    string
		reals   []netip.Addr
		want    string
		wantErr bool
	}{
		{"first set, address order", addrs("10.0.0.2", "10.0.0.1"), "10.0.0.1=100 10.0.0.2=101", false},
		{"reload, same reals: same marks", addrs("10.0.0.1", "10.0.0.2", "10.0.0.1"), "10.0.0.1=100 10.0.0.2=101", false},
		{"one goes, one comes: the freed mark is not reused at once", addrs("10.0.0.2", "10.0.0.3"), "10.0.0.2=101 10.0.0.3=102", false},
		{"wrap around to the freed mark", addrs("10.0.0.2", "10.0.0.3", "10.0.0.4", "2001:db8::1"), "10.0.0.2=101 10.0.0.3=102 10.0.0.4=103 2001:db8::1=100", false},
		{"exhausted: the rest keep theirs", addrs("10.0.0.2", "10.0.0.3", "10.0.0.4", "2001:db8::1", "10.0.0.9"), "10.0.0.2=101 10.0.0.3=102 10.0.0.4=103 2001:db8::1=100", true},
		{"all gone", nil, "", false},
	}
	m, err := NewMarks(100, 4)
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range steps {
		got, err := m.Sync(st.reals)
		if (err != nil) != st.wantErr || (err != nil && !errors.Is(err, ErrMarksExhausted)) {
			t.Errorf("%s: error %v, want error %v", st.name, err, st.wantErr)
		}
		if s := marksString(got); s != st.want {
			t.Errorf("%s: marks %q, want %q", st.name, s, st.want)
		}
		if len(m.byAddr) != len(got) {
			t.Errorf("%s: %d marks held, want %d", st.name, len(m.byAddr), len(got))
		}
	}
}

func TestMarksRestore(t *testing.T) {
	m, _ := NewMarks(1000, 10)
	a, b := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	if err := m.Restore(a, 1005); err != nil {
		t.Fatal(err)
	}
	if err := m.Restore(b, 1005); err == nil {
		t.Error("restore of a taken mark accepted")
	}
	if err := m.Restore(b, 1010); err == nil {
		t.Error("restore outside the range accepted")
	}
	// b's mark comes after a's, the highest restored: those below may
	// have been freed just before the restart.
	got, _ := m.Sync(addrs("10.0.0.1", "10.0.0.2"))
	if got[a] != 1005 || got[b] != 1006 {
		t.Errorf("after restore: %s, want 10.0.0.1=1005 10.0.0.2=1006", marksString(got))
	}
	if err := m.Restore(netip.MustParseAddr("::ffff:10.0.0.3"), 1007); err != nil {
		t.Fatal(err)
	}
	if mk, ok := m.byAddr[netip.MustParseAddr("10.0.0.3")]; !ok || mk != 1007 {
		t.Errorf("restore of the v4-mapped form: held as %d %v, want 10.0.0.3 at 1007", mk, ok)
	}
}

func TestNewMarksRejectsBadRanges(t *testing.T) {
	for _, r := range [][2]uint32{{0, 10}, {10, 0}, {^uint32(0) - 1, 5}} {
		if _, err := NewMarks(r[0], r[1]); err == nil {
			t.Errorf("range %v accepted", r)
		}
	}
}

// TestNewMarksTopOfRange: a range that ends at the largest fwmark
// (4294967295) is one config.Load accepts, so the engine must too.
func TestNewMarksTopOfRange(t *testing.T) {
	for _, r := range [][2]uint32{{^uint32(0), 1}, {1 << 31, 1 << 31}, {^uint32(0) - 16383, 16384}} {
		m, err := NewMarks(r[0], r[1])
		if err != nil {
			t.Errorf("range base %d count %d: %v", r[0], r[1], err)
			continue
		}
		if err := m.Restore(addrs("10.0.0.1")[0], ^uint32(0)); err != nil {
			t.Errorf("range base %d count %d: restore of the top mark: %v", r[0], r[1], err)
		}
	}
}

// TestMarksAvoid: a mark someone else's fwmark service uses is taken from
// the real that holds it at the next Sync and handed to none.
func TestMarksAvoid(t *testing.T) {
	m, _ := NewMarks(100, 3)
	reals := addrs("10.0.0.1", "10.0.0.2")
	m.Sync(reals)
	if m.Avoid([]uint32{100, 7}) != true {
		t.Error("Avoid of a held mark reported no real holding it")
	}
	got, err := m.Sync(reals)
	if s := marksString(got); err != nil || s != "10.0.0.1=102 10.0.0.2=101" {
		t.Errorf("after Avoid(100): %q %v", s, err)
	}
	if _, err := m.Sync(addrs("10.0.0.1", "10.0.0.2", "10.0.0.3")); !errors.Is(err, ErrMarksExhausted) {
		t.Errorf("a third real with mark 100 avoided: %v, want exhausted", err)
	}
	if m.Avoid(nil) {
		t.Error("Avoid(nil) reported a real holding an avoided mark")
	}
	if got, err := m.Sync(addrs("10.0.0.1", "10.0.0.2", "10.0.0.3")); err != nil || got[netip.MustParseAddr("10.0.0.3")] != 100 {
		t.Errorf("mark 100 free again: %s %v", marksString(got), err)
	}
}
