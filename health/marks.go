package health

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"sync"
)

// Marks allocates the per-real fwmarks of tunnelled checks from [base, base+count).
// A real keeps its mark for as long as it is listed (stable across reloads, so the
// ipvs package does not rewrite its fwmark service); a real no longer listed gives its
// mark back. A freed mark is handed out again only after the rest of the range has
// been used once, so a probe or packet still carrying an old mark is unlikely to
// reach a new real; after a restart the search starts past the highest mark
// restored (see Restore). Marks are per real address: every VIP and port of a real shares
// one mark, because its fwmark service has one real at port 0 (IPVS keeps the
// packet's destination port). Safe for concurrent use.
type Marks struct {
	mu     sync.Mutex
	base   uint32
	count  uint32
	next   uint32 // offset where the search for a free mark starts
	top    uint32 // one past the highest offset restored before any take
	taken  bool   // a mark has been handed out
	byAddr map[netip.Addr]uint32
	byMark map[uint32]netip.Addr
	avoid  map[uint32]bool // marks of the range that others use (Avoid)
}

// ErrMarksExhausted is returned when every mark of the range is taken.
var ErrMarksExhausted = errors.New("fwmark range exhausted")

// NewMarks returns an allocator for marks base .. base+count-1. Mark 0 means "no
// mark" to the kernel and cannot be part of the range.
func NewMarks(base, count uint32) (*Marks, error) {
	// The sum is taken in 64 bits: a range that ends at the largest fwmark
	// (base+count == 1<<32, which config.Load accepts and its own hint
	// suggests) wraps to 0 in 32 bits and was refused, so kglb would not start
	// with a configuration that `kglb validate` passes.
	if base == 0 || count == 0 || uint64(base)+uint64(count) > 1<<32 {
		return nil, fmt.Errorf("bad fwmark range base %d count %d: want base >= 1, count >= 1, no overflow", base, count)
	}
	return &Marks{base: base, count: count, byAddr: map[netip.Addr]uint32{}, byMark: map[uint32]netip.Addr{}}, nil
}

// Sync makes the allocator hold marks for exactly reals: kept reals keep theirs,
// others are released, new ones get a free mark. It returns the mark of every real
// that has one. When the range runs out, the reals left without a mark are named in
// an error wrapping ErrMarksExhausted; the rest of the result is still valid.
func (m *Marks) Sync(reals []netip.Addr) (map[netip.Addr]uint32, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	want := make(map[netip.Addr]bool, len(reals))
	for _, a := range reals {
		want[a.Unmap()] = true
	}
	for a, mk := range m.byAddr {
		if !want[a] || m.avoid[mk] {
			delete(m.byAddr, a)
			delete(m.byMark, mk)
		}
	}
	// New reals in address order, so that one set of reals gives one allocation.
	var fresh []netip.Addr
	for a := range want {
		if _, ok := m.byAddr[a]; !ok {
			fresh = append(fresh, a)
		}
	}
	sort.Slice(fresh, func(i, j int) bool { return fresh[i].Less(fresh[j]) })
	var short []netip.Addr
	for _, a := range fresh {
		mk, ok := m.take()
		if !ok {
			short = append(short, a)
			continue
		}
		m.byAddr[a] = mk
		m.byMark[mk] = a
	}
	out := make(map[netip.Addr]uint32, len(m.byAddr))
	for a, mk := range m.byAddr {
		out[a] = mk
	}
	if len(short) > 0 {
		return out, fmt.Errorf("no fwmark for %d reals (first %s): %d marks from %d: %w",
			len(short), short[0], m.count, m.base, ErrMarksExhausted)
	}
	return out, nil
}

// MarkInRange reports whether mark is one of base .. base+count-1 (in 64
// bits: a range may end at the largest fwmark).
func MarkInRange(base, count, mark uint32) bool {
	return mark >= base && uint64(mark) < uint64(base)+uint64(count)
}

// Range returns the range the allocator hands marks from.
func (m *Marks) Range() (base, count uint32) { return m.base, m.count }

func (m *Marks) take() (uint32, bool) {
	if uint32(len(m.byMark)) >= m.count {
		return 0, false
	}
	for i := uint32(0); i < m.count; i++ {
		off := (m.next + i) % m.count
		mk := m.base + off
		if _, used := m.byMark[mk]; !used && !m.avoid[mk] {
			m.next = (off + 1) % m.count
			m.taken = true
			return mk, true
		}
	}
	return 0, false
}

// Avoid sets the marks of the range that are not to be handed out, replacing
// the set before: fwmark services kglb did not create use them, and a probe
// with such a mark would go to their reals and judge this one by their health.
// A real that holds one gives it back at its next Sync and gets another;
// Avoid reports whether one does.
func (m *Marks) Avoid(marks []uint32) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	held := false
	m.avoid = nil
	for _, mk := range marks {
		if !MarkInRange(m.base, m.count, mk) {
			continue
		}
		if m.avoid == nil {
			m.avoid = map[uint32]bool{}
		}
		m.avoid[mk] = true
		_, used := m.byMark[mk]
		held = held || used
	}
	return held
}

// Restore claims a mark found in use at start (an fwmark service kglb left in the
// kernel), so that a restart keeps the marks and does not rewrite the services.
// It fails if the mark is out of range or taken by another real.
func (m *Marks) Restore(a netip.Addr, mark uint32) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	a = a.Unmap()
	if !MarkInRange(m.base, m.count, mark) {
		return fmt.Errorf("restore fwmark %d for %s: outside %d..%d", mark, a, m.base, m.base+m.count-1)
	}
	if owner, ok := m.byMark[mark]; ok && owner != a {
		return fmt.Errorf("restore fwmark %d for %s: held by %s", mark, a, owner)
	}
	if old, ok := m.byAddr[a]; ok && old != mark {
		delete(m.byMark, old)
	}
	m.byAddr[a] = mark
	m.byMark[mark] = a
	// The process that left these marks handed them out in this order:
	// the marks past the highest it held are the likeliest never used or
	// freed longest ago, and those below it may have been freed just
	// before it stopped, their probes' flows still alive.
	if off := mark - m.base; !m.taken && off+1 > m.top {
		m.top = off + 1
		m.next = m.top % m.count
	}
	return nil
}
