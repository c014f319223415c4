package vip

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/kglb/kglb/internal/nlbatch"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
)

// Options configures a Reconciler.
type Options struct {
	// Kernel is the link to manage (a *Netlink, or a *Fake in tests).
	// Required.
	Kernel Kernel
	// Mode is how VIPs are held: ModeRoute ("", the default) or
	// ModeAddress.
	Mode Mode
	// StateDir is where address mode records the addresses kglb owns
	// (file "vip-addresses"). Required in address mode; in route mode the
	// record is read for the addresses it names, which kglb then removes.
	StateDir string
	// Logger receives one line per VIP added or removed (default: discard).
	Logger hclog.Logger
	// Registerer receives the kglb_vip_* metrics (nil: none).
	Registerer prometheus.Registerer
}

// Reconciler keeps the VIPs held by one link equal to a desired set. What
// kglb owns is what carries ProtoKGLB (route mode) or is named in the
// record under the state directory (address mode); everything else on the
// link is foreign and never touched.
type Reconciler struct {
	k       Kernel
	mode    Mode
	log     hclog.Logger
	metrics *metrics

	mu    sync.Mutex
	file  ownedFile           // unset without a state directory
	owned map[netip.Addr]bool // address mode: what kglb owns, as last known
	saved map[netip.Addr]bool // address mode: what the file says
	// stale is what the record names that kglb owns but no longer wants:
	// addresses on another link, or on any link in route mode, by link;
	// staleDirty says the record still lists some that sweep removed.
	stale      map[string]map[netip.Addr]bool
	staleDirty bool
	// sweepRoutes is true until a sweep has removed kglb's routes that are
	// not on the link in route mode.
	sweepRoutes bool
	// reached is the desired set the last Apply reached (in full, or
	// short only by lasting errors: see run), held and heldErr what that
	// Apply returned (without its writes); valid says whether they are
	// still trusted (until a Resync or a pass that failed otherwise).
	reached []netip.Addr
	held    Result
	heldErr error
	valid   bool
	// known is Held and Foreign as the last read of the link, and the
	// writes after it, left them, whatever the desired set: what a pass
	// whose read fails still knows (see apply).
	known Result
}

// Result is what one Apply reached. The slices are sorted (IPv4 first).
type Result struct {
	// Held lists the VIPs held by entries kglb owns after Apply: the
	// desired ones it holds, plus any undesired one whose delete failed.
	Held []netip.Addr
	// Foreign lists the desired VIPs the link already held through an
	// entry kglb does not own (an operator's address or route). kglb
	// leaves them alone; they work, and kglb never removes them.
	Foreign []netip.Addr
	// Unusable lists the desired VIPs (address mode) whose address is on
	// the link but not usable yet: an IPv6 address in duplicate address
	// detection, or that failed it (see AddrState). They are not held, so
	// not announced. kglb adds no second address for them (the kernel
	// keeps one per value and would refuse it, EEXIST), and reports each
	// as an error, so that the pass is retried until it is usable.
	Unusable []netip.Addr
	// Added and Removed list the entries this Apply added and removed.
	Added, Removed []netip.Addr
	// Writes is the number of VIP writes issued (adds and deletes, failed
	// ones included; not the link's creation). Zero when nothing differed.
	Writes int
}

// Holds reports whether the link holds a after Apply, by kglb's entry or a
// foreign one: whether traffic to a is delivered locally, so it may be
// announced.
func (r Result) Holds(a netip.Addr) bool {
	a = a.Unmap()
	_, held := slices.BinarySearchFunc(r.Held, a, netip.Addr.Compare)
	_, foreign := slices.BinarySearchFunc(r.Foreign, a, netip.Addr.Compare)
	return held || foreign
}

// New returns a Reconciler for opts.Kernel. In address mode it reads the
// ownership record; a record it cannot read is an error (fix or remove the
// named line), since guessing could remove an operator's address.
func New(opts Options) (*Reconciler, error) {
	if opts.Kernel == nil {
		return nil, errors.New("vip: Kernel is required")
	}
	mode, err := ParseMode(string(opts.Mode))
	if err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, fmt.Errorf("register vip metrics: %w", err)
	}
	r := &Reconciler{k: opts.Kernel, mode: mode, log: log, metrics: m, sweepRoutes: true}
	if mode == ModeAddress && opts.StateDir == "" {
		return nil, errors.New("vip: address mode needs a state directory to record the addresses kglb owns")
	}
	if opts.StateDir == "" {
		return r, nil
	}
	link := opts.Kernel.Link()
	r.file = ownedFile{path: filepath.Join(opts.StateDir, stateFile), link: link}
	byLink, err := r.file.load()
	switch {
	case err != nil && mode == ModeAddress:
		return nil, err
	case err != nil:
		// Route mode owns no address: leaving those of a record it cannot
		// read in place is safe, and the start goes on.
		log.Warn("cannot read the vip ownership record: addresses kglb added in address mode are left in place", "err", err)
		r.file = ownedFile{}
		return r, nil
	}
	if mode == ModeAddress {
		r.saved = byLink[link]
		if r.saved == nil {
			r.saved = map[netip.Addr]bool{}
		}
		delete(byLink, link)
		r.owned = maps.Clone(r.saved)
	}
	r.stale = byLink
	for l, set := range r.stale {
		// An address of the same value on this link is not kglb's: the
		// record says where kglb added it.
		log.Info("vip_interface or vip_mode changed: kglb removes the addresses it added before", "record_link", l, "addresses", len(set), "link", link, "mode", mode)
	}
	return r, nil
}

// Apply makes the link hold exactly the desired VIPs, as far as kglb owns
// them. It may be called again with the same value and then writes nothing.
//
// It looks the link up (creating kglb's own dummy link if needed), reads the
// link's entries in one dump, diffs them against desired, and issues only
// the writes that differ, in batches of requests (one sendmsg for up to 64
// writes, each acked on its own): adds first, then deletes, each in address
// order. Adds go first so that a cancelled or failing Apply errs on the side
// of serving a VIP rather than dropping one. A desired VIP the link already
// holds through a foreign entry is left as it is; an entry kglb does not own
// is never removed. An entry someone deleted is added again by the next
// Resync (drift repair): Apply with the set the last Apply reached in full
// (or short only by a lasting failure, returned again: see run) trusts it
// and reads nothing, so a pass that changes no VIP among 10,000 costs a
// comparison.
//
// Apply carries on past an item that fails and returns what it reached
// together with errors.Join of every failure, each naming its VIP. A
// ctx cancelled before the writes stops them. Apply(ctx, nil) removes every entry
// kglb owns and leaves the link itself in place.
func (r *Reconciler) Apply(ctx context.Context, desired []netip.Addr) (Result, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.valid && slices.Equal(desired, r.reached) {
		return r.held, r.heldErr
	}
	return r.run(ctx, desired)
}

// Resync is Apply after a fresh look at the link, whatever the last Apply
// reached: it repairs what someone else changed. The daemon calls it every
// resync_interval.
func (r *Reconciler) Resync(ctx context.Context, desired []netip.Addr) (Result, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.run(ctx, desired)
}

// run is Apply and Resync under r.mu, reading the link.
func (r *Reconciler) run(ctx context.Context, desired []netip.Addr) (Result, error) {
	start := time.Now()
	res, settled, err := r.apply(ctx, desired)
	// A pass that failed used not to be trusted at all, so that the next
	// Apply read the link again: a write that failed or whose outcome is
	// unknown, a read that failed, leave the link's state unknown, and
	// only a read puts it right. That rule stays. But a pass may be
	// settled and still fail, each time alike: a VIP whose address is not
	// usable (DAD failed), a clean-up of another link or of the record
	// that keeps failing, a desired VIP that is not valid. Its listing was
	// read after the clean-up, every write on the link went through, and
	// a pass again now would write nothing on the link: its Result is what
	// the link holds, as any cached Result is. What would change it is a
	// change from outside (detection ending, an operator removing the
	// address), which Resync reads like any drift; the engine resyncs the
	// VIPs at every retry of a pass that failed, so a pass that fails
	// only thus is read again at the retries' pace, not at each health
	// verdict's. Its error is returned by every Apply it answers.
	r.valid = settled
	if r.valid {
		r.reached = slices.Clone(desired)
		r.held = Result{Held: res.Held, Foreign: res.Foreign, Unusable: res.Unusable}
		r.heldErr = err
	}
	r.metrics.duration.Observe(time.Since(start).Seconds())
	if err != nil {
		r.metrics.applies.WithLabelValues("error").Inc()
	} else {
		r.metrics.applies.WithLabelValues("ok").Inc()
	}
	return res, err
}

// apply is Apply under r.mu: it validates desired, makes sure the link
// exists, sweeps, lists the link once, plans the writes and executes them.
//
// The sweep waits for the link, as adds go before deletes: a start on a
// link that is missing (not up yet, or a mistyped vip_interface) leaves
// kglb's old entries in place (no VIP is held, so none is announced, until
// the link exists). It goes before the listing, so that the pass
// reads the link as the sweep left it: a VIP held by an address kglb added
// in address mode, which route mode would count as held by a foreign
// entry, is held by a route at the end of the same pass.
//
// settled says that the link was read and every write on it went through:
// the errors, if any, are the lasting ones that a pass again would meet
// the same (invalid VIPs, a failed clean-up, unusable addresses).
func (r *Reconciler) apply(ctx context.Context, desired []netip.Addr) (res Result, settled bool, err error) {
	want, errs := wantSet(desired)
	if err := ctx.Err(); err != nil {
		return Result{}, false, errors.Join(append(errs, err)...)
	}
	link := r.k.Link()
	changed, err := r.k.EnsureLink()
	if changed {
		outcome := outcomeOK
		if err != nil {
			outcome = outcomeError
		}
		r.metrics.write(opLink, outcome)
	}
	if err != nil {
		return Result{}, false, errors.Join(append(errs, fmt.Errorf("ensure vip link %s: %w", link, err))...)
	}
	if changed {
		r.log.Info("created vip link", "link", link)
	}
	if err := r.sweep(ctx); err != nil {
		errs = append(errs, err)
	}
	entries, err := r.k.List(r.mode) // the one read of the kernel
	if err != nil {
		// Nothing was written, so the link holds what it held after the
		// last pass that read it (unless the link was just made, empty).
		// Reporting nothing held would have the engine withdraw the route
		// of every VIP for one failed dump (an interrupted or overrun
		// netlink dump), and announce them again at the retry.
		var res Result
		if !changed {
			res = r.known.within(want)
		}
		return res, false, errors.Join(append(errs, fmt.Errorf("list vips (%s) on %s: %w", r.mode, link, err))...)
	}
	res, execErrs, settled := r.execute(ctx, planWrites(r.mode, r.owned, want, entries))
	return res, settled, errors.Join(append(errs, execErrs...)...)
}

// sweep removes what kglb added and no longer wants since vip_interface or
// vip_mode changed (both are read at start only): its routes (ProtoKGLB) on
// every link but this one in route mode and on every link in address mode,
// and the addresses its record names on another link, or on any link in
// route mode. Nothing else is touched: a route of another protocol, an
// address the record does not name. An entry already gone, or whose link
// is gone, counts as removed.
//
// apply runs it once the link exists. The routes are looked for once per
// Reconciler (a start), the addresses until the record names none to
// remove. What fails stays to do: each pass that reads the link (a Resync,
// or an Apply that does not take the cache: see run) tries again, and
// every pass is incomplete (an error) until the sweep is done.
func (r *Reconciler) sweep(ctx context.Context) error {
	if (!r.sweepRoutes && len(r.stale) == 0) || ctx.Err() != nil {
		return nil
	}
	var errs []error
	if r.sweepRoutes {
		routes, err := r.k.ListProto(ProtoKGLB)
		if err != nil {
			errs = append(errs, fmt.Errorf("list kglb's vip routes on every link: %w", err))
		} else {
			byLink := map[string][]Entry{}
			for _, e := range routes {
				if r.mode == ModeRoute && e.Link == r.k.Link() {
					continue
				}
				byLink[e.Link] = append(byLink[e.Link], e.Entry)
			}
			if len(byLink) > 0 {
				if err := r.recordWritable(); err != nil {
					return errors.Join(append(errs, err)...)
				}
			}
			n := len(errs)
			for _, l := range slices.Sorted(maps.Keys(byLink)) {
				_, rerrs := r.remove(l, ModeRoute, byLink[l])
				errs = append(errs, rerrs...)
			}
			r.sweepRoutes = len(errs) > n
		}
	}
	if len(r.stale) > 0 {
		if err := r.recordWritable(); err != nil {
			return errors.Join(append(errs, err)...)
		}
	}
	for _, l := range slices.Sorted(maps.Keys(r.stale)) {
		set := r.stale[l]
		entries := make([]Entry, 0, len(set))
		for _, a := range slices.SortedFunc(maps.Keys(set), netip.Addr.Compare) {
			entries = append(entries, Entry{Prefix: hostPrefix(a)})
		}
		gone, rerrs := r.remove(l, ModeAddress, entries)
		errs = append(errs, rerrs...)
		for _, a := range gone {
			delete(set, a)
			r.staleDirty = true
		}
		if l == r.k.Link() {
			// Route mode on the link the addresses are on: the last read
			// may have found a VIP held, as foreign, by the address just
			// removed. A pass whose read fails must not report it held
			// (see apply); the next read finds whatever else holds it.
			// (A new slice: the old one is a Result handed out. gone is
			// sorted, as the entries are.)
			var foreign []netip.Addr
			for _, a := range r.known.Foreign {
				if _, removed := slices.BinarySearchFunc(gone, a, netip.Addr.Compare); !removed {
					foreign = append(foreign, a)
				}
			}
			r.known.Foreign = foreign
		}
		if len(set) == 0 {
			delete(r.stale, l)
		}
	}
	if r.staleDirty {
		if err := r.save(r.saved); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// remove deletes entries (of mode m) from link for sweep, and returns the
// VIPs that are gone, whether it removed them or found them gone already,
// in entries' order.
func (r *Reconciler) remove(link string, m Mode, entries []Entry) (gone []netip.Addr, errs []error) {
	changes := make([]Change, len(entries))
	for i, e := range entries {
		changes[i] = Change{Op: OpDel, Entry: Entry{Prefix: e.Prefix, Proto: e.Proto}}
	}
	werrs := r.k.WriteOn(link, m, changes)
	removed := 0
	for i, e := range entries {
		a := e.Prefix.Addr()
		switch err := werrs[i]; {
		case err == nil:
			r.metrics.write(OpDel, outcomeOK)
			removed++
			gone = append(gone, a)
		case isNotExist(err) || errors.Is(err, unix.ENODEV):
			r.metrics.write(OpDel, outcomeGone)
			gone = append(gone, a)
		default:
			r.metrics.write(OpDel, outcomeError)
			errs = append(errs, fmt.Errorf("remove vip %s (%s kglb added on %s before vip_interface or vip_mode changed): %w", a, m, link, err))
		}
	}
	if removed > 0 {
		r.log.Info("removed vips kglb left behind", "link", link, "mode", m, "removed", removed,
			"vips", vipSample(nil, gone), "errors", len(errs))
	}
	return gone, errs
}

// wantSet is the set of desired VIPs, unmapped, and an error for each one
// that is not a unicast address without zone (left out of the set).
func wantSet(desired []netip.Addr) (map[netip.Addr]bool, []error) {
	var errs []error
	want := make(map[netip.Addr]bool, len(desired))
	for _, a := range desired {
		a = a.Unmap()
		if !a.IsValid() || a.Zone() != "" || a.IsUnspecified() || a.IsMulticast() {
			errs = append(errs, fmt.Errorf("vip %s: not a unicast address without zone", a))
			continue
		}
		want[a] = true
	}
	return want, errs
}

// plan is what it takes to make a link hold the desired VIPs, worked out
// from one listing of the link.
type plan struct {
	// writes are the adds, then the deletes, each in address order. Adds
	// go first so that a cancelled or failing Apply errs on the side of
	// serving a VIP rather than dropping one.
	writes []Write
	// ours is what the link holds now through entries kglb owns.
	ours map[netip.Addr]bool
	// foreign is the desired VIPs the link holds through an entry kglb
	// does not own, sorted.
	foreign []netip.Addr
	// unusable is the state of every address listed that is not usable
	// yet; unusableWant the desired VIPs among them, sorted.
	unusable     map[netip.Addr]AddrState
	unusableWant []netip.Addr
}

// planWrites is the pure planner of Apply and Plan: from the mode, the
// addresses kglb owns in address mode (owned), the desired set (want) and
// the entries listed on the link, it returns the writes to issue. Only host
// entries count; a wider local route (AnyIP) is someone's design.
func planWrites(mode Mode, owned, want map[netip.Addr]bool, entries []Entry) plan {
	held := make(map[netip.Addr]bool, len(entries)) // held by any entry
	p := plan{ours: make(map[netip.Addr]bool, len(entries))}
	for _, e := range entries {
		a := e.Prefix.Addr()
		host := e.Prefix.Bits() == a.BitLen()
		switch mode {
		case ModeRoute:
			if !host {
				continue
			}
			held[a] = true
			if e.Proto == ProtoKGLB {
				p.ours[a] = true
			}
		case ModeAddress:
			// An address that is there but not usable blocks an add
			// (EEXIST) all the same: it is held, but holds nothing yet.
			held[a] = true
			if e.State != AddrUsable {
				if p.unusable == nil {
					p.unusable = map[netip.Addr]AddrState{}
				}
				p.unusable[a] = e.State
			}
			if host && owned[a] {
				p.ours[a] = true
			}
		}
	}
	var add, del []netip.Addr
	for a := range want {
		_, unusable := p.unusable[a]
		switch {
		case !held[a]:
			add = append(add, a)
		case unusable:
			p.unusableWant = append(p.unusableWant, a)
		case !p.ours[a]:
			p.foreign = append(p.foreign, a)
		}
	}
	for a := range p.ours {
		if !want[a] {
			del = append(del, a)
		}
	}
	slices.SortFunc(add, netip.Addr.Compare)
	slices.SortFunc(del, netip.Addr.Compare)
	slices.SortFunc(p.foreign, netip.Addr.Compare)
	slices.SortFunc(p.unusableWant, netip.Addr.Compare)
	for _, a := range add {
		p.writes = append(p.writes, Write{Op: OpAdd, VIP: a})
	}
	for _, a := range del {
		p.writes = append(p.writes, Write{Op: OpDel, VIP: a})
	}
	return p
}

// predict is the Result of executing p when every write succeeds.
func (p plan) predict() Result {
	res := Result{Foreign: p.foreign, Unusable: p.unusableWant, Writes: len(p.writes)}
	held := maps.Clone(p.ours)
	for a := range p.unusable {
		delete(held, a)
	}
	for _, w := range p.writes {
		if w.Op == OpAdd {
			held[w.VIP] = true
			res.Added = append(res.Added, w.VIP)
		} else {
			delete(held, w.VIP)
			res.Removed = append(res.Removed, w.VIP)
		}
	}
	res.Held = slices.SortedFunc(maps.Keys(held), netip.Addr.Compare)
	return res
}

// execute issues p's writes in one Kernel.Write, carrying on past a write
// that fails; a ctx cancelled before it writes nothing. In address mode it records the
// intent before adding, and what kglb owns afterwards. It returns what it
// reached and every failure, each naming its VIP; settled is false when a
// failure is other than an unusable address (see apply).
func (r *Reconciler) execute(ctx context.Context, p plan) (_ Result, _ []error, settled bool) {
	var errs []error
	link := r.k.Link()
	ours, foreign := p.ours, p.foreign
	if r.mode == ModeAddress {
		// An owned address that is gone is no longer kglb's: should
		// someone add it later, it is theirs.
		r.owned = maps.Clone(ours)
		// Record the intent before adding, so a crash between the add and
		// the record cannot leave an address kglb would then treat as
		// foreign forever. Without the record nothing is added, as the
		// ipvs package adds no service it could not record: the pass is
		// incomplete, and retried.
		intent := maps.Clone(ours)
		for _, w := range p.writes {
			if w.Op == OpAdd {
				intent[w.VIP] = true
			}
		}
		if n := len(intent) - len(ours); n > 0 {
			if err := r.save(intent); err != nil {
				errs = append(errs, fmt.Errorf("record ownership of %d new vip addresses on %s (none added): %w", n, link, err))
				p.writes = slices.DeleteFunc(slices.Clone(p.writes), func(w Write) bool { return w.Op == OpAdd })
			}
		}
	}

	res := Result{}
	proto := uint8(0)
	if r.mode == ModeRoute {
		proto = ProtoKGLB
	}
	// A ctx cancelled before the writes stops them all; once begun they
	// go through, in batches (Kernel.Write): 1,000 VIPs are 16 syscalls.
	ws := p.writes
	if err := ctx.Err(); err != nil {
		errs = append(errs, err)
		ws = nil
	}
	changes := make([]Change, len(ws))
	for i, w := range ws {
		changes[i] = Change{Op: w.Op, Entry: Entry{Prefix: hostPrefix(w.VIP), Proto: proto}}
	}
	var werrs []error
	var unknown []netip.Addr // adds whose ack was not read
	if len(changes) > 0 {
		werrs = r.k.Write(r.mode, changes)
	}
	res.Writes = len(changes)
	logEach := r.log.IsDebug() // not worth boxing the arguments for a silent logger
	for i, w := range ws {
		err := werrs[i]
		if w.Op == OpAdd {
			switch {
			case err == nil:
				r.metrics.write(OpAdd, outcomeOK)
				ours[w.VIP] = true
				res.Added = append(res.Added, w.VIP)
				if logEach {
					r.log.Debug("added vip", "vip", w.VIP, "link", link, "mode", r.mode)
				}
			case isExist(err):
				// Someone added it since the dump: it is held, but not by us.
				r.metrics.write(OpAdd, outcomeExists)
				foreign = append(foreign, w.VIP)
			default:
				r.metrics.write(OpAdd, outcomeError)
				errs = append(errs, fmt.Errorf("add vip %s (%s on %s): %w", w.VIP, r.mode, link, err))
				if errors.Is(err, nlbatch.ErrUnknown) {
					unknown = append(unknown, w.VIP)
				}
			}
			continue
		}
		switch {
		case err == nil:
			r.metrics.write(OpDel, outcomeOK)
			delete(ours, w.VIP)
			res.Removed = append(res.Removed, w.VIP)
			if logEach {
				r.log.Debug("removed vip", "vip", w.VIP, "link", link, "mode", r.mode)
			}
		case isNotExist(err):
			r.metrics.write(OpDel, outcomeGone)
			delete(ours, w.VIP)
		default:
			r.metrics.write(OpDel, outcomeError)
			errs = append(errs, fmt.Errorf("remove vip %s (%s on %s): %w", w.VIP, r.mode, link, err))
		}
	}

	if r.mode == ModeAddress {
		// An add whose ack was not read may have been made: it stays
		// owned (not held), so the next pass, which lists the link (the
		// pass failed), finds the address kglb's rather than foreign.
		owned := maps.Clone(ours)
		for _, a := range unknown {
			owned[a] = true
		}
		r.owned = owned
		if !maps.Equal(owned, r.saved) {
			if err := r.save(owned); err != nil {
				errs = append(errs, err)
			}
		}
	}

	// An address of kglb's that is not usable is kept (a delete above
	// removes it when undesired), but holds nothing.
	for a := range p.unusable {
		delete(ours, a)
	}
	res.Held = slices.SortedFunc(maps.Keys(ours), netip.Addr.Compare)
	slices.SortFunc(foreign, netip.Addr.Compare)
	res.Foreign = foreign
	res.Unusable = p.unusableWant
	settled = len(errs) == 0
	for _, a := range p.unusableWant {
		errs = append(errs, unusableError(a, link, p.unusable[a]))
	}
	r.known = Result{Held: res.Held, Foreign: res.Foreign}
	r.metrics.held.Set(float64(len(res.Held)))
	r.metrics.foreign.Set(float64(len(res.Foreign)))
	// One line per Apply that wrote, as ipvs does: a cold start of 1,000
	// VIPs is one line, not 1,000 for journald to take while the start
	// goes on. Each VIP is named at Debug, and the first few here.
	if res.Writes > 0 && r.log.IsInfo() {
		r.log.Info("vips applied", "added", len(res.Added), "removed", len(res.Removed),
			"vips", vipSample(res.Added, res.Removed), "link", link, "mode", r.mode,
			"held", len(res.Held), "foreign", len(res.Foreign), "errors", len(errs))
	} else if res.Writes == 0 {
		r.log.Debug("vips in sync", "link", link, "held", len(res.Held), "foreign", len(res.Foreign))
	}
	return res, errs, settled
}

// within is what r (Held and Foreign, as known) says the link holds for
// the desired set want: every entry kglb owns is still there, and a foreign
// entry counts for a VIP that is desired.
func (r Result) within(want map[netip.Addr]bool) Result {
	out := Result{Held: r.Held}
	for _, a := range r.Foreign {
		if want[a] {
			out.Foreign = append(out.Foreign, a)
		}
	}
	return out
}

// unusableError says why the desired VIP a, whose address on link is in
// state s, is not held.
func unusableError(a netip.Addr, link string, s AddrState) error {
	if s == AddrDADFailed {
		return fmt.Errorf("vip %s: its address on %s failed duplicate address detection (another host has it) and is not usable: remove it, and add it with nodad if it is meant to be on several hosts", a, link)
	}
	return fmt.Errorf("vip %s: its address on %s is tentative (duplicate address detection under way), not usable yet; kglb announces it once it is", a, link)
}

// recordWritable writes the record as it is, in address mode, before a
// clean-up removes what held the VIPs under the old settings: address mode
// adds no address it cannot record (see execute), and with the old routes
// gone and no address added every VIP would be down until the state
// directory is fixed. Until it is, the clean-up waits and the old entries
// hold the VIPs.
func (r *Reconciler) recordWritable() error {
	if r.mode != ModeAddress {
		return nil
	}
	if err := r.write(r.saved); err != nil {
		return fmt.Errorf("the clean-up after a vip_interface or vip_mode change waits for the ownership record: %w", err)
	}
	return nil
}

// save writes the ownership record, owned (the addresses kglb owns on the
// link in address mode) with the stale ones still to remove, and remembers
// what it says.
func (r *Reconciler) save(owned map[netip.Addr]bool) error {
	if maps.Equal(owned, r.saved) && !r.staleDirty {
		return nil
	}
	return r.write(owned)
}

// write writes the ownership record, owned and the stale addresses, and
// remembers what it says.
func (r *Reconciler) write(owned map[netip.Addr]bool) error {
	byLink := make(map[string]map[netip.Addr]bool, len(r.stale)+1)
	maps.Copy(byLink, r.stale)
	if r.mode == ModeAddress {
		byLink[r.file.link] = owned
	}
	if err := r.file.save(byLink); err != nil {
		return err
	}
	r.saved = maps.Clone(owned)
	r.staleDirty = false
	return nil
}

// vipSample names the VIPs an Apply added (+) and removed (-), the first
// few of each, and how many more: what a reload changed, in one short field.
func vipSample(added, removed []netip.Addr) string {
	const few = 4
	var b strings.Builder
	for _, l := range []struct {
		sign  string
		addrs []netip.Addr
	}{{"+", added}, {"-", removed}} {
		for i, a := range l.addrs {
			if i == few {
				fmt.Fprintf(&b, " (%s%d more)", l.sign, len(l.addrs)-few)
				break
			}
			if b.Len() > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(l.sign + a.String())
		}
	}
	return b.String()
}
