// Package reload turns a configuration directory into a stream of good
// configurations. It watches the directory with fsnotify (a directory watch,
// so editors' atomic saves, symlink swaps such as Kubernetes ConfigMaps and a
// deleted and re-created directory all work), takes explicit triggers (SIGHUP,
// an operator's forced reload) and polls slowly as a fallback for file systems
// that send no events. Events are debounced; a set whose content digest did
// not change is a no-op; a set that does not load is logged with its
// positions and counted, and the last good configuration keeps running.
//
// A start is a reload from what ran before: given the configuration an
// earlier run last applied (LastApplied), New starts with it instead of the
// directory's when the directory does not load or the Guard refuses it, and
// says why (Status); the watch then applies the files once they are fixed,
// as any reload, guard included. Only without a last applied configuration
// (a first install) does a directory that does not load stop the start.
//
// Deletions wait for the files to settle: a load that removes something
// (Hold says what) is applied at once with the removed parts kept, and
// applied in full only once the directory has been quiet for Settle, so a
// writer that truncates a file, pauses, then writes it again deletes nothing.
// Additions and changes apply at the debounce.
//
// reload knows nothing of the configuration's schema: the daemon passes the
// loader (config.Load), the digest, a guard that may refuse a dangerous
// change, such as an emptied directory deleting every service, and the rule
// that keeps what an edit removes.
package reload

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
)

// Options configures a Watcher. Load and Digest are required.
type Options[C any] struct {
	// Dir is the configuration directory.
	Dir string
	// Load reads and validates the whole directory, as config.Load does.
	Load func(dir string) (C, error)
	// LoadChanged, when set, is Load told which entries of the directory
	// the watch reported since the last load (config.Loader.LoadChanged):
	// it is called after a debounced burst of events on the directory's
	// entries. Load is called instead after anything else (the directory
	// itself replaced, a watch error that may have lost events, a poll, an
	// explicit or forced reload).
	LoadChanged func(dir string, changed []string) (C, error)
	// Digest identifies a loaded configuration's content: an unchanged
	// digest means there is nothing to apply.
	Digest func(C) [32]byte
	// Guard, when set, may refuse a valid configuration (for example one
	// that would delete most services). A forced reload skips it.
	Guard func(old, new C) error
	// ForcedGuard, when set, is the part of Guard that a forced reload
	// still runs: refusals that no operator can overrule (a force confirms
	// a large deletion, not a config this process cannot run).
	ForcedGuard func(old, new C) error
	// LastApplied, when set, is asked by New for the configuration an
	// earlier run last applied (from the daemon's state directory): loaded
	// and loadErr are the directory's load, to find where it is kept. ok is
	// false when there is none (a first install). When the directory does
	// not load, or Guard refuses it against the last applied one, New
	// starts with the last applied configuration instead.
	LastApplied func(loaded C, loadErr error) (last C, ok bool, err error)
	// Hold, when set, returns new with what it removes from running kept
	// (as running had it), and whether anything was kept. The result must
	// have a digest of its own (it is not what the files say).
	Hold func(running, new C) (C, bool)
	// Settle is how long the directory must be quiet before the removals
	// Hold kept are applied (default 2s). SettleOf, when set and above
	// zero, takes it from the configuration in force.
	Settle   time.Duration
	SettleOf func(C) time.Duration
	// Debounce is how long the directory must be quiet before a load
	// (default 250ms): one logical edit is often several events.
	Debounce time.Duration
	// Poll is the fallback interval at which Stamp is compared (default
	// 30s; <0 disables).
	Poll time.Duration
	// Stamp summarises the directory's entries as stat sees them
	// (config.DirStamp): the poll loads when it changes. Without it there
	// is no poll.
	Stamp func(dir string) string
	// Logger receives one line per outcome (default: discard).
	Logger hclog.Logger
	// Registerer receives the reload metrics (nil: none).
	Registerer prometheus.Registerer
}

// Watcher produces good configurations on Updates.
type Watcher[C any] struct {
	opts    Options[C]
	log     hclog.Logger
	metrics *metrics
	updates chan C
	// rejected is signalled after a load the running config outlives
	// (Failed, Refused): see Rejected.
	rejected chan struct{}
	trigger  chan request
	// forced is set by Reload(true), whose request may be dropped on a
	// full queue, and taken by the next explicit load: any queued request
	// covers it, so none is ever lost. ReloadWait's force is its request's.
	forced atomic.Bool

	mu      sync.Mutex
	current C
	// digest is that of the files' configuration current was made from
	// (current itself has another while holding).
	digest  [32]byte
	lastErr error
	// lastApplied: current is what an earlier run last applied, because
	// the directory was rejected at start; cleared once the directory's
	// configuration is applied (or found to be the same).
	lastApplied bool
	// holding: current keeps what the files removed, until they settle.
	holding bool
	// stamp is Stamp of the directory before New loaded it: Run loads
	// again when the files no longer match it, since an edit made before
	// its watch was in place sent no event.
	stamp string
}

// Status is the state of the configuration in force, for /status.
type Status struct {
	// LastApplied: the configuration in force is the one an earlier run
	// last applied, because the directory's was rejected at start (Err).
	LastApplied bool
	// Settling: services or reals the files removed are kept until the
	// directory has been quiet for the settle time.
	Settling bool
	// Err is why the files on disk are not what runs (nil when they are).
	Err error
}

// New loads the directory once and returns a Watcher holding the result.
// When the directory does not load, or the Guard refuses it against the
// last applied configuration, the Watcher holds the last applied one
// (Status says why); without one, New returns the load error: a daemon must
// not start on a configuration it cannot read.
func New[C any](opts Options[C]) (*Watcher[C], error) {
	if opts.Load == nil || opts.Digest == nil {
		return nil, errors.New("reload: Load and Digest are required")
	}
	if opts.Debounce <= 0 {
		opts.Debounce = 250 * time.Millisecond
	}
	if opts.Poll == 0 {
		opts.Poll = 30 * time.Second
	}
	if opts.Settle <= 0 {
		opts.Settle = 2 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	w := &Watcher[C]{
		opts:     opts,
		log:      opts.Logger,
		metrics:  newMetrics(opts.Registerer),
		updates:  make(chan C, 1),
		rejected: make(chan struct{}, 1),
		trigger:  make(chan request, 8),
	}
	if opts.Stamp != nil {
		w.stamp = opts.Stamp(filepath.Clean(opts.Dir))
	}
	start := time.Now()
	cfg, err := opts.Load(opts.Dir)
	w.metrics.duration.Observe(time.Since(start).Seconds())
	var last C
	hasLast := false
	if opts.LastApplied != nil {
		var lerr error
		last, hasLast, lerr = opts.LastApplied(cfg, err)
		if lerr != nil {
			// An unreadable record is no reason to stay down: start as a
			// first install would, and say so.
			w.log.Error("cannot read the last applied config; starting as on a first install", "err", lerr.Error())
			hasLast = false
		}
	}
	if !hasLast {
		if err != nil {
			w.metrics.result(Failed)
			w.metrics.success.Set(0)
			return nil, fmt.Errorf("load %s: %w", opts.Dir, err)
		}
		w.accept(cfg, opts.Digest(cfg), false)
		return w, nil
	}
	result, reason := Failed, err
	if err == nil && opts.Guard != nil {
		result, reason = Refused, opts.Guard(last, cfg)
	}
	if reason != nil {
		w.current, w.digest, w.lastErr, w.lastApplied = last, opts.Digest(last), reason, true
		w.metrics.result(result)
		w.metrics.success.Set(0)
		w.metrics.lastApplied.Set(1)
		return w, nil
	}
	w.current = last
	w.accept(cfg, opts.Digest(cfg), true)
	return w, nil
}

// accept makes the directory's configuration cfg (of digest) current, or,
// when it removes something from what runs and Hold keeps it, what Hold
// made of it when hold is set; the caller holds mu or owns w.
func (w *Watcher[C]) accept(cfg C, digest [32]byte, hold bool) C {
	held := false
	if hold && w.opts.Hold != nil {
		cfg, held = w.opts.Hold(w.current, cfg)
	}
	w.current, w.digest, w.lastErr, w.lastApplied, w.holding = cfg, digest, nil, false, held
	w.metrics.result(Applied)
	w.metrics.success.Set(1)
	w.metrics.lastApplied.Set(0)
	w.metrics.settling.Set(b2f(held))
	w.metrics.timestamp.SetToCurrentTime()
	return cfg
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// SetLogger replaces the logger, for a daemon whose log format is only
// known once the first configuration is loaded. Call it before Run.
func (w *Watcher[C]) SetLogger(l hclog.Logger) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.log = l
}

// Current returns the configuration in force.
func (w *Watcher[C]) Current() C {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.current
}

// LastError returns why the most recent reload was rejected, or nil when it
// succeeded (or changed nothing).
func (w *Watcher[C]) LastError() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lastErr
}

// Updates delivers each newly accepted configuration. It holds at most one:
// a reader that falls behind gets the newest.
func (w *Watcher[C]) Updates() <-chan C { return w.updates }

// Rejected receives after a load whose files were rejected or refused, so
// that what shows the state (systemd's STATUS) reads Status again: such a
// load sends nothing on Updates, and an edit picked up by the watch, unlike
// a reload asked for, has nobody waiting on its outcome. It holds at most
// one signal.
func (w *Watcher[C]) Rejected() <-chan struct{} { return w.rejected }

// reject signals Rejected; the caller holds mu.
func (w *Watcher[C]) reject() {
	select {
	case w.rejected <- struct{}{}:
	default:
	}
}

// Outcome is what one load did.
type Outcome struct {
	Result Result
	// Err says why a failure or refusal happened.
	Err error
}

// Result is what one load did to the running configuration; its text is
// the label of kglb_config_reloads_total and what `kglb reload` prints.
type Result string

const (
	Applied   Result = "success"   // a new configuration was handed on
	Unchanged Result = "unchanged" // the same content as what runs
	Failed    Result = "failure"   // the configuration is invalid
	Refused   Result = "refused"   // the Guard said no
)

// request is one explicit reload; done, when set, receives its outcome.
// force travels with the request: set on the Watcher before the request
// was queued, it outlived a ReloadWait that gave up on a full queue and
// forced the next, unforced reload past the Guard.
type request struct {
	force bool
	done  chan Outcome
}

// Reload asks for a reload now (SIGHUP) without waiting for it. With force,
// the Guard is skipped: the operator has confirmed a large deletion.
func (w *Watcher[C]) Reload(force bool) {
	if force {
		w.forced.Store(true)
	}
	select {
	case w.trigger <- request{}:
	default: // a queued request loads the whole directory: it covers this one
	}
}

// ReloadWait reloads now and returns what the load did, so that a caller
// (systemd's reload, `kglb reload`) can tell success from a rejected edit.
// It needs Run to be running; it gives up when ctx ends.
func (w *Watcher[C]) ReloadWait(ctx context.Context, force bool) (Outcome, error) {
	done := make(chan Outcome, 1)
	select {
	case w.trigger <- request{force: force, done: done}:
	case <-ctx.Done():
		return Outcome{}, ctx.Err()
	}
	select {
	case o := <-done:
		return o, nil
	case <-ctx.Done():
		return Outcome{}, ctx.Err()
	}
}

// Run watches until ctx ends. It returns an error only when the watch's
// channels close under it; a missing directory is waited for (the poll
// notices it), and without a watch at all (no inotify instance to be had)
// it still serves explicit reloads and the poll.
func (w *Watcher[C]) Run(ctx context.Context) error {
	dir := filepath.Clean(w.opts.Dir)
	parent := filepath.Dir(dir)
	// Returning here would leave every Reload and ReloadWait (SIGHUP,
	// `kglb reload`, systemd's reload) waiting for a loop that is gone.
	fw, err := fsnotify.NewWatcher()
	var events <-chan fsnotify.Event
	var errs <-chan error
	watching := false
	if err != nil {
		w.log.Error("cannot watch the config directory; only explicit reloads and the poll load it", "dir", dir, "err", err)
	} else {
		defer fw.Close()
		events, errs = fw.Events, fw.Errors
		// The parent is watched too, so a deleted and re-created directory
		// is noticed and watched again.
		if err := fw.Add(parent); err != nil {
			w.log.Warn("cannot watch parent directory; relying on poll", "dir", parent, "err", err)
		}
		watching = fw.Add(dir) == nil
		if !watching {
			w.log.Warn("config directory missing; waiting for it", "dir", dir)
		}
	}

	var poll <-chan time.Time
	stamp := func() string { return "" }
	if w.opts.Poll > 0 && w.opts.Stamp != nil {
		stamp = func() string { return w.opts.Stamp(dir) }
		t := time.NewTicker(w.opts.Poll)
		defer t.Stop()
		poll = t.C
	}
	fp := stamp()
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	pending := false
	// changed are the entries the events since the last load named; full
	// is set by an event that names none (or too many to be worth it).
	var changed []string
	full := false
	const maxChanged = 1000
	// A daemon does much between New and Run (IPVS, addresses, BGP): an
	// edit in between sent no event, and the poll's stamp, taken now,
	// already has it.
	if w.opts.Stamp != nil {
		now := fp
		if poll == nil { // stamp() stamps nothing: no poll
			now = w.opts.Stamp(dir)
		}
		if now != w.stamp {
			pending, full = true, true
			debounce.Reset(w.opts.Debounce)
		}
	}
	// settle fires once the directory has been quiet for the settle time
	// while something the files removed is kept; every event restarts it.
	settle := time.NewTimer(time.Hour)
	settle.Stop()
	if w.isHolding() {
		settle.Reset(w.settleTime())
	}

	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-events:
			if !ok {
				return errors.New("watch " + dir + ": event channel closed")
			}
			// A mode change of an entry counts (chmod 000 makes a file
			// unreadable, chmod 644 readable again); of anything else not.
			if ev.Has(fsnotify.Chmod) && !ev.Has(fsnotify.Write|fsnotify.Create|fsnotify.Remove|fsnotify.Rename) &&
				filepath.Dir(ev.Name) != dir {
				continue
			}
			if filepath.Dir(ev.Name) == parent && filepath.Clean(ev.Name) != dir {
				continue // a sibling of the config directory
			}
			if filepath.Clean(ev.Name) == dir && ev.Has(fsnotify.Create) {
				watching = fw.Add(dir) == nil
			}
			if filepath.Dir(ev.Name) == dir && len(changed) < maxChanged {
				changed = append(changed, ev.Name)
			} else {
				full = true
			}
			pending = true
			debounce.Reset(w.opts.Debounce)
			settle.Reset(w.settleTime())
		case err, ok := <-errs:
			if !ok {
				return errors.New("watch " + dir + ": error channel closed")
			}
			// An overflow lost events: a full load finds the truth.
			w.log.Warn("watch error; reloading", "dir", dir, "err", err)
			pending, full = true, true
			debounce.Reset(w.opts.Debounce)
			settle.Reset(w.settleTime())
		case req := <-w.trigger:
			// An explicit reload is the operator saying the files are
			// ready: nothing waits for them to settle.
			// The stamp is taken before the load reads: an edit made
			// meanwhile differs from it, and the poll loads it.
			fp = stamp()
			o := w.load(w.forced.Swap(false) || req.force, nil, true, true)
			pending, changed, full = false, nil, false
			if req.done != nil {
				req.done <- o
			}
		case <-debounce.C:
			if pending {
				fp = stamp()
				w.load(false, changed, full, false)
				pending, changed, full = false, nil, false
			}
		case <-settle.C:
			switch {
			case pending:
				// The debounce loads first. A settle time shorter than
				// the debounce fires here before that load holds what
				// it removes, and no event may come to re-arm it: arm
				// it again, or the removal is kept for good.
				settle.Reset(w.settleTime())
			case w.isHolding():
				fp = stamp()
				w.load(false, nil, true, true)
			}
		case <-poll:
			if !watching && fw != nil {
				watching = fw.Add(dir) == nil
			}
			if now := stamp(); now != fp {
				fp = now
				w.load(false, nil, true, false)
				settle.Reset(w.settleTime())
			}
		}
	}
}

// load runs one reload and records its outcome: a full one, or one of the
// changed entries only. With settled (the directory has been quiet for the
// settle time), nothing the files removed is kept any longer.
func (w *Watcher[C]) load(force bool, changed []string, full, settled bool) Outcome {
	start := time.Now()
	var cfg C
	var err error
	if full || w.opts.LoadChanged == nil {
		cfg, err = w.opts.Load(w.opts.Dir)
	} else {
		cfg, err = w.opts.LoadChanged(w.opts.Dir, changed)
	}
	w.metrics.duration.Observe(time.Since(start).Seconds())
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		w.lastErr = err
		w.metrics.result(Failed)
		w.metrics.success.Set(0)
		w.log.Error("config rejected; keeping the last good config", "dir", w.opts.Dir, "err", err.Error())
		w.reject()
		return Outcome{Result: Failed, Err: err}
	}
	digest := w.opts.Digest(cfg)
	if digest == w.digest && !(settled && w.holding) {
		// A valid, unchanged set also ends an earlier failure: the files
		// are back to what is running. It is handed on again (applying it
		// changes nothing) so that what shows the state, such as
		// systemd's STATUS, hears of it.
		cleared := w.lastErr != nil || w.lastApplied
		w.lastErr, w.lastApplied = nil, false
		w.metrics.success.Set(1)
		w.metrics.lastApplied.Set(0)
		w.metrics.result(Unchanged)
		w.log.Debug("config unchanged", "dir", w.opts.Dir)
		if cleared && !w.holding {
			w.current = cfg
			w.send(cfg)
		}
		return Outcome{Result: Unchanged}
	}
	guard, hint := w.opts.Guard, " (force a reload to apply it)"
	if force {
		guard, hint = w.opts.ForcedGuard, ""
	}
	if guard != nil {
		if err := guard(w.current, cfg); err != nil {
			w.lastErr = err
			w.metrics.result(Refused)
			w.metrics.success.Set(0)
			w.log.Error("config refused; keeping the last good config"+hint, "dir", w.opts.Dir, "forced", force, "err", err.Error())
			w.reject()
			return Outcome{Result: Refused, Err: err}
		}
	}
	cfg = w.accept(cfg, digest, !settled && !force)
	if w.holding {
		w.log.Info("config loaded; what it removes waits for the files to settle", "dir", w.opts.Dir, "settle", w.settleOf().String(), "took", time.Since(start).String())
	} else {
		w.log.Info("config loaded", "dir", w.opts.Dir, "forced", force, "took", time.Since(start).String())
	}
	w.send(cfg)
	return Outcome{Result: Applied}
}

// send hands cfg on; the caller holds mu.
func (w *Watcher[C]) send(cfg C) {
	select {
	case <-w.updates: // drop a stale, unread update: only the newest matters
	default:
	}
	w.updates <- cfg
}

// Status returns the state of the configuration in force.
func (w *Watcher[C]) Status() Status {
	w.mu.Lock()
	defer w.mu.Unlock()
	return Status{LastApplied: w.lastApplied, Settling: w.holding, Err: w.lastErr}
}

// settleTime is the settle time of the configuration in force.
func (w *Watcher[C]) settleTime() time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.settleOf()
}

// settleOf is settleTime for a caller that holds mu.
func (w *Watcher[C]) settleOf() time.Duration {
	if w.opts.SettleOf != nil {
		if d := w.opts.SettleOf(w.current); d > 0 {
			return d
		}
	}
	return w.opts.Settle
}

func (w *Watcher[C]) isHolding() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.holding
}

type metrics struct {
	reloads     *prometheus.CounterVec
	success     prometheus.Gauge
	lastApplied prometheus.Gauge
	settling    prometheus.Gauge
	timestamp   prometheus.Gauge
	duration    prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kglb_config_reloads_total",
			Help: "Configuration loads by result: success (applied), unchanged (same content), failure (invalid), refused (guard).",
		}, []string{"result"}),
		success: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kglb_config_last_reload_successful",
			Help: "1 when the last reload was applied or changed nothing, 0 while the files on disk are rejected and the last good config runs.",
		}),
		lastApplied: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kglb_config_running_last_applied",
			Help: "1 while kglb runs the config an earlier run last applied, because the files were rejected at start (invalid, or refused by max_delete_share); 0 once the files are applied.",
		}),
		settling: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kglb_config_deletions_settling",
			Help: "1 while services or reals the files removed are kept until the config directory has been unchanged for daemon.settle.",
		}),
		timestamp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kglb_config_last_reload_success_timestamp_seconds",
			Help: "Unix time of the last applied configuration.",
		}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "kglb_config_load_duration_seconds",
			Help:    "Time to read, parse and validate the configuration directory.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 8),
		}),
	}
	for _, r := range []Result{Applied, Unchanged, Failed, Refused} {
		m.reloads.WithLabelValues(string(r))
	}
	if reg != nil {
		reg.MustRegister(m.reloads, m.success, m.lastApplied, m.settling, m.timestamp, m.duration)
	}
	return m
}

func (m *metrics) result(r Result) { m.reloads.WithLabelValues(string(r)).Inc() }
