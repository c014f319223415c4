package health

import (
	"context"
	"net"
	"runtime"
	"sync/atomic"
)

// cpuSlots bounds the probes that run on the CPU at once. A probe holds a slot
// from its start to its verdict and hands it back whenever it waits on the
// network (a connect in progress, a dial, a read or write), so the pool of
// Concurrency probes in flight stays large for slow reals while the runnable
// probe goroutines stay few. That is what keeps the engine fed when the
// configured probe rate needs more CPU than the machine has: Go's scheduler
// has no priorities, and with hundreds of runnable probes the engine waited
// for a turn most of the time (a profile under qemu at 2,000 probes/s: runnable
// 82% of the time, running 2%). With the slots, due probes wait in the
// scheduler's heap, oldest first (the dispatcher takes a slot before it hands a
// probe to a worker), each a little late (kglb_health_probe_lag_seconds), and
// the engine finds a P at once (see EngineProcs). Waiting for a slot starts the probe's clock
// only once it has one, so a busy CPU does not eat the probe's timeout.
//
// A worker that finishes a probe keeps its slot for the next due one (see
// Scheduler.probe) unless a probe back from the network waits for a slot:
// resuming counts those, so that the worker gives its slot up for them.
type cpuSlots struct {
	c        chan struct{}
	resuming atomic.Int32
	socks    sockPool // idle TCP probe sockets, at most n per family and source
}

func newCPUSlots(n int) *cpuSlots {
	return &cpuSlots{c: make(chan struct{}, n), socks: sockPool{max: n}}
}

// defaultCPUSlots leaves one of Go's Ps to everything else (the engine,
// netlink, the stats server) when there are two or more. The daemon runs
// with one P more than the CPUs it may use (EngineProcs), so this is every
// CPU for the probes, and the P left over is the engine's.
func defaultCPUSlots() int { return slotsOf(runtime.GOMAXPROCS(0)) }

func slotsOf(procs int) int { return max(1, procs-1) }

// EngineProcs is the GOMAXPROCS the daemon runs with, given $GOMAXPROCS (env),
// Go's default (procs) and the CPUs the process may run on (cpus): one P
// more than the CPUs, so that the probes' slots (defaultCPUSlots) take every
// CPU and the engine still finds a P the moment it has work. Which thread
// then runs is the kernel's choice, and its scheduler puts a thread that
// wakes from a wait, as the engine's does, ahead of threads that have run
// their share, where Go's own scheduler has no priorities and would queue
// the engine behind the runnable probes. With the probes held to one CPU
// fewer than the machine's (GOMAXPROCS the CPUs), a cold start at 1,000
// services x 10 reals in make e2ebench's VM (two CPUs) took 14.54 and 14.33
// s to every real up and 1,189 and 1,006 us of kglb's CPU per check, where
// this takes 10.59 and 7.37 s and 569 and 416 us (the two in turn in one
// boot, E2E_ORDER="kglb kglb@GOMAXPROCS=2 ..."): the probes' first round
// ran on one CPU, and the engine's writes and Go's hand-offs between them
// shared its P (2.76 and 2.92 context switches per check, against 1.50 and
// 1.53). What the spare P costs shows where the probes keep up (100
// services, three pairs in one boot): Go's idle Ps look for work at each
// wakeup, 90 to 97 us of user CPU per check against 69 to 88 us without it.
//
// It leaves Go's default alone when $GOMAXPROCS sets it, and when a CPU quota
// bounds it below the CPUs: under a quota, probes on every P the quota allows
// would have the whole cgroup throttled, the engine with it, for the rest of
// each period.
func EngineProcs(env string, procs, cpus int) int {
	if env != "" || procs < cpus {
		return procs
	}
	return procs + 1
}

// acquire takes a slot for a probe that has none: one back from the network,
// or one a worker got without a slot.
func (c *cpuSlots) acquire() {
	c.resuming.Add(1)
	c.c <- struct{}{}
	c.resuming.Add(-1)
}

func (c *cpuSlots) release() { <-c.c }

// idle hands the probe's slot back while it waits on the network and returns
// the function that takes one again. Outside the scheduler (a checker called
// with a plain context, as tests do) it does nothing.
func idle(ctx context.Context) (resume func()) {
	pc, ok := ctx.(*probeCtx)
	if !ok || pc.slots == nil {
		return func() {}
	}
	pc.slots.release()
	return pc.slots.acquire
}

// slottedConn is a connection of a probe whose reads and writes wait off the
// CPU slot (see cpuSlots).
type slottedConn struct {
	net.Conn
	slots *cpuSlots
}

func (c slottedConn) Read(p []byte) (int, error) {
	c.slots.release()
	defer c.slots.acquire()
	return c.Conn.Read(p)
}

func (c slottedConn) Write(p []byte) (int, error) {
	c.slots.release()
	defer c.slots.acquire()
	return c.Conn.Write(p)
}
