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

	AddService(Service) error
	// UpdateService overwrites every setting of the service (scheduler,
	// all flags, timeout, netmask): always pass the complete value.
	UpdateService(Service) error
	DeleteService(Key) error
	AddReal(Key, Real) error
	UpdateReal(Key, Real) error
	DeleteReal(Key, RealKey) error
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
