package health

import (
	"net/netip"
	"testing"
	"time"
)

func TestStatusSet(t *testing.T) {
	tests := []struct {
		name string
		set  StatusSet
		want string
		has  []int
		not  []int
	}{
		{"zero: 2xx", StatusSet{}, "", []int{200, 204, 299}, []int{199, 300, 500}},
		{"one", StatusCodes(200, 200), "200", []int{200}, []int{201, 299}},
		{"merged", StatusCodes(302, 302).With(200, 299).With(300, 301).With(204, 204), "200-302", []int{200, 302}, []int{303}},
		{"disjoint", StatusCodes(500, 599).With(200, 200), "200,500-599", []int{200, 500, 599}, []int{201, 499, 600}},
		{"edges", StatusCodes(100, 100).With(599, 599), "100,599", []int{100, 599}, []int{99, 101, 598, 600}},
		{"clipped", StatusCodes(0, 1000), "100-599", []int{100, 599}, []int{99, 600}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.set.String(); got != tt.want {
				t.Errorf("String() = %q, want %q", got, tt.want)
			}
			for _, c := range tt.has {
				if !tt.set.Has(c) {
					t.Errorf("Has(%d) = false", c)
				}
			}
			for _, c := range tt.not {
				if tt.set.Has(c) {
					t.Errorf("Has(%d) = true", c)
				}
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
	// Status was the text "200,300-399" before it was a StatusSet; the id
	// it gave then must hold.
	h := Spec{Type: HTTP, Interval: time.Second, Timeout: time.Millisecond, Rise: 1, Fall: 1,
		HTTP: HTTPParams{Path: "/healthz", Status: StatusCodes(200, 200).With(300, 399)}}
	if got := h.ID(); got != "23792faf" {
		t.Errorf("http id %s, want 23792faf", got)
	}
}

func TestTargetDest(t *testing.T) {
	addr := netip.MustParseAddrPort("10.0.0.1:8080")
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
		if got := (Target{Real: addr, Spec: tt.spec}).Dest().String(); got != tt.want {
			t.Errorf("%s: %s, want %s", tt.name, got, tt.want)
		}
	}
}

// goldenID is the ID of the tunnelled spec in TestSpecIDStable, fixed when the
// encoding was written; a change here renames every metric series.
const goldenID = "6a28a3ff"
