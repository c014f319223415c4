package ipvs

import (
	"context"
	"maps"
	"sort"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Planned is what a pass for a desired state would write, and the state it
// would write over.
type Planned struct {
	// Writes are the kernel writes in the order the pass would issue them.
	Writes []Write
	// Before holds, with their reals, the owned services the writes touch,
	// as the reconciler knows them now (sorted by key).
	Before []Service
	// Result is what the pass would reach (Draining, NextDrain included).
	Result Result
}

// recorder is a Kernel that reads from read and records every write; when
// pass is set it also issues the writes there (tests compare the two).
type recorder struct {
	read   Kernel
	pass   bool
	writes []Write
}

func (k *recorder) Services() ([]Service, error)  { return k.read.Services() }
func (k *recorder) Reals(key Key) ([]Real, error) { return k.read.Reals(key) }

func (k *recorder) Write(ws []Write) []error {
	k.writes = append(k.writes, ws...)
	if k.pass {
		return k.read.Write(ws)
	}
	return make([]error, len(ws))
}

// Plan returns the writes Apply(ctx, d) would issue now, without writing:
// it runs the same pass on a copy of the reconciler's state, against a
// kernel that records writes (reads, such as the live connection counts of
// a draining real, go to the real kernel). When the cache is not valid (no
// pass yet, or a Resync pending) the copy reads the kernel first, as the
// pass would. The ownership record is not touched.
func (r *Reconciler) Plan(ctx context.Context, d Desired) (Planned, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rec := &recorder{read: r.k}
	c := r.dryCopy(rec)
	if !c.valid {
		// Read as the pass would, and as part of it: the pass below takes
		// the same number (gen+1), so a draining service read here is not
		// read again, as in Apply's full pass.
		c.gen++
		if err := c.readAll(&pass{r: c, ctx: ctx}); err != nil {
			return Planned{}, err
		}
		c.gen--
	}
	before := c.snapshotServices()
	res, _, err := c.pass(ctx, d.Services, nil, false)
	pl := Planned{Writes: rec.writes, Result: res}
	touched := map[Key]bool{}
	for _, w := range rec.writes {
		touched[w.Service] = true
	}
	for _, s := range before {
		if touched[s.Key] {
			pl.Before = append(pl.Before, s)
		}
	}
	return pl, err
}

// dryCopy is a copy of r's state that writes to k and saves nothing. The
// caller holds r.mu.
func (r *Reconciler) dryCopy(k Kernel) *Reconciler {
	c := &Reconciler{
		k: k, statePath: r.statePath, log: hclog.NewNullLogger(), m: newMetrics(nil), now: r.now,
		owned: maps.Clone(r.owned), cache: make(map[Key]*cached, len(r.cache)), foreign: maps.Clone(r.foreign),
		valid: r.valid, readAt: r.readAt, draining: make(map[Key]map[RealKey]time.Time, len(r.draining)),
		gen: r.gen, nreals: r.nreals, seq: r.seq, dry: true,
	}
	for k, v := range r.cache {
		cv := *v
		cv.reals = maps.Clone(v.reals)
		c.cache[k] = &cv
	}
	for k, v := range r.draining {
		c.draining[k] = maps.Clone(v)
	}
	return c
}

// snapshotServices lists the cached services with their reals, by key.
func (r *Reconciler) snapshotServices() []Service {
	out := make([]Service, 0, len(r.cache))
	for k, c := range r.cache {
		out = append(out, c.service(k))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key.less(out[j].Key) < 0 })
	return out
}

// service is the cached service k with its reals, sorted.
func (c *cached) service(k Key) Service {
	s := c.svc
	s.Reals = make([]Real, 0, len(c.reals))
	for rk, cr := range c.reals {
		s.Reals = append(s.Reals, cr.real(rk))
	}
	sort.Slice(s.Reals, func(i, j int) bool { return s.Reals[i].Key().compare(s.Reals[j].Key()) < 0 })
	s.Key = k
	return s
}

// saveOwned writes the ownership record, unless r is a Plan's copy.
func (r *Reconciler) saveOwned() error {
	if r.dry {
		return nil
	}
	return saveOwned(r.statePath, r.owned)
}

// recording is what the passes between StartRecord and StopRecord wrote,
// and the state each touched service had before its first write.
type recording struct {
	writes  []Write
	before  []Service
	touched map[Key]bool
}

// note records one write of a pass, before it is issued: the first write
// to a service also records the service as the cache holds it then, which
// no write of this pass has changed yet.
func (c *recording) note(r *Reconciler, op Op, k Key, s *Service, rl *Real, rk RealKey) {
	if !c.touched[k] {
		c.touched[k] = true
		if cs := r.cache[k]; cs != nil {
			c.before = append(c.before, cs.service(k))
		}
	}
	w := Write{Op: op, Service: k, RealKey: rk}
	if s != nil && (op == OpAddService || op == OpUpdateService) {
		sv := *s
		w.Svc = &sv
	}
	if rl != nil && (op == OpAddReal || op == OpUpdateReal) {
		rv := *rl
		w.Real, w.RealKey = &rv, rv.Key()
	}
	c.writes = append(c.writes, w)
}

// StartRecord makes the passes that follow record their writes, for
// StopRecord. Recording costs a copy of each write and of each service
// written to, before its first write: what the pass writes, never the
// whole table (a Plan copies the whole cache). The engine records the
// pass of a reload to log what it did.
func (r *Reconciler) StartRecord() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rec = &recording{touched: map[Key]bool{}}
}

// StopRecord ends the recording and returns what the passes since
// StartRecord wrote, in Plan's form: the writes in order, and the touched
// services as they were before (sorted by key). Result is left zero: the
// passes returned it.
func (r *Reconciler) StopRecord() Planned {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.rec
	r.rec = nil
	if c == nil {
		return Planned{}
	}
	sort.Slice(c.before, func(i, j int) bool { return c.before[i].Key.less(c.before[j].Key) < 0 })
	return Planned{Writes: c.writes, Before: c.before}
}
