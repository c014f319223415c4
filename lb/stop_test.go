package lb

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kglb/kglb/config"
	"github.com/kglb/kglb/health"
	"github.com/kglb/kglb/ipvs"
	"github.com/kglb/kglb/vip"
)

// callLog is the order in which the engine called its announcer and
// reconcilers, with the test's own events in between.
type callLog struct {
	mu    sync.Mutex
	calls []string
}

func (l *callLog) add(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls = append(l.calls, fmt.Sprintf(format, args...))
}

func (l *callLog) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls = nil
}

func (l *callLog) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.calls)
}

// recordingIPVS logs each call. The writes behind it ignore cancellation:
// the test ends a stop's hold by cancelling its context, and the cleanup
// after the hold must still reach the fake kernel to be looked at.
type recordingIPVS struct {
	IPVS
	log *callLog
}

func (r *recordingIPVS) Apply(ctx context.Context, d ipvs.Desired) (ipvs.Result, error) {
	r.log.add("ipvs apply (%d services)", len(d.Services))
	return r.IPVS.Apply(context.WithoutCancel(ctx), d)
}

func (r *recordingIPVS) Resync(ctx context.Context, d ipvs.Desired) (ipvs.Result, error) {
	r.log.add("ipvs resync (%d services)", len(d.Services))
	return r.IPVS.Resync(context.WithoutCancel(ctx), d)
}

type recordingVIPs struct {
	VIPs
	log *callLog
}

func (r *recordingVIPs) Apply(ctx context.Context, desired []netip.Addr) (vip.Result, error) {
	r.log.add("vips apply %v", desired)
	return r.VIPs.Apply(context.WithoutCancel(ctx), desired)
}

func (r *recordingVIPs) Resync(ctx context.Context, desired []netip.Addr) (vip.Result, error) {
	r.log.add("vips resync %v", desired)
	return r.VIPs.Resync(context.WithoutCancel(ctx), desired)
}

// recordingAnnouncer logs each call. With fail set, Apply takes the routes
// and reports failure, as a speaker that got some of them out does.
type recordingAnnouncer struct {
	Announcer
	log  *callLog
	fail error
}

func (r *recordingAnnouncer) Apply(ctx context.Context, routes []Route) error {
	var ps []string
	for _, rt := range routes {
		ps = append(ps, rt.Prefix.String())
	}
	r.log.add("announce [%s]", strings.Join(ps, " "))
	if err := r.Announcer.Apply(ctx, routes); err != nil {
		return err
	}
	return r.fail
}

func (r *recordingAnnouncer) WithdrawAll(ctx context.Context) error {
	r.log.add("withdraw all")
	return r.Announcer.WithdrawAll(ctx)
}

// holdEnded is what the test logs when it ends the hold of a stop.
const holdEnded = "(test: hold ends)"

// TestEngineStopOrder checks the order of a stop: every route withdrawn,
// then the hold (daemon.stop_hold), then, with on_stop = cleanup, kglb's
// services and VIPs removed; with keep, nothing touched. The hold is an
// hour and the test ends it, by cancelling the context, only once it has
// seen the withdrawal: a cleanup that did not wait for the hold is logged
// before the test's mark.
func TestEngineStopOrder(t *testing.T) {
	errBoom := errors.New("boom")
	tests := []struct {
		name      string
		cleanup   bool
		announce  bool  // bring the real up, so the VIP is announced
		failApply error // every announcer Apply reports this
		want      []string
	}{
		{"keep: withdraw, hold, data plane untouched", false, true, nil,
			[]string{"withdraw all", holdEnded}},
		{"cleanup: withdraw, hold, then services and VIPs removed", true, true, nil,
			[]string{"withdraw all", holdEnded, "ipvs apply (0 services)", "vips apply []"}},
		{"an Apply that failed may have left routes out: withdrawn and held too", true, true, errBoom,
			[]string{"withdraw all", holdEnded, "ipvs apply (0 services)", "vips apply []"}},
		{"nothing announced: nothing to withdraw, no hold", true, false, nil,
			[]string{"ipvs apply (0 services)", "vips apply []"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t)
			log := &callLog{}
			w.wrap = func(o *Options) {
				o.IPVS = &recordingIPVS{IPVS: o.IPVS, log: log}
				o.VIPs = &recordingVIPs{VIPs: o.VIPs, log: log}
				o.Announcer = &recordingAnnouncer{Announcer: o.Announcer, log: log, fail: tt.failApply}
			}
			cfg := daemonCfg(svc("web", "192.0.2.1", 1))
			cfg.Daemon.StopHold = time.Hour
			r := w.start(t, cfg)
			if tt.announce {
				w.prober.set("10.0.0.1:80", health.Up)
				eventually(t, "announced", func() bool { return w.ann.prefixes() == "192.0.2.1/32" })
				eventually(t, "weight up", func() bool { return tunnels100(w.kernel) == 1 })
			} else {
				eventually(t, "first pass", func() bool { st, _ := r.e.Status(); return len(st.Services) == 1 })
			}
			r.stop(t)
			kernel, links := w.kernel.String(), w.links.String()
			w.kernel.ResetCounts()
			log.reset()

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- r.e.Stop(ctx, tt.cleanup) }()
			eventually(t, "the withdrawal, or Stop to return", func() bool {
				return slices.Contains(log.get(), "withdraw all") || len(done) > 0
			})
			if len(done) == 0 {
				log.add(holdEnded)
				cancel()
			}
			if err := <-done; err != nil {
				t.Errorf("Stop: %v", err)
			}

			if got := log.get(); !slices.Equal(got, tt.want) {
				t.Errorf("calls:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(tt.want, "\n  "))
			}
			if w.ann.prefixes() != "" {
				t.Errorf("routes left announced: %s", w.ann.prefixes())
			}
			if tt.cleanup {
				if k, l := w.kernel.String(), w.links.String(); strings.Contains(k, "192.0.2.1") || strings.Contains(l, "192.0.2.1") {
					t.Errorf("cleanup left:\n%s\n%s", k, l)
				}
				return
			}
			if n := w.kernel.Writes().Total(); n != 0 || w.kernel.String() != kernel || w.links.String() != links {
				t.Errorf("keep: %d kernel writes; kernel:\n%s\nlinks:\n%s", n, w.kernel.String(), w.links.String())
			}
		})
	}
}

// TestEngineStopWithoutAnnouncer: with no bgp block there is nothing to
// withdraw and no hold; cleanup still removes the data plane.
func TestEngineStopWithoutAnnouncer(t *testing.T) {
	w := newWorld(t)
	log := &callLog{}
	w.wrap = func(o *Options) {
		o.IPVS = &recordingIPVS{IPVS: o.IPVS, log: log}
		o.VIPs = &recordingVIPs{VIPs: o.VIPs, log: log}
		o.Announcer = nil
	}
	cfg := daemonCfg(svc("web", "192.0.2.1", 1))
	cfg.BGP = config.BGP{}
	cfg.Daemon.StopHold = time.Hour // a hold would keep Stop from returning
	r := w.start(t, cfg)
	w.prober.set("10.0.0.1:80", health.Up)
	eventually(t, "weight up", func() bool { return tunnels100(w.kernel) == 1 })
	r.stop(t)
	log.reset()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.e.Stop(ctx, true) }()
	eventually(t, "Stop to return without a hold", func() bool { return len(done) > 0 })
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got, want := log.get(), []string{"ipvs apply (0 services)", "vips apply []"}; !slices.Equal(got, want) {
		t.Errorf("calls %q, want %q", got, want)
	}
}
