package health

import (
	"net/netip"
	"testing"
	"time"
)

func TestCanonicalStatus(t *testing.T) {
	tests := []struct {
		name    string
		in      []string
		want    string
		wantErr bool
	}{
		{"one", []string{"200"}, "200", false},
		{"merged and sorted", []string{"302", "200-299", "300-301", "204"}, "200-302", false},
		{"disjoint", []string{"500-599", "200"}, "200,500-599", false},
		{"not a code", []string{"ok"}, "", true},
		{"out of range", []string{"99"}, "", true},
		{"backwards", []string{"300-200"}, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := CanonicalStatus(tt.in)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("got %q, %v; want %q (error %v)", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestCanonicalHeadersAndList(t *testing.T) {
	if got := CanonicalHeaders(map[string]string{"x-b": "2", "X-A": "1"}); got != "X-A: 1\nX-B: 2" {
		t.Errorf("headers %q", got)
	}
	if got := CanonicalList([]string{"b", "a", "b"}); got != "a\nb" {
		t.Errorf("list %q", got)
	}
}

func TestSpecValidate(t *testing.T) {
	base := Spec{Type: HTTP, Interval: 2 * time.Second, Timeout: time.Second, Rise: 2, Fall: 3}
	tests := []struct {
		name string
		mod  func(*Spec)
		ok   bool
	}{
		{"valid", func(*Spec) {}, true},
		{"timeout equal to interval", func(s *Spec) { s.Timeout = s.Interval }, false},
		{"no type", func(s *Spec) { s.Type = 0 }, false},
		{"rise 0", func(s *Spec) { s.Rise = 0 }, false},
		{"tunnel without VIP", func(s *Spec) { s.Tunnel, s.Mark = true, 5 }, false},
		{"tunnel without mark", func(s *Spec) { s.Tunnel, s.VIP = true, netip.MustParseAddr("192.0.2.1") }, false},
		{"bad status", func(s *Spec) { s.HTTP.Status = "2xx" }, false},
		{"relative path", func(s *Spec) { s.HTTP.Path = "healthz" }, false},
		{"bad header", func(s *Spec) { s.HTTP.Headers = "no colon" }, false},
		{"dns without name", func(s *Spec) { s.Type = DNS; s.DNS.QType = 1 }, false},
		{"dns unknown type", func(s *Spec) { s.Type = DNS; s.DNS.Name = "a"; s.DNS.QType = 65000 }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := base
			tt.mod(&s)
			if err := s.Validate(); (err == nil) != tt.ok {
				t.Errorf("Validate() = %v, want ok %v", err, tt.ok)
			}
		})
	}
}

func TestSpecIDStable(t *testing.T) {
	a := Spec{Type: TCP, Interval: time.Second, Timeout: time.Millisecond, Rise: 1, Fall: 1}
	b := a
	if a.ID() != b.ID() || len(a.ID()) != 8 {
		t.Errorf("ids %q %q", a.ID(), b.ID())
	}
	b.Port = 81
	if a.ID() == b.ID() {
		t.Error("different specs, same id")
	}
	m1, m2 := a, a
	m1.Type, m1.Syslog.Message = Syslog, "hello"
	m2.Type, m2.Syslog.Message = Syslog, "bye"
	if m1.ID() == m2.ID() {
		t.Error("different syslog messages, same id")
	}
	// The id is a metric label: it must not change across restarts or builds.
	c := Spec{Type: HTTP, Interval: time.Second, Timeout: time.Millisecond, Rise: 1, Fall: 1,
		Tunnel: true, VIP: netip.MustParseAddr("192.0.2.1"), Mark: 1001}
	if got := c.ID(); got != goldenID {
		t.Errorf("id %s, want %s", got, goldenID)
	}
}

func TestTargetDest(t *testing.T) {
	real := netip.MustParseAddrPort("10.0.0.1:8080")
	tests := []struct {
		name string
		spec Spec
		want string
	}{
		{"real port", Spec{}, "10.0.0.1:8080"},
		{"check port", Spec{Port: 9000}, "10.0.0.1:9000"},
		{"tunnel", Spec{Tunnel: true, VIP: netip.MustParseAddr("192.0.2.1")}, "192.0.2.1:8080"},
		{"tunnel, check port", Spec{Tunnel: true, VIP: netip.MustParseAddr("192.0.2.1"), Port: 443}, "192.0.2.1:443"},
	}
	for _, tt := range tests {
		if got := (Target{Real: real, Spec: tt.spec}).Dest().String(); got != tt.want {
			t.Errorf("%s: %s, want %s", tt.name, got, tt.want)
		}
	}
}

// goldenID is the ID of the tunnelled spec in TestSpecIDStable, fixed when the
// encoding was written; a change here renames every metric series.
const goldenID = "6a28a3ff"
