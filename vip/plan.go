package vip

import (
	"context"
	"maps"
	"net/netip"

	"github.com/hashicorp/go-hclog"
)

// Write is one VIP write of an Apply, as Plan records it.
type Write struct {
	Op  string     `json:"op"` // "add" or "del"
	VIP netip.Addr `json:"vip"`
}

// recorder is a Kernel that reads from read and records every write; when
// pass is set it also issues the write there (tests compare the two). It
// never creates the link: a plan assumes Apply would.
type recorder struct {
	read    Kernel
	pass    bool
	missing bool // the link does not exist yet: it holds nothing
	writes  []Write
}

// linkLooker is a Kernel that can look its link up without creating it
// (*Netlink).
type linkLooker interface {
	LookupLink() (found bool, err error)
}

func (k *recorder) Link() string { return k.read.Link() }
func (k *recorder) EnsureLink() (bool, error) {
	if k.pass {
		return k.read.EnsureLink()
	}
	if l, ok := k.read.(linkLooker); ok {
		found, err := l.LookupLink()
		k.missing = !found
		return false, err
	}
	return false, nil
}
func (k *recorder) List(m Mode) ([]Entry, error) {
	if k.missing {
		return nil, nil
	}
	return k.read.List(m)
}
func (k *recorder) Add(m Mode, e Entry) error {
	k.writes = append(k.writes, Write{Op: "add", VIP: e.Prefix.Addr()})
	if k.pass {
		return k.read.Add(m, e)
	}
	return nil
}
func (k *recorder) Del(m Mode, e Entry) error {
	k.writes = append(k.writes, Write{Op: "del", VIP: e.Prefix.Addr()})
	if k.pass {
		return k.read.Del(m, e)
	}
	return nil
}

// Plan returns the writes Apply(ctx, desired) would issue now and what it
// would reach, without writing: the same diff runs on a copy of r against a
// kernel that reads the link and records
// writes. The ownership record is not touched.
func (r *Reconciler) Plan(ctx context.Context, desired []netip.Addr) ([]Write, Result, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rec := &recorder{read: r.k}
	m, _ := newMetrics(nil)
	c := &Reconciler{k: rec, mode: r.mode, log: hclog.NewNullLogger(), metrics: m, file: r.file,
		owned: maps.Clone(r.owned), saved: maps.Clone(r.saved), dry: true}
	res, err := c.apply(ctx, desired)
	return rec.writes, res, err
}
