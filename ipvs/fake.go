package ipvs

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Fake is an in-memory Kernel with the kernel's rules, for tests: adding an
// existing service or real is EEXIST, a missing service ESRCH, a missing
// real ENOENT, an unknown scheduler ENOENT, an IPv6 netmask outside 1..128
// EINVAL, a lower threshold above the upper ERANGE; services read back with
// the HASHED flag. It keeps each service's reals in the kernel's list order
// (a new real goes to the head, and a dump reads from the head), which the
// mh scheduler builds its table from. It counts the writes that succeeded,
// by kind, and the dumps. String prints the table sorted, like `ipvsadm -Ln`.
type Fake struct {
	mu       sync.Mutex
	services map[Key]*fakeService
	writes   Writes
	svcReads int
	rlReads  int
	batches  int // calls of Write

	// Inject, when set, is called before every write; a non-nil error fails
	// that write (nothing changes, nothing is counted).
	Inject func(op Op, svc Key, real RealKey) error
}

type fakeService struct {
	svc   Service
	reals map[RealKey]*Real
	list  []RealKey // the kernel's list of reals, head first
}

// NewFake returns an empty fake kernel.
func NewFake() *Fake { return &Fake{services: map[Key]*fakeService{}} }

var _ Kernel = (*Fake)(nil)

func (f *Fake) inject(op Op, k Key, r RealKey) error {
	if f.Inject != nil {
		return f.Inject(op, k, r)
	}
	return nil
}

// Write implements Kernel: each write in turn, as the kernel handles a
// message of many.
func (f *Fake) Write(ws []Write) []error {
	f.mu.Lock()
	f.batches++
	f.mu.Unlock()
	errs := make([]error, len(ws))
	for i, w := range ws {
		errs[i] = f.write(w)
	}
	return errs
}

func (f *Fake) write(w Write) error {
	switch w.Op {
	case OpAddService:
		return f.AddService(*w.Svc)
	case OpUpdateService:
		return f.UpdateService(*w.Svc)
	case OpDeleteService:
		return f.DeleteService(w.Service)
	case OpAddReal:
		return f.AddReal(w.Service, *w.Real)
	case OpUpdateReal:
		return f.UpdateReal(w.Service, *w.Real)
	case OpDeleteReal:
		return f.DeleteReal(w.Service, w.RealKey)
	}
	return fmt.Errorf("write %v: %w", w.Op, syscall.EINVAL)
}

// Batches is how many times Write was called: a pass sends its writes in
// one call.
func (f *Fake) Batches() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.batches
}

// Services implements Kernel.
func (f *Fake) Services() ([]Service, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.svcReads++
	out := make([]Service, 0, len(f.services))
	for _, s := range f.services {
		c := s.svc
		c.Flags |= FlagHashed
		out = append(out, c)
	}
	// The kernel dumps in hash order, not sorted; reverse order keeps
	// callers from relying on any.
	slices.SortFunc(out, func(a, b Service) int { return b.Key.less(a.Key) })
	return out, nil
}

// Reals implements Kernel.
func (f *Fake) Reals(k Key) ([]Real, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rlReads++
	s := f.services[k]
	if s == nil {
		return nil, nil // the kernel's dump of a missing service is empty
	}
	out := make([]Real, 0, len(s.reals))
	for _, rk := range s.list {
		out = append(out, *s.reals[rk])
	}
	return out, nil
}

// List returns the reals of service k in the kernel's list order, head
// first: the order a dump returns and the mh scheduler walks. It is not
// counted as a read.
func (f *Fake) List(k Key) []RealKey {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s := f.services[k]; s != nil {
		return slices.Clone(s.list)
	}
	return nil
}

func fakeCheckService(s Service) error {
	if !slices.Contains(Schedulers, s.Scheduler) {
		return fmt.Errorf("scheduler %q: %w", s.Scheduler, syscall.ENOENT)
	}
	if s.Key.Family == IPv6 && (s.Netmask < 1 || s.Netmask > 128) {
		return syscall.EINVAL
	}
	switch s.Key.Family {
	case IPv4, IPv6:
	default:
		return syscall.EAFNOSUPPORT
	}
	if s.Key.FWMark == 0 {
		switch s.Key.Protocol {
		case TCP, UDP, SCTP:
		default:
			return syscall.EPROTONOSUPPORT
		}
	}
	return nil
}

// AddService adds a service: one write, as Write issues it (tests also call it
// directly, as another program changing the kernel would).
func (f *Fake) AddService(s Service) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.inject(OpAddService, s.Key, RealKey{}); err != nil {
		return err
	}
	if f.services[s.Key] != nil {
		return syscall.EEXIST
	}
	if err := fakeCheckService(s); err != nil {
		return err
	}
	f.services[s.Key] = &fakeService{svc: kernelService(s), reals: map[RealKey]*Real{}}
	f.writes[OpAddService]++
	return nil
}

// kernelService keeps what the kernel stores of s.
func kernelService(s Service) Service {
	return Service{Key: s.Key, Scheduler: s.Scheduler, Flags: s.Flags &^ FlagHashed,
		Timeout: s.Timeout.Truncate(time.Second), Netmask: s.Netmask}
}

// UpdateService overwrites a service's settings: one write, as Write issues it (tests also call it
// directly, as another program changing the kernel would).
func (f *Fake) UpdateService(s Service) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.inject(OpUpdateService, s.Key, RealKey{}); err != nil {
		return err
	}
	cur := f.services[s.Key]
	if cur == nil {
		return syscall.ESRCH
	}
	if err := fakeCheckService(s); err != nil {
		return err
	}
	stats := cur.svc.Stats
	cur.svc = kernelService(s)
	cur.svc.Stats = stats
	f.writes[OpUpdateService]++
	return nil
}

// DeleteService deletes a service: one write, as Write issues it (tests also call it
// directly, as another program changing the kernel would).
func (f *Fake) DeleteService(k Key) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.inject(OpDeleteService, k, RealKey{}); err != nil {
		return err
	}
	if f.services[k] == nil {
		return syscall.ESRCH
	}
	delete(f.services, k)
	f.writes[OpDeleteService]++
	return nil
}

func fakeCheckReal(s *fakeService, r Real) error {
	if FamilyOf(r.Addr) != s.svc.Key.Family {
		return syscall.EAFNOSUPPORT
	}
	if r.LowerThreshold > r.UpperThreshold {
		return syscall.ERANGE
	}
	switch r.Forward {
	case ForwardNAT, 1, ForwardTunnel, ForwardDR:
	default:
		return syscall.EINVAL
	}
	return nil
}

func kernelReal(r Real) Real {
	return Real{Addr: r.Addr, Port: r.Port, Weight: r.Weight, Forward: r.Forward,
		UpperThreshold: r.UpperThreshold, LowerThreshold: r.LowerThreshold}
}

// AddReal adds a real: one write, as Write issues it (tests also call it
// directly, as another program changing the kernel would).
func (f *Fake) AddReal(k Key, r Real) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.inject(OpAddReal, k, r.Key()); err != nil {
		return err
	}
	s := f.services[k]
	if s == nil {
		return syscall.ESRCH
	}
	if err := fakeCheckReal(s, r); err != nil {
		return err
	}
	if s.reals[r.Key()] != nil {
		return syscall.EEXIST
	}
	kr := kernelReal(r)
	s.reals[r.Key()] = &kr
	// list_add: the kernel links a new destination at the head.
	s.list = slices.Insert(s.list, 0, r.Key())
	f.writes[OpAddReal]++
	return nil
}

// UpdateReal updates a real: one write, as Write issues it (tests also call it
// directly, as another program changing the kernel would).
func (f *Fake) UpdateReal(k Key, r Real) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.inject(OpUpdateReal, k, r.Key()); err != nil {
		return err
	}
	s := f.services[k]
	if s == nil {
		return syscall.ESRCH
	}
	if err := fakeCheckReal(s, r); err != nil {
		return err
	}
	cur := s.reals[r.Key()]
	if cur == nil {
		return syscall.ENOENT
	}
	nr := kernelReal(r)
	nr.ActiveConns, nr.InactiveConns, nr.Stats = cur.ActiveConns, cur.InactiveConns, cur.Stats
	s.reals[r.Key()] = &nr
	f.writes[OpUpdateReal]++
	return nil
}

// DeleteReal deletes a real: one write, as Write issues it (tests also call it
// directly, as another program changing the kernel would).
func (f *Fake) DeleteReal(k Key, rk RealKey) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.inject(OpDeleteReal, k, rk); err != nil {
		return err
	}
	s := f.services[k]
	if s == nil {
		return syscall.ESRCH
	}
	if s.reals[rk] == nil {
		return syscall.ENOENT
	}
	delete(s.reals, rk)
	s.list = slices.DeleteFunc(s.list, func(x RealKey) bool { return x == rk })
	f.writes[OpDeleteReal]++
	return nil
}

// SetConns sets a real's connection counts, as traffic would.
func (f *Fake) SetConns(k Key, rk RealKey, active, inactive int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.services[k]
	if s == nil {
		return syscall.ESRCH
	}
	r := s.reals[rk]
	if r == nil {
		return syscall.ENOENT
	}
	r.ActiveConns, r.InactiveConns = active, inactive
	r.Stats.Connections += uint64(active + inactive)
	s.svc.Stats.Connections += uint64(active + inactive)
	return nil
}

// Writes returns the writes that succeeded, by kind.
func (f *Fake) Writes() Writes {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.writes
}

// Reads returns how many service dumps and real dumps were made.
func (f *Fake) Reads() (services, reals int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.svcReads, f.rlReads
}

// ResetCounts zeroes the write and read counters.
func (f *Fake) ResetCounts() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.writes = Writes{}
	f.svcReads, f.rlReads, f.batches = 0, 0, 0
}

// String prints the table like `ipvsadm -Ln`, sorted by service and real,
// with thresholds appended where set, so tests compare text.
func (f *Fake) String() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	keys := make([]Key, 0, len(f.services))
	for k := range f.services {
		keys = append(keys, k)
	}
	SortKeys(keys)
	var b strings.Builder
	b.WriteString("Prot LocalAddress:Port Scheduler Flags\n")
	b.WriteString("  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n")
	for _, k := range keys {
		s := f.services[k]
		writeServiceLine(&b, s.svc)
		rks := make([]RealKey, 0, len(s.reals))
		for rk := range s.reals {
			rks = append(rks, rk)
		}
		slices.SortFunc(rks, RealKey.compare)
		for _, rk := range rks {
			r := s.reals[rk]
			fmt.Fprintf(&b, "  -> %-28s %-7s %-6d %-10d %d", rk.String(), fwdName(r.Forward), r.Weight, r.ActiveConns, r.InactiveConns)
			if r.UpperThreshold != 0 || r.LowerThreshold != 0 {
				fmt.Fprintf(&b, " upper %d lower %d", r.UpperThreshold, r.LowerThreshold)
			}
			b.WriteString("\n")
		}
	}
	return b.String()
}

func fwdName(f Forward) string {
	switch f {
	case ForwardNAT:
		return "Masq"
	case ForwardTunnel:
		return "Tunnel"
	case ForwardDR:
		return "Route"
	case 1:
		return "Local"
	}
	return "?"
}

func writeServiceLine(b *strings.Builder, s Service) {
	k := s.Key
	if k.FWMark != 0 {
		fam := "IPv4"
		if k.Family == IPv6 {
			fam = "IPv6"
		}
		fmt.Fprintf(b, "FWM  %d %s %s", k.FWMark, fam, s.Scheduler)
	} else {
		fmt.Fprintf(b, "%-4s %s %s", strings.ToUpper(k.Protocol.String()), netip.AddrPortFrom(k.Addr, k.Port), s.Scheduler)
	}
	var fl []string
	names := [3]string{"flag-1", "flag-2", "flag-3"}
	if s.Scheduler == "sh" || s.Scheduler == "mh" {
		names[0], names[1] = s.Scheduler+"-fallback", s.Scheduler+"-port"
	}
	for i, f := range []Flags{FlagSched1, FlagSched2, FlagSched3} {
		if s.Flags&f != 0 {
			fl = append(fl, names[i])
		}
	}
	if len(fl) > 0 {
		fmt.Fprintf(b, " (%s)", strings.Join(fl, ","))
	}
	if s.Flags&FlagPersistent != 0 {
		fmt.Fprintf(b, " persistent %d", int64(s.Timeout/time.Second))
	} else if s.Timeout != 0 {
		fmt.Fprintf(b, " timeout %d", int64(s.Timeout/time.Second))
	}
	full := uint8(32)
	if k.Family == IPv6 {
		full = 128
	}
	if s.Netmask != full {
		fmt.Fprintf(b, " mask /%d", s.Netmask)
	}
	if s.Flags&FlagOnePacket != 0 {
		b.WriteString(" ops")
	}
	b.WriteString("\n")
}
