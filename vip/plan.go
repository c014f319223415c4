package vip

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
)

// Write is one VIP write of an Apply, as Plan records it.
type Write struct {
	Op  string     `json:"op"` // "add" or "del"
	VIP netip.Addr `json:"vip"`
}

// linkLooker is a Kernel that can look its link up without creating it
// (*Netlink).
type linkLooker interface {
	LookupLink() (found bool, err error)
}

// Plan returns the writes Apply(ctx, desired) would issue now and what it
// would reach if they all succeed, without writing: it lists the link and
// runs Apply's planner. A link that does not exist yet holds nothing (Apply
// would create it). Neither the link nor the ownership record is touched.
// Like Apply, it trusts the set the last Apply reached and reads nothing
// for it.
func (r *Reconciler) Plan(ctx context.Context, desired []netip.Addr) ([]Write, Result, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.valid && slices.Equal(desired, r.reached) {
		return nil, r.held, r.heldErr
	}
	want, errs := wantSet(desired)
	if err := ctx.Err(); err != nil {
		return nil, Result{}, errors.Join(append(errs, err)...)
	}
	link := r.k.Link()
	if l, ok := r.k.(linkLooker); ok {
		found, err := l.LookupLink()
		if err != nil {
			return nil, Result{}, errors.Join(append(errs, fmt.Errorf("look up vip link %s: %w", link, err))...)
		}
		if !found {
			p := planWrites(r.mode, r.owned, want, nil)
			return p.writes, p.predict(), errors.Join(errs...)
		}
	}
	entries, err := r.k.List(r.mode)
	if err != nil {
		return nil, Result{}, errors.Join(append(errs, fmt.Errorf("list vips (%s) on %s: %w", r.mode, link, err))...)
	}
	p := planWrites(r.mode, r.owned, want, entries)
	return p.writes, p.predict(), errors.Join(errs...)
}
