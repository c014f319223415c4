package ipvs

import "context"

// Read dumps the kernel once (a full read, as Resync makes) without writing
// anything, and returns the owned services with their reals. The daemon
// calls it at start to adopt what a previous run left: reals keep their
// weights until their first health verdict. The next Apply trusts this read.
func (r *Reconciler) Read(ctx context.Context) (Snapshot, error) {
	if err := ctx.Err(); err != nil {
		return Snapshot{}, err
	}
	r.mu.Lock()
	r.gen++
	err := r.readAll(&pass{r: r, ctx: ctx})
	var snap Snapshot
	if err != nil {
		r.valid = false
	} else {
		snap = r.statsLocked()
	}
	r.mu.Unlock()
	if err != nil {
		return Snapshot{}, err
	}
	return snap, nil
}
