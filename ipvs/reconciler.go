package ipvs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/kglb/kglb/internal/nlbatch"
	"github.com/prometheus/client_golang/prometheus"
)

// ErrForeign is wrapped by the error for a desired service that collides
// with a service kglb did not create: kglb never touches it.
var ErrForeign = errors.New("service exists and was not created by kglb")

// Options configure a Reconciler.
type Options struct {
	// StateDir holds the ownership record (StateFile). Required.
	StateDir string
	// Logger gets state changes at Info and single writes at Debug; nil
	// logs nothing.
	Logger hclog.Logger
	// Registerer gets the kglb_ipvs_* metrics; nil registers none.
	Registerer prometheus.Registerer
	// Now is the clock for drain deadlines; nil is time.Now.
	Now func() time.Time
}

// Reconciler makes the kernel's IPVS table match a Desired value, for the
// services kglb owns.
//
// Reading. The first pass, and every pass after Resync, reads the kernel
// once: one dump of all services and one dump of the reals of each owned
// service. Between those full reads it trusts its cache of the last-known
// kernel state (updated with every write it makes), so an Apply for one
// weight change is one write and no read, even at 100k reals. Apply takes
// the whole Desired value every time; what keeps it cheap when one service
// changed is that each service the last diff left in place (the same reals,
// specs and settings, compared by value) is skipped without a lookup per
// real; a caller that says which services may have changed since its last
// Apply (Desired.Changed, as the engine's health passes do) has only those
// looked at, so one weight change among 10,000 services costs that service.
// Drift made by someone else is repaired by the next full read: the daemon
// calls Resync every resync_interval. A write that fails in a way that shows
// the cache was wrong (ESRCH, ENOENT, EEXIST) makes the pass run again at
// once with a full read. Removing a real with a drain time also re-reads that one service's
// reals, because the decision needs live connection counts.
//
// Writing. It diffs on Key and RealKey and issues only the writes that
// differ, deciding the whole pass first and handing its writes to the kernel
// in one Kernel.Write (many per netlink message, each answered on its own;
// a read in the middle of a pass, for a drain, sends what is decided
// first), in a safe order: new services, each followed by its reals in
// sorted order; settings of existing services (an in-place UpdateService
// with the complete value, so scheduler, flags, timeout and netmask change
// without dropping connections); added and changed reals; removed reals;
// and last, removed services. It never issues an UpdateReal that changes
// nothing (each one rebuilds an mh table). For an mh service it keeps the
// kernel's list of reals in canonical order (mhTail), so every node with the
// same reals builds the same Maglev table whatever the history: adding a
// real deletes and re-adds the reals that sort above it (1 + 2k writes
// with k such reals, +1 when the new real does not start at weight 0; a
// removal or a weight change is still one write), and an adopted service
// whose list is out of order is put in order the same way. Connections
// keep their real across the re-add (with net.ipv4.vs.expire_nodest_conn=0,
// see docs/cluster.md). It carries on past a failed item and
// returns what it reached plus errors.Join of what failed, each error
// naming the operation and the object. Apply with the same value again
// writes nothing.
//
// Ownership. Only services recorded in the state file are changed or
// deleted. A service someone else created is reported in Result.Foreign and
// never touched, even when Desired names the same key (that item fails with
// ErrForeign). On start nothing is flushed: existing owned services are
// adopted, so a restart with unchanged Desired writes nothing.
//
// Drain. A real removed from a service with Drain > 0 is set to weight 0
// (no new connections) and deleted once it has no active connections or its
// drain time has passed, whichever is first; Result.NextDrain says when to
// call Apply again. Deadlines live in memory: after a restart a leftover
// real starts a new drain period, erring on the side of its connections.
// A service removed from Desired is deleted at once, reals and all: by the
// time lb removes a service its route has been withdrawn and held (design
// section 3), so no new traffic reaches this node for it, and keeping a
// weight-0 service while its VIP goes away would drain nothing.
//
// A Reconciler is safe for concurrent use; passes run one at a time.
type Reconciler struct {
	k         Kernel
	statePath string
	log       hclog.Logger
	m         *metrics
	now       func() time.Time

	mu       sync.Mutex
	owned    map[Key]bool
	cache    map[Key]*cached
	foreign  map[Key]bool
	valid    bool
	readAt   time.Time
	draining map[Key]map[RealKey]time.Time
	gen      uint64 // pass number, to tell which reals were read in this pass
	nreals   int    // reals in the cache, kept up to date with every change
	seq      uint64 // last cachedReal.seq handed out
	// last is the cache entry of each service the last pass was handed,
	// in its order (nil after a full read), so the next pass with the
	// same services finds them in step.
	last []*cached
	// unsaved: the ownership record lacks a change of owned, whose save
	// failed; the next pass saves it even if it changes no ownership.
	unsaved bool

	stats atomic.Pointer[Snapshot] // the last Stats built, for a scrape during a pass

	dry bool // a copy made by Plan: records writes, never saves ownership

	rec *recording // set between StartRecord and StopRecord
}

// cached is the last-known kernel state of one owned service.
type cached struct {
	svc     Service
	reals   map[RealKey]cachedReal
	readGen uint64 // the pass that last read (or created) reals
	// reached is the desired list of reals the last diff of this service
	// wrote in full, in the order it was given; nil after a read or a
	// failure. A desired service with these reals, in this order, and the
	// settings in place needs no diff: that keeps a pass over 10,000
	// unchanged services and one changed one at the cost of comparing
	// values, without a lookup per real (BenchmarkHealthChange).
	reached    []reachedReal
	reachedSvc reachedSvc
	// handed is the Reals slice of the desired service last reached, as
	// Apply was handed it: Apply keeps it, and a caller that hands the
	// same slice again (the engine, for every service a pass leaves
	// alone) has it taken as equal without a look at its elements.
	handed []Real
}

// reachedSvc is the settings of a desired service, as given (the HASHED
// flag and a zero netmask aside): equal ones passed the same validation.
type reachedSvc struct {
	scheduler string
	flags     Flags
	timeout   time.Duration
	netmask   uint8
	drain     time.Duration
}

func reachedSvcOf(s *Service) reachedSvc {
	return reachedSvc{s.Scheduler, s.Flags &^ FlagHashed, s.Timeout, s.netmask(), s.Drain}
}

// reachedReal is one real of cached.reached.
type reachedReal struct {
	key  RealKey
	spec realSpec
}

// holds reports whether the kernel holds s as the last diff left it: the
// same reals in the same order with the same specs, the same settings, and
// no other real (none draining). s need not be validated: it equals a value
// that was.
func (c *cached) holds(s *Service) bool {
	if c.reached == nil || len(c.reached) != len(s.Reals) || len(c.reals) != len(s.Reals) || reachedSvcOf(s) != c.reachedSvc {
		return false
	}
	if len(s.Reals) == 0 || &s.Reals[0] == &c.handed[0] {
		return true
	}
	for i := range s.Reals {
		rl := &s.Reals[i]
		if c.reached[i].key != (RealKey{rl.Addr, rl.Port}) || c.reached[i].spec != rl.spec() {
			return false
		}
	}
	return true
}

// reach records that s was written in full. It makes a new slice: Plan's
// copy of the reconciler shares the old one.
func (c *cached) reach(s *Service, handed []Real) {
	c.reachedSvc = reachedSvcOf(s)
	c.handed = handed
	c.reached = make([]reachedReal, len(s.Reals))
	for i := range s.Reals {
		c.reached[i] = reachedReal{s.Reals[i].Key(), s.Reals[i].spec()}
	}
}

// cachedReal is the last-known kernel state of one real, kept small: the
// cache holds every owned real, and its size is what a cold apply of 100k
// reals allocates and the garbage collector scans.
type cachedReal struct {
	spec             realSpec
	active, inactive int32
	stats            Stats
	// seq orders the service's reals as the kernel lists them: a real
	// added later has a higher seq and sits nearer the head of the list.
	seq uint64
}

// inUse counts the connections that keep a removed real draining. IPVS
// counts every UDP entry as inactive (there is no state to call active),
// so for UDP and for fwmark services, which may carry UDP, all entries
// count; for TCP and SCTP only established ones do.
func (c cachedReal) inUse(k Key) int32 {
	if k.Protocol == UDP || k.FWMark != 0 {
		return c.active + c.inactive
	}
	return c.active
}

func toCached(rl Real) cachedReal {
	return cachedReal{spec: rl.spec(), active: int32(rl.ActiveConns), inactive: int32(rl.InactiveConns), stats: rl.Stats}
}

func (c cachedReal) real(rk RealKey) Real {
	return Real{Addr: rk.Addr, Port: rk.Port, Weight: c.spec.Weight, Forward: c.spec.Forward,
		UpperThreshold: c.spec.Upper, LowerThreshold: c.spec.Lower,
		ActiveConns: int(c.active), InactiveConns: int(c.inactive), Stats: c.stats}
}

// Draining is a real kept at weight 0 until it can be deleted.
type Draining struct {
	Service     Key
	Real        RealKey
	Deadline    time.Time
	ActiveConns int
}

// Result is what a pass reached.
type Result struct {
	// Writes are the kernel writes issued, by kind.
	Writes Writes
	// FullRead is whether this pass dumped the whole table.
	FullRead bool
	// Services and Reals count the owned services in the kernel and their reals.
	Services, Reals int
	// Foreign are services kglb did not create, as of the last full read.
	Foreign []Key
	// Draining are reals waiting to be deleted; NextDrain is the earliest
	// deadline (zero when none): call Apply again by then.
	Draining  []Draining
	NextDrain time.Time
}

// NewReconciler returns a reconciler for kernel k. It loads the ownership
// record from opts.StateDir (creating the directory), and fails if the
// record is corrupt rather than forgetting what kglb owns. It reads nothing
// from the kernel until the first Apply.
func NewReconciler(k Kernel, opts Options) (*Reconciler, error) {
	if opts.StateDir == "" {
		return nil, errors.New("ipvs reconciler: no state directory")
	}
	if err := os.MkdirAll(opts.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("ipvs reconciler: create state directory: %w", err)
	}
	path := filepath.Join(opts.StateDir, StateFile)
	owned, err := loadOwned(path)
	if err != nil {
		return nil, err
	}
	r := &Reconciler{
		k:         k,
		statePath: path,
		log:       opts.Logger,
		m:         newMetrics(opts.Registerer),
		now:       opts.Now,
		owned:     owned,
		cache:     map[Key]*cached{},
		foreign:   map[Key]bool{},
		draining:  map[Key]map[RealKey]time.Time{},
	}
	if r.log == nil {
		r.log = hclog.NewNullLogger()
	}
	if r.now == nil {
		r.now = time.Now
	}
	r.m.owned.Set(float64(len(owned)))
	return r, nil
}

// Apply makes the owned part of the kernel match d: see Reconciler. It
// keeps the Reals slices of d's services: to change a service's reals,
// hand a new slice, never change one handed before in place (a slice
// handed again is taken to hold what it held).
func (r *Reconciler) Apply(ctx context.Context, d Desired) (Result, error) {
	return r.run(ctx, d, false)
}

// Resync is Apply after a full read of the kernel, repairing drift that
// someone else made (a deleted service, a changed weight). The daemon calls
// it every resync_interval.
func (r *Reconciler) Resync(ctx context.Context, d Desired) (Result, error) {
	return r.run(ctx, d, true)
}

func (r *Reconciler) run(ctx context.Context, d Desired, full bool) (Result, error) {
	want := d.Services
	r.mu.Lock()
	defer r.mu.Unlock()
	start := time.Now()
	if full {
		r.valid = false
	}
	full = !r.valid
	res, stale, err := r.pass(ctx, want, d.Changed, full)
	if stale && !full {
		// The cache was wrong (someone changed the kernel): read it all and
		// try once more.
		r.valid = false
		writes := res.Writes
		res, _, err = r.pass(ctx, want, nil, true)
		for i := range writes {
			res.Writes[i] += writes[i]
		}
	}
	r.m.duration.Observe(time.Since(start).Seconds())
	if n := res.Writes.Total(); n > 0 {
		// A pass that only set weights, from the cache, is a health pass (each
		// change of a known verdict has its own Info line, from health) or a
		// reload's (its plan has one): at Info it was one line per pass, 2,500
		// at a cold start of 10,000 reals, each costing the probes CPU in kglb
		// and in journald. Adds, deletes and what a full read repaired stay
		// at Info.
		lvl := hclog.Info
		if n == res.Writes[OpUpdateReal] && !res.FullRead {
			lvl = hclog.Debug
		}
		if r.log.GetLevel() <= lvl {
			r.log.Log(lvl, "ipvs applied", "writes", res.Writes.String(), "full_read", res.FullRead,
				"services", res.Services, "reals", res.Reals, "errors", countErrs(err))
		}
	} else if r.log.IsDebug() {
		r.log.Debug("ipvs in sync", "full_read", res.FullRead, "services", res.Services, "errors", countErrs(err))
	}
	return res, err
}

func countErrs(err error) int {
	if err == nil {
		return 0
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return len(j.Unwrap())
	}
	return 1
}

// pass is one reconcile pass.
type pass struct {
	r      *Reconciler
	ctx    context.Context
	res    Result
	errs   []error
	stale  bool
	ctxErr error
	dirty  bool // owned changed
	failed bool // a write failed: some service is not as the pass left it

	// The writes decided and not yet sent, and for each the service it
	// writes to (for its error) and, for an add_service, whether the
	// service was owned before this pass. flush sends them.
	queue []Write
	to    []queued
}

type queued struct {
	svc      *Service
	wasOwned bool
}

func (p *pass) fail(err error) {
	p.errs = append(p.errs, err)
	p.r.m.errors.Inc()
	if errors.Is(err, syscall.ESRCH) || errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.EEXIST) {
		p.stale = true
	}
}

// write queues one kernel write unless the context is done: op on service
// s (its complete value for an add or update), with the real rl (add,
// update) or the real key rk (delete), and reports whether it did. The
// caller updates the cache as if the write succeeded; flush sends the queue
// in one Kernel.Write and undoes or reports what failed. Deciding the
// whole pass before sending lets the kernel take its writes many per
// message.
func (p *pass) write(op Op, s *Service, rl *Real, rk RealKey) bool {
	if p.ctxErr == nil {
		p.ctxErr = p.ctx.Err()
		if p.ctxErr != nil {
			p.errs = append(p.errs, fmt.Errorf("ipvs apply stopped: %w", p.ctxErr))
		}
	}
	if p.ctxErr != nil {
		return false
	}
	p.res.Writes[op]++
	if p.r.rec != nil {
		p.r.rec.note(p.r, op, s.Key, s, rl, rk)
	}
	w := Write{Op: op, Service: s.Key, RealKey: rk}
	if op == OpAddService || op == OpUpdateService {
		w.Svc = s
	}
	if rl != nil {
		w.Real, w.RealKey = rl, rl.Key()
	}
	p.queue = append(p.queue, w)
	p.to = append(p.to, queued{svc: s})
	return true
}

// flush sends the queued writes. The cache already holds their outcome as
// success; for each that failed it reports the error, naming the operation
// and the object, and puts things right: a service whose add failed leaves
// the cache (and ownership, unless it was owned before; an EEXIST makes it
// foreign), and its reals' adds, which failed with it, say nothing more; a
// real whose add failed leaves the cache; a service whose delete failed
// stays owned; any other failure makes the cache unknown, so the next pass
// reads the kernel in full. A write whose ack was not read (nlbatch.
// ErrUnknown) may or may not have been made: the next pass reads the kernel
// in full, and a service whose add it was stays owned, so that it is found
// as kglb's rather than taken for someone else's. An error that shows the
// cache was wrong (ESRCH, ENOENT, EEXIST) makes the pass run again at once
// with a full read. A delete of what is already gone (ESRCH for a service,
// ENOENT for a real) succeeded.
func (p *pass) flush() {
	if len(p.queue) == 0 {
		return
	}
	r := p.r
	errs := r.k.Write(p.queue)
	var failedAdd map[Key]bool
	for i, err := range errs {
		w, q := p.queue[i], p.to[i]
		if err == nil || w.Op == OpDeleteService && errors.Is(err, syscall.ESRCH) || w.Op == OpDeleteReal && errors.Is(err, syscall.ENOENT) {
			r.m.writes[w.Op][0].Inc()
			continue
		}
		r.m.writes[w.Op][1].Inc()
		p.failed = true
		// The service is not as the pass left it: the next pass diffs it
		// in full and finds no service in step.
		if c := r.cache[w.Service]; c != nil {
			c.reached = nil
		}
		r.last = nil
		unknown := errors.Is(err, nlbatch.ErrUnknown)
		if unknown {
			r.valid = false
		}
		if failedAdd[w.Service] {
			continue
		}
		switch w.Op {
		case OpAddService:
			if failedAdd == nil {
				failedAdd = map[Key]bool{}
			}
			failedAdd[w.Service] = true
			if c := r.cache[w.Service]; c != nil {
				r.nreals -= len(c.reals)
				delete(r.cache, w.Service)
			}
			if !q.wasOwned && !unknown {
				// Not ours after all: someone created it since the last
				// read (EEXIST), or it could not be created.
				delete(r.owned, w.Service)
				p.dirty = true
				if errors.Is(err, syscall.EEXIST) {
					r.foreign[w.Service] = true
					err = fmt.Errorf("%w: %w", ErrForeign, err)
				}
			}
			p.svcErr(w.Op, *q.svc, err)
		case OpDeleteService:
			r.owned[w.Service] = true
			p.dirty = true
			r.valid = false
			p.svcErr(w.Op, *q.svc, err)
		case OpUpdateService:
			r.valid = false
			p.svcErr(w.Op, *q.svc, err)
		case OpAddReal:
			if c := r.cache[w.Service]; c != nil {
				if _, ok := c.reals[w.RealKey]; ok {
					delete(c.reals, w.RealKey)
					r.nreals--
				}
			}
			p.realErr(w.Op, *q.svc, w.RealKey, err)
		default:
			r.valid = false
			p.realErr(w.Op, *q.svc, w.RealKey, err)
		}
	}
	p.queue, p.to = p.queue[:0], p.to[:0]
}

func (p *pass) realErr(op Op, s Service, rk RealKey, err error) {
	prep := "to"
	if op != OpAddReal {
		prep = "of"
		if op == OpDeleteReal {
			prep = "from"
		}
	}
	p.fail(fmt.Errorf("%s real %s %s service %s: %w", op.verb(), rk, prep, s.label(), err))
}

func (p *pass) svcErr(op Op, s Service, err error) {
	if errors.Is(err, syscall.ENOENT) && op != OpDeleteService {
		// For a service ENOENT means a missing scheduler module, not a
		// stale cache (a missing service is ESRCH): no re-read.
		p.errs = append(p.errs, fmt.Errorf("%s service %s: %w (is scheduler module ip_vs_%s loaded?)", op.verb(), s.label(), err, s.Scheduler))
		p.r.m.errors.Inc()
		return
	}
	p.fail(fmt.Errorf("%s service %s: %w", op.verb(), s.label(), err))
}

// pass runs one reconcile pass, step by step: index and check the desired
// services, read the kernel (full passes), add the new services, sync the
// existing ones, delete the unwanted ones, send the writes, then record
// what the pass reached and owns. Writes are queued in that order and sent
// by flush in one Kernel.Write. changed is Desired.Changed.
func (r *Reconciler) pass(ctx context.Context, want []Service, changed []int, full bool) (Result, bool, error) {
	r.gen++
	p := &pass{r: r, ctx: ctx}
	p.res.FullRead = full
	now := r.now()

	inStep := r.inStep(want, changed, full)
	// The sets live here, not in the steps, so they stay on the stack.
	d := desiredSet{svcs: make(map[Key]*Service)}
	if !inStep {
		d.wanted = make(map[Key]bool, len(want))
	}
	// In step, with no real draining (a draining service is looked at on
	// every pass), only the services that may have changed need a look.
	if !inStep || len(r.draining) > 0 {
		changed = nil
	}
	d.order = p.index(d, want, changed, full, inStep)
	if full {
		if err := r.readAll(p); err != nil {
			return p.result(), false, errors.Join(append(p.errs, err)...)
		}
	}
	adds := p.addNew(&d)
	p.syncExisting(&d, adds, now)
	if !inStep {
		p.deleteUnwanted(d.wanted)
	}
	// flush may take failed adds out of the cache: the services in step
	// are those it holds after it.
	p.flush()
	p.record(want, inStep)
	return p.result(), p.stale, errors.Join(p.errs...)
}

// desiredSet is what index found in want: the services that need work
// this pass, checked and in want's order, and (unless want is in step)
// the key of every service wanted.
type desiredSet struct {
	wanted map[Key]bool // nil when in step: every owned service is wanted
	svcs   map[Key]*Service
	order  []Key
}

// inStep reports whether want lists the owned services of the last pass
// in its order, as the engine's passes do: then each is found in step
// (r.last) and every owned service is wanted, with no lookup and no set of
// keys. With changed (Desired.Changed) only the services it lists can have
// moved, and only theirs are compared.
func (r *Reconciler) inStep(want []Service, changed []int, full bool) bool {
	inStep := !full && len(want) == len(r.last) && len(want) == len(r.owned)
	if changed != nil {
		for _, i := range changed {
			if !inStep || i < 0 || i >= len(want) {
				return false
			}
			inStep = r.last[i].svc.Key == want[i].Key
		}
		return inStep
	}
	for i := 0; inStep && i < len(want); i++ {
		inStep = r.last[i].svc.Key == want[i].Key
	}
	return inStep
}

// index indexes and checks the desired services into d's sets and returns
// their order: those at the indexes in changed when it is not nil (in
// step: every other service is as the last pass left it), else every one.
// A service that fails its checks is still "wanted", so an owned one is
// not deleted for it. A service the kernel holds as the last diff left it
// goes no further.
func (p *pass) index(d desiredSet, want []Service, changed []int, full, inStep bool) []Key {
	r := p.r
	var order []Key
	n := len(want)
	if changed != nil {
		n = len(changed)
	}
	for x := range n {
		i := x
		if changed != nil {
			i = changed[x]
		}
		k := want[i].Key
		var c *cached
		if inStep {
			c = r.last[i]
		} else {
			if d.wanted[k] {
				p.fail(fmt.Errorf("service %s: listed twice in the desired state", want[i].label()))
				continue
			}
			d.wanted[k] = true
			c = r.cache[k]
		}
		if !full && c != nil && (len(r.draining) == 0 || len(r.draining[k]) == 0) && c.holds(&want[i]) {
			continue
		}
		s := want[i]
		s.Netmask = s.netmask()
		s.Flags &^= FlagHashed
		if err := s.validate(); err != nil {
			p.fail(fmt.Errorf("service %s: %w", s.label(), err))
			continue
		}
		d.svcs[s.Key] = &s
		order = append(order, s.Key)
	}
	return order
}

// addNew adds the desired services the cache lacks (not foreign ones),
// each followed by its reals in canonical order, and returns the keys it
// added.
func (p *pass) addNew(d *desiredSet) []Key {
	r := p.r
	var adds []Key
	for _, k := range d.order {
		if r.cache[k] != nil {
			continue
		}
		if r.foreign[k] {
			p.fail(fmt.Errorf("add service %s: %w", d.svcs[k].label(), ErrForeign))
			continue
		}
		adds = append(adds, k)
	}
	if len(adds) > 0 {
		prev := make(map[Key]bool, len(adds))
		if !p.claim(adds, prev) {
			adds = nil
		}
		for _, k := range adds {
			n := len(p.errs)
			p.addService(d.svcs[k], prev[k])
			if c := r.cache[k]; c != nil && len(p.errs) == n && p.ctxErr == nil {
				c.reach(d.svcs[k], d.svcs[k].Reals)
			}
		}
	}
	return adds
}

// claim records ownership of the services about to be added, before they
// are created, so a crash in between leaves a service kglb will adopt, not
// one it will call foreign forever. It notes in prev whether each was
// owned before, and returns false (undoing the claim) if the record could
// not be saved.
func (p *pass) claim(adds []Key, prev map[Key]bool) bool {
	r := p.r
	for _, k := range adds {
		prev[k] = r.owned[k]
		r.owned[k] = true
	}
	err := r.saveOwned()
	if err == nil {
		r.unsaved = false // the whole record was written
	}
	if err != nil {
		for _, k := range adds {
			if !prev[k] {
				delete(r.owned, k)
			}
		}
		p.fail(fmt.Errorf("record ownership of %d new services (none added): %w", len(adds), err))
		return false
	}
	return true
}

// syncExisting brings each desired service the cache holds, and this pass
// did not add (adds), to its desired value: settings in place, then reals.
func (p *pass) syncExisting(d *desiredSet, adds []Key, now time.Time) {
	added := make(map[Key]bool, len(adds))
	for _, k := range adds {
		added[k] = true
	}
	for _, k := range d.order {
		c := p.r.cache[k]
		if c == nil || added[k] {
			continue
		}
		n := len(p.errs)
		p.syncService(d.svcs[k], c, now)
		if len(p.errs) == n && p.ctxErr == nil {
			c.reach(d.svcs[k], d.svcs[k].Reals)
		} else {
			c.reached = nil
		}
	}
}

// record notes, after flush, the services in step for the next pass and
// the ownership this pass changed; a stale cache is read in full next.
func (p *pass) record(want []Service, inStep bool) {
	r := p.r
	if !inStep {
		// A write that failed left its service out of step (flush made
		// r.last nil): a pass that lists only other services as changed
		// would never look at it again before a full read.
		r.last = nil
		if !p.failed {
			r.last = r.inOrder(want)
		}
	}
	// An earlier save that failed is retried: else the record keeps a
	// service kglb deleted, and a restart takes the service someone then
	// creates at its key for kglb's own and deletes it.
	if p.dirty || r.unsaved {
		err := r.saveOwned()
		r.unsaved = err != nil
		if err != nil {
			p.fail(fmt.Errorf("record ownership: %w", err))
		}
	}
	if p.stale {
		r.valid = false
	}
}

// inOrder is the cached entry of each service of want, in its order; nil
// unless the cache holds every one.
func (r *Reconciler) inOrder(want []Service) []*cached {
	last := make([]*cached, len(want))
	for i := range want {
		if last[i] = r.cache[want[i].Key]; last[i] == nil {
			return nil
		}
	}
	return last
}

// deleteUnwanted deletes the owned services that wanted lacks.
func (p *pass) deleteUnwanted(wanted map[Key]bool) {
	r := p.r
	var dels []Key
	for k := range r.owned {
		if !wanted[k] {
			dels = append(dels, k)
		}
	}
	SortKeys(dels)
	for _, k := range dels {
		c := r.cache[k]
		if c == nil { // already gone from the kernel
			delete(r.owned, k)
			delete(r.draining, k)
			p.dirty = true
			continue
		}
		if !p.write(OpDeleteService, &c.svc, nil, RealKey{}) {
			continue
		}
		if r.log.IsDebug() {
			r.log.Debug("deleted service", "service", k.String())
		}
		r.nreals -= len(c.reals)
		delete(r.cache, k)
		delete(r.owned, k)
		delete(r.draining, k)
		p.dirty = true
	}
}

// readAll rebuilds the cache from one dump of services and one dump of the
// reals of each owned service.
func (r *Reconciler) readAll(p *pass) error {
	r.m.reads[0].Inc()
	svcs, err := r.k.Services()
	if err != nil {
		return fmt.Errorf("read ipvs services: %w", err)
	}
	r.cache = make(map[Key]*cached, len(r.owned))
	r.last = nil
	r.foreign = map[Key]bool{}
	r.nreals = 0
	for _, s := range svcs {
		if !r.owned[s.Key] {
			r.foreign[s.Key] = true
			continue
		}
		r.m.reads[1].Inc()
		reals, err := r.k.Reals(s.Key)
		if err != nil {
			// Without its reals the service cannot be diffed; the pass
			// stops before writing anything.
			return fmt.Errorf("read reals of service %s: %w", s.Key, err)
		}
		c := &cached{svc: s, readGen: r.gen}
		r.load(c, reals)
		r.cache[s.Key] = c
	}
	for k := range r.draining {
		if r.cache[k] == nil {
			delete(r.draining, k)
		}
	}
	r.readAt = r.now()
	r.valid = true
	return nil
}

// load fills c's reals from a dump, which lists them head first: the
// newest real first, so it gets the highest seq.
func (r *Reconciler) load(c *cached, reals []Real) {
	c.reals = make(map[RealKey]cachedReal, len(reals))
	for i := len(reals) - 1; i >= 0; i-- {
		cr := toCached(reals[i])
		r.seq++
		cr.seq = r.seq
		c.reals[reals[i].Key()] = cr
	}
	r.nreals += len(c.reals)
}

func (p *pass) addService(s *Service, wasOwned bool) {
	r := p.r
	if !p.write(OpAddService, s, nil, RealKey{}) {
		if !wasOwned {
			delete(r.owned, s.Key)
			p.dirty = true
		}
		return
	}
	p.to[len(p.to)-1].wasOwned = wasOwned
	if r.log.IsDebug() {
		r.log.Debug("added service", "service", s.Key.String())
	}
	delete(r.draining, s.Key)
	c := &cached{svc: kernelService(*s), reals: make(map[RealKey]cachedReal, len(s.Reals)), readGen: r.gen}
	r.cache[s.Key] = c
	// Canonical order: the mh scheduler fills its lookup table walking the
	// reals in insertion order, so LB nodes that add the same reals in the
	// same (sorted) order build the same table and send a flow to the same
	// real, whichever node ECMP picks.
	reals := s.Reals
	if !slices.IsSortedFunc(reals, func(a, b Real) int { return a.Key().compare(b.Key()) }) {
		reals = slices.Clone(reals)
		slices.SortFunc(reals, func(a, b Real) int { return a.Key().compare(b.Key()) })
	}
	for _, rl := range reals {
		p.addReal(s, c, rl)
	}
}

func (p *pass) addReal(s *Service, c *cached, rl Real) {
	if !p.write(OpAddReal, s, &rl, RealKey{}) {
		return
	}
	p.r.seq++
	c.reals[rl.Key()] = cachedReal{spec: rl.spec(), seq: p.r.seq}
	p.r.nreals++
}

// readdReal deletes a real and adds it again with spec rl, which moves it
// to the head of the kernel's list (mhTail). The kernel keeps a deleted
// real in its trash while connections point at it and takes it back from
// there on the add, so those connections keep their real and their counts.
func (p *pass) readdReal(s *Service, c *cached, rl Real) {
	rk := rl.Key()
	if !p.write(OpDeleteReal, s, nil, rk) {
		return
	}
	delete(c.reals, rk)
	p.r.nreals--
	p.addReal(s, c, rl)
}

// mhTail returns the reals of an mh service that must be added, or deleted
// and added again, for the kernel's list of reals to be in canonical order,
// in the order to add them; nil when the list is canonical already.
//
// The mh scheduler fills its lookup table walking the list of reals, and
// the table depends on that order: two nodes must hold the same list to
// send a flow to the same real. The kernel links each new real at the head
// of the list, so the order is that of the adds, and the canonical order is
// the reals added in ascending RealKey order (as a new service is created):
// seq ascending with the key. The reals in canonical order from the
// smallest up stay; from the first that is missing or out of order on,
// every real is added again, in ascending order. A new real x thus costs 1
// add plus a delete and an add for every real with a key above x (and one
// update when there are such reals and x's weight is not 0: see
// addTail).
func mhTail(reals []Real, c *cached) []Real {
	cmp := func(a, b Real) int { return a.Key().compare(b.Key()) }
	if !slices.IsSortedFunc(reals, cmp) {
		reals = slices.Clone(reals)
		slices.SortFunc(reals, cmp)
	}
	var last uint64
	for i, rl := range reals {
		cur, ok := c.reals[rl.Key()]
		if !ok || cur.seq <= last {
			return reals[i:]
		}
		last = cur.seq
	}
	return nil
}

func (p *pass) updateReal(s *Service, c *cached, rl Real) bool {
	if !p.write(OpUpdateReal, s, &rl, RealKey{}) {
		return false
	}
	old := c.reals[rl.Key()]
	old.spec = rl.spec()
	c.reals[rl.Key()] = old
	return true
}

// syncService brings one existing owned service in line: its settings,
// its reals (syncReals), then the reals it no longer has (removeReals),
// after reading their connection counts when they may drain. All but that
// read only queue writes (pass.write) and update the cache as if they
// succeed.
func (p *pass) syncService(s *Service, c *cached, now time.Time) {
	if s.spec() != c.svc.spec() {
		p.updateService(s, c)
	}
	drains := p.r.draining[s.Key]
	if !p.syncReals(s, c, drains) {
		if len(drains) == 0 {
			delete(p.r.draining, s.Key)
		}
		return
	}
	// Removing reals with a drain time needs live connection counts.
	if s.Drain > 0 && c.readGen != p.r.gen && !p.readConns(s, c) {
		return
	}
	p.removeReals(s, c, drains, now)
}

func (p *pass) updateService(s *Service, c *cached) {
	if p.write(OpUpdateService, s, nil, RealKey{}) {
		stats := c.svc.Stats
		c.svc = kernelService(*s)
		c.svc.Stats = stats
	}
}

// syncReals queues the updates and adds that give the kernel s's reals,
// ends the drain of each real back in s (drains: the service's), and
// reports whether the kernel holds reals s does not.
func (p *pass) syncReals(s *Service, c *cached, drains map[RealKey]time.Time) (removes bool) {
	// For mh, new reals and reals out of canonical order are (re-)added in
	// tail; its reals get no separate update (the add carries the spec).
	var tail []Real
	if s.Scheduler == schedMH {
		tail = mhTail(s.Reals, c)
	}
	adds, matched := p.updateReals(s, c, drains, tail)
	removes = matched < len(c.reals)
	slices.SortFunc(adds, func(a, b Real) int { return a.Key().compare(b.Key()) })
	for _, rl := range adds {
		p.addReal(s, c, rl)
	}
	p.addTail(s, c, tail)
	return removes
}

// updateReals diffs s's reals against the cache in one pass, queuing the
// update of each that changed and is not in tail, and returns those to add
// (none when there is a tail: it holds them) and how many the cache holds.
// Desired reals are unique (validated), so the kernel has reals to remove
// exactly when it holds more than matched: no set is built on the path of
// a single weight change.
func (p *pass) updateReals(s *Service, c *cached, drains map[RealKey]time.Time, tail []Real) (adds []Real, matched int) {
	var inTail map[RealKey]bool
	if len(tail) > 0 {
		inTail = make(map[RealKey]bool, len(tail))
		for _, rl := range tail {
			inTail[rl.Key()] = true
		}
	}
	for _, rl := range s.Reals {
		cur, ok := c.reals[rl.Key()]
		if drains != nil {
			delete(drains, rl.Key()) // back in the config: drain over
		}
		if !ok {
			if inTail == nil {
				adds = append(adds, rl)
			}
			continue
		}
		matched++
		if cur.spec != rl.spec() && !inTail[rl.Key()] {
			p.updateReal(s, c, rl)
		}
	}
	return adds, matched
}

// addTail queues the (re-)adds of an mh service's tail, in order.
//
// A new real with reals re-added after it goes in at weight 0, which
// keeps it out of the table (weight 0 from the start gives it no turns),
// and gets its weight last: until then every table the kernel builds is
// the old one. With net.ipv4.vs.expire_nodest_conn=1 (the package sets 0)
// the kernel expires the connections of a real caught between its delete
// and its add; while the table is the old one, the next packet of such a
// connection (sloppy_tcp) finds the same real.
func (p *pass) addTail(s *Service, c *cached, tail []Real) {
	var raise []Real
	for i, rl := range tail {
		if _, ok := c.reals[rl.Key()]; ok {
			p.readdReal(s, c, rl)
			continue
		}
		if rl.Weight != 0 && i < len(tail)-1 {
			raise = append(raise, rl)
			rl.Weight = 0
		}
		p.addReal(s, c, rl)
	}
	for _, rl := range raise {
		if _, ok := c.reals[rl.Key()]; ok {
			p.updateReal(s, c, rl)
		}
	}
}

// readConns reloads the cache of s from the kernel, for its reals' live
// connection counts, after sending the writes queued so far (the read must
// see them). It reports whether the read succeeded (else it failed the
// pass).
func (p *pass) readConns(s *Service, c *cached) bool {
	r := p.r
	p.flush()
	r.m.reads[1].Inc()
	reals, err := r.k.Reals(s.Key)
	if err != nil {
		p.fail(fmt.Errorf("read reals of service %s: %w", s.label(), err))
		return false
	}
	r.nreals -= len(c.reals)
	r.load(c, reals)
	c.readGen = r.gen
	return true
}

// removeReals queues the removal of the reals the cache holds and s does
// not, in order: one with connections and a drain time stays at weight 0
// until it has none or its deadline (in drains, the service's) passes.
func (p *pass) removeReals(s *Service, c *cached, drains map[RealKey]time.Time, now time.Time) {
	for _, rk := range goneReals(s, c) {
		cur := c.reals[rk]
		deadline, draining := drains[rk]
		if s.Drain > 0 && cur.inUse(s.Key) > 0 && (!draining || now.Before(deadline)) {
			if !draining {
				drains = p.startDrain(s, drains, rk, cur, now)
			}
			if cur.spec.Weight != 0 {
				zero := cur.real(rk)
				zero.Weight = 0
				p.updateReal(s, c, zero)
			}
			continue
		}
		p.deleteReal(s, c, drains, rk)
	}
	for rk := range drains {
		if _, ok := c.reals[rk]; !ok { // gone by someone else's hand
			delete(drains, rk)
		}
	}
	if len(drains) == 0 {
		delete(p.r.draining, s.Key)
	}
}

// goneReals are the reals the cache of s holds and s does not, sorted.
func goneReals(s *Service, c *cached) []RealKey {
	want := make(map[RealKey]bool, len(s.Reals))
	for _, rl := range s.Reals {
		want[rl.Key()] = true
	}
	var gone []RealKey
	for rk := range c.reals {
		if !want[rk] {
			gone = append(gone, rk)
		}
	}
	slices.SortFunc(gone, RealKey.compare)
	return gone
}

// startDrain notes that real rk of s (cur) drains until now plus its drain
// time, in drains, which it creates if nil and returns.
func (p *pass) startDrain(s *Service, drains map[RealKey]time.Time, rk RealKey, cur cachedReal, now time.Time) map[RealKey]time.Time {
	deadline := now.Add(s.Drain)
	if drains == nil {
		drains = map[RealKey]time.Time{}
		p.r.draining[s.Key] = drains
	}
	drains[rk] = deadline
	p.r.log.Info("draining real", "service", s.Key.String(), "real", rk.String(),
		"active_conns", cur.active, "until", deadline.Format(time.RFC3339))
	return drains
}

func (p *pass) deleteReal(s *Service, c *cached, drains map[RealKey]time.Time, rk RealKey) {
	if !p.write(OpDeleteReal, s, nil, rk) {
		return
	}
	if p.r.log.IsDebug() {
		p.r.log.Debug("deleted real", "service", s.Key.String(), "real", rk.String())
	}
	if _, ok := c.reals[rk]; ok {
		delete(c.reals, rk)
		p.r.nreals--
	}
	delete(drains, rk)
}

func (p *pass) result() Result {
	r := p.r
	res := p.res
	res.Services, res.Reals = len(r.cache), r.nreals
	for k := range r.foreign {
		res.Foreign = append(res.Foreign, k)
	}
	SortKeys(res.Foreign)
	for k, m := range r.draining {
		for rk, dl := range m {
			d := Draining{Service: k, Real: rk, Deadline: dl}
			if c := r.cache[k]; c != nil {
				d.ActiveConns = int(c.reals[rk].active)
			}
			res.Draining = append(res.Draining, d)
			if res.NextDrain.IsZero() || dl.Before(res.NextDrain) {
				res.NextDrain = dl
			}
		}
	}
	slices.SortFunc(res.Draining, func(a, b Draining) int {
		if c := a.Service.less(b.Service); c != 0 {
			return c
		}
		return a.Real.compare(b.Real)
	})
	r.m.owned.Set(float64(len(r.owned)))
	r.m.foreign.Set(float64(len(r.foreign)))
	r.m.draining.Set(float64(len(res.Draining)))
	return res
}

// Snapshot is the kernel's counters for the owned services as of ReadAt,
// the last full read.
type Snapshot struct {
	ReadAt   time.Time
	Services []Service // with Reals, Stats and connection counts
}

// Stats returns the counters from the last full read, so metrics need no
// second dump. They are as fresh as the last Resync (connection counts of a
// service that lost reals are as fresh as that Apply). The kernel itself
// sums the packet and byte counters only every 2 s, in its rate estimator.
//
// A pass holds the reconciler for as long as its writes take (seconds for a
// cold start of thousands of reals on a busy machine); a scrape then gets the
// snapshot the last call built rather than waiting (it timed out before).
func (r *Reconciler) Stats() Snapshot {
	if !r.mu.TryLock() {
		if s := r.stats.Load(); s != nil {
			return *s
		}
		r.mu.Lock()
	}
	defer r.mu.Unlock()
	return r.statsLocked()
}

// statsLocked builds the Stats snapshot and keeps it for scrapes. Called
// with mu held.
func (r *Reconciler) statsLocked() Snapshot {
	snap := Snapshot{ReadAt: r.readAt, Services: make([]Service, 0, len(r.cache))}
	for _, c := range r.cache {
		s := c.svc
		s.Flags &^= FlagHashed
		s.Reals = make([]Real, 0, len(c.reals))
		for rk, rl := range c.reals {
			s.Reals = append(s.Reals, rl.real(rk))
		}
		slices.SortFunc(s.Reals, func(a, b Real) int { return a.Key().compare(b.Key()) })
		snap.Services = append(snap.Services, s)
	}
	slices.SortFunc(snap.Services, func(a, b Service) int { return a.Key.less(b.Key) })
	r.stats.Store(&snap)
	return snap
}

// Owned returns the keys of the services kglb owns, sorted.
func (r *Reconciler) Owned() []Key {
	r.mu.Lock()
	defer r.mu.Unlock()
	keys := make([]Key, 0, len(r.owned))
	for k := range r.owned {
		keys = append(keys, k)
	}
	SortKeys(keys)
	return keys
}
