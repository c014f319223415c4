package lb

import (
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/kglb/kglb/config"
)

// richService sets every field of a service, slices with one element, so
// that each field can be changed on its own.
func richService() config.Service {
	s := svc("web", "192.0.2.1", 2, func(s *config.Service) {
		s.Flags = []config.Flag{config.FlagMHPort}
		s.Persistence = config.Persistence{Enabled: true, Timeout: time.Minute, PrefixLen: 24}
		s.OnePacket = true
		s.Source = "a.hcl:1"
		s.Reals[0].UpperThreshold, s.Reals[0].LowerThreshold, s.Reals[0].Source = 10, 5, "a.hcl:5"
		s.Checks = []config.Check{{
			Type: config.CheckHTTP, Interval: 2 * time.Second, Timeout: time.Second, Rise: 2, Fall: 3, Tunnel: true,
			HTTP: config.HTTPCheck{Method: "GET", Path: "/", Host: "h", SNI: "s", Headers: map[string]string{"X": "1"},
				Status: []config.StatusRange{{Min: 200, Max: 299}}, Body: "ok", CAFile: "ca", MaxBody: 10, ProxyURL: "http://p/"},
			DNS:    config.DNSCheck{Name: "n.", Type: "A", Transport: config.TransportUDP, Rcode: "NOERROR", Answer: "1.2.3.4"},
			Syslog: config.SyslogCheck{Transport: config.TransportUDP, Message: "m"},
			Source: "a.hcl:3",
		}}
		s.Announce.Degraded = config.Degraded{Enabled: true, Below: config.Threshold{Value: 1}, MED: 1, HasMED: true, Prepend: 1}
		s.Announce.NextHop = netip.MustParseAddr("192.0.2.254")
		s.Announce.Communities = []config.Community{1}
		s.Announce.LargeCommunities = []config.LargeCommunity{{Global: 1}}
		s.Announce.MED, s.Announce.HasMED, s.Announce.LocalPref, s.Announce.HasLocalPref, s.Announce.Prepend = 1, true, 1, true, 1
	})
	return *s
}

// mutations returns, for every leaf field reachable from a service (into
// the first element of each slice), its path and a deep copy of base with
// that one field changed.
func mutations(t *testing.T, base config.Service) map[string]config.Service {
	t.Helper()
	out := map[string]config.Service{}
	var walk func(path string, typ reflect.Type, set func(*config.Service, func(reflect.Value)))
	walk = func(path string, typ reflect.Type, set func(*config.Service, func(reflect.Value))) {
		mutate := func(change func(reflect.Value)) {
			m := deepCopy(base)
			set(&m, change)
			out[path] = m
		}
		switch {
		case typ == reflect.TypeFor[netip.Addr]():
			mutate(func(v reflect.Value) { v.Set(reflect.ValueOf(netip.MustParseAddr("198.51.100.99"))) })
			return
		case typ.Kind() == reflect.Struct:
			for i := range typ.NumField() {
				f := typ.Field(i)
				walk(path+"."+f.Name, f.Type, func(s *config.Service, change func(reflect.Value)) {
					set(s, func(v reflect.Value) { change(v.Field(i)) })
				})
			}
			return
		case typ.Kind() == reflect.Slice && typ.Elem().Kind() == reflect.Struct:
			walk(path+"[0]", typ.Elem(), func(s *config.Service, change func(reflect.Value)) {
				set(s, func(v reflect.Value) { change(v.Index(0)) })
			})
			mutate(func(v reflect.Value) { v.Set(reflect.Append(v, v.Index(0))) })
			out[path+"+"] = out[path]
			delete(out, path)
			return
		}
		mutate(func(v reflect.Value) {
			switch v.Kind() {
			case reflect.String:
				v.SetString(v.String() + "x")
			case reflect.Bool:
				v.SetBool(!v.Bool())
			case reflect.Int, reflect.Int64:
				v.SetInt(v.Int() + 1)
			case reflect.Uint8, reflect.Uint16, reflect.Uint32:
				v.SetUint(v.Uint() + 1)
			case reflect.Float64:
				v.SetFloat(v.Float() + 1)
			case reflect.Slice:
				v.Set(reflect.Append(v, v.Index(0)))
			case reflect.Map:
				v.SetMapIndex(reflect.ValueOf("Y"), reflect.ValueOf("2"))
			default:
				t.Fatalf("%s: no mutation for kind %s: teach this test (and same.go) the new field", path, v.Kind())
			}
		})
	}
	walk("Service", reflect.TypeFor[config.Service](), func(s *config.Service, change func(reflect.Value)) {
		change(reflect.ValueOf(s).Elem())
	})
	return out
}

// deepCopy copies a service with its own slices and maps, as config.Load
// makes them.
func deepCopy(s config.Service) config.Service {
	s.Flags = slices.Clone(s.Flags)
	s.Reals = slices.Clone(s.Reals)
	s.Checks = slices.Clone(s.Checks)
	for i := range s.Checks {
		h := &s.Checks[i].HTTP
		h.Status = slices.Clone(h.Status)
		if h.Headers != nil {
			m := make(map[string]string, len(h.Headers))
			for k, v := range h.Headers {
				m[k] = v
			}
			h.Headers = m
		}
	}
	s.Announce.Communities = slices.Clone(s.Announce.Communities)
	s.Announce.LargeCommunities = slices.Clone(s.Announce.LargeCommunities)
	return s
}

// TestCarrySeesEveryField changes each field of a service on its own: only
// a Source or the Description may leave the decision carried over. A field added to
// config.Service and forgotten in same.go fails here.
func TestCarrySeesEveryField(t *testing.T) {
	base := richService()
	muts := mutations(t, base)
	if len(muts) < 60 {
		t.Fatalf("only %d mutations: the walk missed fields", len(muts))
	}
	cp := deepCopy(base)
	if c := carry([]*config.Service{&base}, []*config.Service{&cp}); !c.unchanged || c.decisionFrom(0) != 0 {
		t.Fatalf("a copy of the service is not carried over: %+v", c)
	}
	for path, m := range muts {
		c := carry([]*config.Service{&base}, []*config.Service{&m})
		source := strings.HasSuffix(path, ".Source") || path == "Service.Description"
		if got := c.decisionFrom(0) == 0; got != source {
			t.Errorf("%s changed: decision carried over = %v, want %v", path, got, source)
		}
	}
}

// TestSamePlanHidesNothing changes each field on its own and, whenever
// samePlan calls the probes unchanged, checks that NewPlan agrees.
func TestSamePlanHidesNothing(t *testing.T) {
	base := richService()
	marks := map[netip.Addr]uint32{base.Reals[0].Addr: 1001, base.Reals[1].Addr: 1002}
	planOf := func(s config.Service) *Plan {
		p, _ := NewPlan(cfgOf(&s), marks)
		return p
	}
	want := planOf(base)
	if len(want.All()) == 0 || len(want.tunnels) == 0 {
		t.Fatalf("base plan probes nothing: %+v", want)
	}
	same := 0
	for path, m := range mutations(t, base) {
		if !samePlan(&base, &m) {
			continue
		}
		same++
		got := planOf(m)
		if d := cmp.Diff(want.All(), got.All(), equateNetip); d != "" {
			t.Errorf("%s changed: samePlan says the probes are the same, NewPlan's targets differ (-base +mutated):\n%s", path, d)
		}
		if d := cmp.Diff(want.tunnels, got.tunnels, equateNetip); d != "" {
			t.Errorf("%s changed: samePlan says the probes are the same, NewPlan's tunnels differ (-base +mutated):\n%s", path, d)
		}
	}
	if same < 20 {
		t.Errorf("samePlan held for only %d mutations", same)
	}
}

// decisionFrom is the index in prev whose decision service i of next may
// take over, or -1, in either form carry returns.
func (c carried) decisionFrom(i int) int32 {
	if c.unchanged {
		if slices.Contains(c.forget, int32(i)) {
			return -1
		}
		return int32(i)
	}
	return c.decision[i]
}
