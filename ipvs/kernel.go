package ipvs

import "strconv"

// Kernel is the IPVS table of one network namespace. Netlink implements it
// over the real kernel, Fake in memory with the same rules: adding what
// exists is EEXIST, a missing service is ESRCH, a missing real ENOENT, an
// unknown scheduler ENOENT; services read back carry the HASHED flag.
type Kernel interface {
	// Services dumps every service (with Reals empty), in one read.
	Services() ([]Service, error)
	// Reals dumps the reals of one service, in one read. Like the kernel,
	// a missing service gives an empty list.
	Reals(Key) ([]Real, error)
	// Write issues ws in order and returns one error per write, nil where
	// it succeeded. Each write stands alone, as in the kernel, which takes
	// many in one message and answers each: one that fails stops none of
	// the others (a real added to a service whose add failed fails too).
	// An add or update of a service carries its complete value (update
	// overwrites scheduler, all flags, timeout and netmask). A write whose
	// answer never came (no ack within nlbatch.AckTimeout) fails with an
	// error wrapping nlbatch.ErrUnknown: the kernel may have made it; the
	// writes of the messages after its own then fail unsent
	// (nlbatch.ErrNotSent).
	Write(ws []Write) []error
}

// Write is one kernel write.
type Write struct {
	Op      Op       `json:"op"`
	Service Key      `json:"service"`
	Svc     *Service `json:"svc,omitempty"`  // add_service, update_service: the complete value
	Real    *Real    `json:"real,omitempty"` // add_real, update_real
	RealKey RealKey  `json:"real_key"`       // delete_real
}

// Op is a kind of kernel write.
type Op int

// The kernel writes.
const (
	OpAddService Op = iota
	OpUpdateService
	OpDeleteService
	OpAddReal
	OpUpdateReal
	OpDeleteReal
	numOps
)

var opNames = [numOps]string{"add_service", "update_service", "delete_service", "add_real", "update_real", "delete_real"}

func (o Op) String() string {
	if o < 0 || o >= numOps {
		return "op?"
	}
	return opNames[o]
}

// verb is how errors name the operation.
func (o Op) verb() string {
	switch o {
	case OpAddService, OpAddReal:
		return "add"
	case OpUpdateService, OpUpdateReal:
		return "update"
	}
	return "delete"
}

// Writes counts kernel writes by kind.
type Writes [numOps]int

// Total is the number of writes of every kind.
func (w Writes) Total() int {
	n := 0
	for _, c := range w {
		n += c
	}
	return n
}

func (w Writes) String() string {
	s := ""
	for i, c := range w {
		if c != 0 {
			if s != "" {
				s += " "
			}
			s += opNames[i] + "=" + strconv.Itoa(c)
		}
	}
	if s == "" {
		return "none"
	}
	return s
}
