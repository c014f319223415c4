// Package daemon is `kglb run`: it wires config reload, the engine, the
// reconcilers, the health scheduler, the BGP speaker and the HTTP endpoints
// together, follows systemd's notify protocol and stops in the order that
// does not hurt traffic: withdraw, hold, then keep or clean the data plane.
package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/kglb/kglb/bgp"
	"github.com/kglb/kglb/config"
	"github.com/kglb/kglb/health"
	"github.com/kglb/kglb/ipvs"
	"github.com/kglb/kglb/lb"
	"github.com/kglb/kglb/reload"
	"github.com/kglb/kglb/vip"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sys/unix"
)

// Options are the command-line settings of `kglb run`. Empty values take
// the config's daemon block.
type Options struct {
	ConfigDir    string
	LogLevel     string // overrides daemon.log_level
	LogFormat    string // overrides daemon.log_format
	StatsAddress string // overrides daemon.stats_address
	// ControlSocket is the Unix socket for reloads (DefaultControlSocket
	// in `kglb run`); empty: none (tests).
	ControlSocket string
	// NetNS runs the data plane in another network namespace (tests).
	NetNS string
	// Output receives the log (default stderr).
	Output io.Writer
}

// Run runs the daemon until SIGTERM or SIGINT (or ctx ends), then stops it.
// It starts the parts and routes events between them; what each event does
// is the function it calls.
func Run(ctx context.Context, opts Options) error {
	if opts.Output == nil {
		opts.Output = os.Stderr
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	stages := newStages()
	var bindDropped atomic.Bool // CAP_NET_BIND_SERVICE was dropped at start
	first, err := loadFirst(opts, &bindDropped, reg)
	if err != nil {
		return err
	}
	stages.done("load")
	cfg, log := first.watcher.Current(), first.log

	// Own the addresses before touching the kernel: if someone else
	// answers on them, kglb does not start.
	lns, err := listen(statsAddress(opts, cfg), opts.ControlSocket)
	if err != nil {
		return err
	}
	defer lns.close()
	if err := dropUnneededCaps(cfg, statsAddress(opts, cfg), log, &bindDropped); err != nil {
		return err
	}

	stages.done("listen")
	// The record of the applied config waits for the first pass: at 1,000
	// services it writes 1,001 files and syncs them, which took the CPU
	// that pass needed.
	rec := newRecorder()
	d, err := start(ctx, opts, cfg, log, reg, first.guard, stages, rec.passed)
	if err != nil {
		return err
	}
	defer d.close()
	// After start: the IPVS settings exist once ip_vs is loaded.
	warnClusterSysctls(cfg, log)
	d.watcher, d.lastApplied, d.rec = first.watcher, first.last, rec
	go d.recordApplied(rec)
	// A stop waits for the record in progress until its deadline (see
	// stop); the other ends of Run (a planned restart that keeps the
	// routes, whose new process the routers' restart window waits for,
	// and the engine's error, after which systemd restarts kglb) wait
	// stopWrites, the stop's allowance for its writes, which is inside
	// the unit's TimeoutStopSec.
	defer func() { d.exitRecording(stopWrites, d.engineCfg()) }()
	if !first.fellBack {
		rec.record(cfg)
	}

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT, restartSignal)
	defer signal.Stop(sigs)

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	configs := make(chan *config.Config)
	engineDone := make(chan error, 1)
	go func() { engineDone <- d.engine.Run(runCtx, configs) }()
	go d.watch(runCtx)
	// The stats server outlives the engine's context, so /metrics and
	// /status still answer while a stop withdraws and holds; it is shut
	// down, and its address freed, before Run returns.
	httpCtx, httpCancel := context.WithCancel(context.WithoutCancel(ctx))
	httpDone, httpClosed := d.serve(httpCtx, lns)
	defer func() { httpCancel(); <-httpClosed }()

	d.notify.send("READY=1", "STATUS="+d.statusLine(cfg))
	log.Info("kglb running", append([]any{"services", len(cfg.Services), "config", opts.ConfigDir}, stages.args...)...)

	for {
		select {
		case <-ctx.Done():
			return d.stop(cancel, engineDone, false)
		case err := <-httpDone:
			log.Error("stats or control server stopped", "err", err)
			httpDone = nil
		case err := <-engineDone:
			return fmt.Errorf("engine stopped: %w", err)
		case sig := <-sigs:
			switch signalAction(sig) {
			case reloadFiles:
				d.reload(runCtx)
			case plannedRestart:
				log.Info("stopping for a planned restart", "signal", sig.String())
				return d.restart(cancel, engineDone)
			default:
				log.Info("stopping", "signal", sig.String())
				return d.stop(cancel, engineDone, false)
			}
		case c := <-d.watcher.Updates():
			d.reconfigure(cfg, c, opts.LogLevel != "")
			cfg = c
			select {
			case configs <- c:
			case err := <-engineDone:
				return fmt.Errorf("engine stopped: %w", err)
			}
			rec.record(c)
			d.notify.send("READY=1", "STATUS="+d.statusLine(c))
		case <-d.watcher.Rejected():
			// An edit the watch picked up was rejected or refused: the
			// status says so, as `systemctl status kglb` is where an
			// operator looks.
			d.notify.send("STATUS=" + d.statusLine(cfg))
		}
	}
}

// firstLoad is what the first load decided: the watcher holding the config
// kglb starts with, the logger of that config, and whether the files were
// rejected so that the config the last run applied runs instead.
type firstLoad struct {
	watcher  *reload.Watcher[*config.Config]
	log      hclog.Logger
	guard    func(old, new *config.Config) error
	last     appliedInfo
	fellBack bool
}

// loadFirst makes the reload watcher and so the first load, which decides
// what kglb starts with: the files, or, when they are rejected (invalid, or
// refused by the delete guard) against the config the last run applied,
// that one. Only with neither (a first install with broken files) does kglb
// not start, nor touch the kernel.
func loadFirst(opts Options, bindDropped *atomic.Bool, reg *prometheus.Registry) (firstLoad, error) {
	bootLog := newLogger(opts, config.Daemon{LogLevel: config.LogInfo, LogFormat: config.LogText})
	var f firstLoad
	wopts := watchOptions(opts.ConfigDir, config.DefaultDaemon().StateDir, &f.last, bindDropped, bootLog.Named("reload"), reg)
	w, err := reload.New(wopts)
	if err != nil {
		return f, err
	}
	cfg := w.Current()
	f.watcher, f.guard = w, wopts.Guard
	f.log = newLogger(opts, cfg.Daemon)
	w.SetLogger(f.log.Named("reload")) // the config's log format from here on
	warnTunnelSysctl(cfg, f.log)
	if st := w.Status(); st.LastApplied {
		f.fellBack = true
		f.log.Error("the config files were rejected at start; running the last applied config until they are fixed",
			"dir", opts.ConfigDir, "applied_at", f.last.Time.Format(time.RFC3339), "err", st.Err.Error())
	}
	return f, nil
}

// watch runs the config watcher until ctx ends; SIGHUP reloads without it.
func (d *daemon) watch(ctx context.Context) {
	if err := d.watcher.Run(ctx); err != nil {
		d.log.Error("config watch stopped; SIGHUP still reloads", "err", err)
	}
}

// A signal's action.
type action int

const (
	stopDaemon action = iota
	reloadFiles
	plannedRestart
)

func signalAction(sig os.Signal) action {
	switch sig {
	case syscall.SIGHUP:
		return reloadFiles
	case restartSignal:
		return plannedRestart
	}
	return stopDaemon
}

// reload reloads the files (SIGHUP). systemd holds the unit in "reloading"
// until READY=1, so every outcome must answer: an applied config does so in
// Run once the engine has it, the rest here.
func (d *daemon) reload(ctx context.Context) {
	d.notify.send("RELOADING=1", monotonicUsec())
	go func() {
		o, err := d.watcher.ReloadWait(ctx, false)
		if err == nil && o.Result != reload.Applied {
			d.notify.send("READY=1", "STATUS=reload "+string(o.Result)+"; "+d.statusLine(d.watcher.Current()))
		}
	}()
}

// reconfigure tells what a reloaded config c changes beside what the engine
// applies: sysctls it needs, a bgp block added or removed (the speaker runs
// with the block it started with), and the log level unless the command line
// set it.
func (d *daemon) reconfigure(old, c *config.Config, levelFromFlag bool) {
	warnTunnelSysctl(c, d.log)
	warnClusterSysctls(c, d.log)
	// The engine gives the speaker the bgp block (announcer.Configure) as
	// part of the reload, so it logs what that changed with the rest.
	if !c.BGP.Enabled && d.speaker != nil {
		d.log.Warn("the bgp block was removed: routes are withdrawn; sessions stay until restart")
	}
	if c.BGP.Enabled && d.speaker == nil {
		d.log.Warn("a bgp block was added: it takes effect at the next restart")
	}
	// The VIP link and mode are the reconciler's from the start (see start):
	// the next start moves the VIPs, and removes what kglb left under the
	// old settings.
	if c.Daemon.VIPMode != d.vipMode || c.Daemon.VIPInterface != d.vipInterface {
		d.log.Warn("vip_mode or vip_interface changed: the VIPs stay as they are until the next restart (systemctl restart kglb), which moves them and removes what kglb left on the old link or in the old mode",
			"vip_mode", string(d.vipMode), "vip_interface", d.vipInterface,
			"new_vip_mode", string(c.Daemon.VIPMode), "new_vip_interface", c.Daemon.VIPInterface)
	}
	if c.Daemon.LogLevel != old.Daemon.LogLevel && !levelFromFlag {
		d.log.SetLevel(hclog.LevelFromString(string(c.Daemon.LogLevel)))
	}
}

// daemon holds the running parts.
type daemon struct {
	log     hclog.Logger
	reg     *prometheus.Registry
	notify  *notifier
	engine  *lb.Engine
	ipvs    *ipvs.Reconciler
	kernel  *ipvs.Netlink
	vipLink *vip.Netlink
	// vipMode and vipInterface are the settings the VIP reconciler started
	// with; a reload does not change them.
	vipMode      config.VIPMode
	vipInterface string
	sched        *health.Scheduler
	speaker      *bgp.Speaker
	watcher      *reload.Watcher[*config.Config]
	// lastApplied is the record the start found, if any.
	lastApplied appliedInfo
	// rec records the configs applied (nil in tests).
	rec   *recorder
	guard func(old, new *config.Config) error // the reload's guard (wopts.Guard), for plans
	dir   string
	// defaultState is the state_dir that files which do not load name, and
	// so where a start looks for a record then (watchOptions).
	defaultState string
	stopCh       context.CancelFunc
}

func start(ctx context.Context, opts Options, cfg *config.Config, log hclog.Logger, reg *prometheus.Registry, guard func(old, new *config.Config) error, stages *stages, firstPass func()) (*daemon, error) {
	d := &daemon{log: log, reg: reg, notify: newNotifier(log.Named("notify")), dir: opts.ConfigDir, guard: guard,
		defaultState: config.DefaultDaemon().StateDir}
	var err error
	d.kernel, err = ipvs.NewNetlink(opts.NetNS)
	if err != nil {
		return nil, err
	}
	d.ipvs, err = ipvs.NewReconciler(d.kernel, ipvs.Options{StateDir: cfg.Daemon.StateDir, Logger: log.Named("ipvs"), Registerer: reg})
	if err != nil {
		d.close()
		return nil, err
	}
	stages.done("ipvs")
	d.vipLink, err = vip.NewNetlink(vip.NetlinkOptions{Link: cfg.Daemon.VIPInterface, NetNS: opts.NetNS})
	if err != nil {
		d.close()
		return nil, err
	}
	mode := vip.ModeRoute
	if cfg.Daemon.VIPMode == config.VIPModeAddress {
		mode = vip.ModeAddress
	}
	vr, err := vip.New(vip.Options{Kernel: d.vipLink, Mode: mode, StateDir: cfg.Daemon.StateDir, Logger: log.Named("vip"), Registerer: reg})
	if err != nil {
		d.close()
		return nil, err
	}
	d.vipMode, d.vipInterface = cfg.Daemon.VIPMode, cfg.Daemon.VIPInterface
	stages.done("vip")
	d.sched, err = health.New(health.Options{
		Logger:      log.Named("health"),
		Registerer:  reg,
		Dialer:      health.Dialer{Source4: cfg.Daemon.HealthSourceV4, Source6: cfg.Daemon.HealthSourceV6},
		Concurrency: cfg.Daemon.HealthConcurrency,
	})
	if err != nil {
		d.close()
		return nil, err
	}
	schedCtx, cancel := context.WithCancel(context.Background())
	d.stopCh = cancel
	go func() {
		if err := d.sched.Run(schedCtx); err != nil {
			log.Error("health scheduler stopped", "err", err)
		}
	}()

	stages.done("health")
	var ann lb.Announcer
	restart, bgpPending := false, false
	if cfg.BGP.Enabled {
		restart = restarting(cfg, log)
		d.speaker, err = bgp.New(ctx, speakerConfig(cfg.BGP), bgp.Options{Logger: log.Named("bgp"), Registerer: reg, Restarting: restart})
		if err != nil && d.speaker == nil {
			d.close()
			return nil, fmt.Errorf("start bgp speaker: %w", err)
		}
		if err != nil {
			// The engine's first pass, and its retries, hand the
			// speaker the block again until it takes every neighbor.
			log.Error("bgp neighbors; retrying", "err", err)
			bgpPending = true
		}
		ann = announcer{d.speaker}
		stages.done("bgp")
	}
	d.engine, err = lb.NewEngine(lb.Options{
		IPVS: d.ipvs, VIPs: vr, Announcer: ann, Prober: d.sched,
		Logger: log.Named("engine"), Metrics: lb.NewMetrics(reg), FullFirstRound: restart, BGPPending: bgpPending,
		Guard:     guard, // a plan is judged as a reload would be, and a reload logs the verdict
		FirstPass: firstPass,
	}, cfg)
	if err != nil {
		d.close()
		return nil, err
	}
	stages.done("engine")
	return d, nil
}

// stages times the steps of a start for the "kglb running" line: where a
// slow start spends its time, without a profiler.
type stages struct {
	last time.Time
	args []any
}

// newStages begins with the step "init": from the fork of this process to
// Run, the time a start spends before kglb's code runs (systemd's sandbox,
// the exec, Go's and the packages' init), as the kernel counts it.
func newStages() *stages {
	s := &stages{last: time.Now()}
	if d, ok := sinceFork(); ok {
		s.args = append(s.args, "init", d.Round(time.Millisecond).String())
	}
	return s
}

// sinceFork is how long ago this process was forked: now on the boot clock
// less its start time in /proc/self/stat (field 22, in clock ticks of
// USER_HZ, 100 on Linux). ok is false if /proc does not say.
func sinceFork() (time.Duration, bool) {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0, false
	}
	// The command name (field 2) may hold spaces and parentheses: count
	// from the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:])) // fields 3 onward
	if len(f) < 20 {
		return 0, false
	}
	ticks, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, false
	}
	var now unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &now); err != nil {
		return 0, false
	}
	const userHZ = 100
	d := time.Duration(now.Nano()) - time.Duration(ticks)*time.Second/userHZ
	return d, d >= 0
}

// done ends the step called name, begun when the previous one ended.
func (s *stages) done(name string) {
	now := time.Now()
	s.args = append(s.args, name, now.Sub(s.last).Round(time.Millisecond).String())
	s.last = now
}

// stopWrites is what a stop allows beside its configured waits: ending the
// engine's pass, the withdrawals, and on_stop = "cleanup"'s removal of
// every IPVS service and VIP, from a kernel or a router slow to answer.
const stopWrites = time.Minute

// stopExit is what systemd is given beyond stopBudget: a stop cut at its
// own deadline still closes the sessions, shuts the HTTP servers down (2 s)
// and exits, rather than being killed in the middle.
const stopExit = 10 * time.Second

// stopBudget is how long a stop of cfg may take: the speaker's
// graceful-shutdown wait, daemon.stop_hold and stopWrites. It is the stop's
// own deadline, and, with stopExit, what systemd is told as the stop
// begins, so a long wait is neither cut by kglb nor killed by
// TimeoutStopSec. The graceful-shutdown wait is what the speaker says it
// will wait (bgp.Speaker.ShutdownWait), not cfg's: after a reload that
// removed the bgp block the speaker keeps the block it had, and waits its
// graceful_shutdown_wait when a route is still announced (a withdrawal cut
// by the stop, or refused), which a budget read from cfg left out.
func (d *daemon) stopBudget(cfg *config.Config) time.Duration {
	b := cfg.Daemon.StopHold + stopWrites
	if d.speaker != nil {
		b += d.speaker.ShutdownWait()
	}
	return b
}

// stop ends the engine, then withdraws, holds and keeps or cleans the data
// plane as on_stop says, within stopBudget. restart is a planned restart
// without graceful restart: the sessions then end without a NOTIFICATION.
func (d *daemon) stop(cancel context.CancelFunc, engineDone <-chan error, restart bool) error {
	d.notify.send("STOPPING=1")
	cancel()
	if err := <-engineDone; err != nil {
		d.log.Error("engine", "err", err)
	}
	// The config the engine ended with is the one that stops: a reload
	// handed to it just before the signal may have raised the waits.
	cfg := d.engineCfg()
	budget := d.stopBudget(cfg)
	// The waits are the operator's and may outlast the unit's
	// TimeoutStopSec, which kglb cannot read from its sandbox: systemd
	// keeps the later of the two, so the extension is always sent. One
	// message covers the rest of the stop.
	d.notify.send(extendTimeoutUsec(budget + stopExit))
	ctx, done := context.WithTimeout(context.Background(), budget)
	defer done()
	err := d.engine.Stop(ctx, cfg.Daemon.OnStop == config.OnStopCleanup)
	if d.speaker != nil {
		closeSessions := d.speaker.Close
		if restart {
			closeSessions = d.speaker.CloseForRestart
		}
		if cerr := closeSessions(); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}
	d.endRecording(ctx, cfg)
	d.log.Info("stopped", "on_stop", string(cfg.Daemon.OnStop))
	return err
}

// endRecording waits for the record of the applied config in progress (a
// reload's, made beside the stop) until ctx, the stop's own deadline, ends:
// on a disk that does not answer, its copies and syncfs would otherwise
// hold the exit past what systemd was told (stopBudget + stopExit), and
// systemd kills the stop. stopExit, left after that deadline, covers the
// rest of the exit as it does for a stop cut at its deadline: no timeout
// of its own. A record left behind is cut off by the exit: it is written
// to applied.new and swapped in with one rename, so the record before it
// stays whole, and nothing else in the exit touches state_dir/applied.
func (d *daemon) endRecording(ctx context.Context, cfg *config.Config) {
	if d.rec == nil || d.rec.stop(ctx) {
		return
	}
	d.log.Warn("stopping before the newest applied config was recorded: a start whose files are rejected runs the config recorded before it",
		"state_dir", cfg.Daemon.StateDir, "err", ctx.Err())
}

// exitRecording is endRecording at an end of Run, within wait; after a
// stop, which ended the recording itself (and said what it left), it does
// nothing.
func (d *daemon) exitRecording(wait time.Duration, cfg *config.Config) {
	if d.rec == nil || d.rec.stopped {
		return
	}
	ctx, done := context.WithTimeout(context.Background(), wait)
	defer done()
	d.endRecording(ctx, cfg)
}

func (d *daemon) engineCfg() *config.Config { return d.engine.Config() }

func (d *daemon) close() {
	if d.stopCh != nil {
		d.stopCh()
	}
	if d.vipLink != nil {
		d.vipLink.Close()
	}
	if d.kernel != nil {
		d.kernel.Close()
	}
}

// announcer adapts the speaker to the engine's route type.
type announcer struct{ s *bgp.Speaker }

// The engine finds a BGPPlanner by a type assertion: a signature that
// drifted would leave the bgp block unapplied without a compile error.
var _ lb.BGPPlanner = announcer{}

func (a announcer) Apply(ctx context.Context, routes []lb.Route) error {
	return a.s.Apply(ctx, bgpRoutes(routes))
}

// Configure gives the speaker cfg's bgp block at a reload, or again at a
// retry (a bgp block removed or added takes effect at the next restart:
// see Run).
func (a announcer) Configure(ctx context.Context, cfg *config.Config, retry bool) error {
	if !cfg.BGP.Enabled {
		return nil
	}
	if retry {
		return a.s.RetryConfig(ctx, speakerConfig(cfg.BGP))
	}
	return a.s.SetConfig(ctx, speakerConfig(cfg.BGP))
}

// PlanBGP is the speaker's plan of cfg's bgp block and routes: the
// sessions and, per neighbor, the routes it would be sent.
func (a announcer) PlanBGP(cfg *config.Config, routes []lb.Route) (lb.BGPPlan, error) {
	var out lb.BGPPlan
	if !cfg.BGP.Enabled {
		return out, nil
	}
	p, err := a.s.Plan(speakerConfig(cfg.BGP), bgpRoutes(routes))
	for _, c := range p.Sessions {
		out.Sessions = append(out.Sessions, lb.SessionChange{Neighbor: c.Neighbor, Address: c.Address.String(), Action: c.Action, Changed: c.Changed})
	}
	for _, n := range p.Neighbors {
		nc := lb.NeighborChange{Neighbor: n.Neighbor, Address: n.Address.String(), Type: "ibgp", Session: n.Session, Changed: n.Changed}
		if n.EBGP {
			nc.Type = "ebgp"
		}
		for _, r := range n.Routes {
			rc := lb.RouteChange{Prefix: r.Prefix.String(), Action: r.Action}
			for _, f := range r.Fields {
				rc.Fields = append(rc.Fields, lb.Field{Name: f.Name, From: f.From, To: f.To})
			}
			nc.Routes = append(nc.Routes, rc)
		}
		out.Neighbors = append(out.Neighbors, nc)
	}
	return out, err
}

// bgpRoutes maps the engine's routes onto the speaker's.
func bgpRoutes(routes []lb.Route) []bgp.Route {
	// The engine hands every route on every pass: the communities of all
	// routes share one array of each kind, so a pass costs three
	// allocations however many routes it carries.
	nc, nl := 0, 0
	for _, r := range routes {
		nc += len(r.Communities)
		nl += len(r.LargeCommunities)
	}
	comms := make([]bgp.Community, 0, nc)
	larges := make([]bgp.LargeCommunity, 0, nl)
	out := make([]bgp.Route, 0, len(routes))
	for _, r := range routes {
		br := bgp.Route{
			Prefix:    r.Prefix,
			NextHop:   r.NextHop,
			MED:       r.MED,
			HasMED:    r.HasMED,
			LocalPref: r.LocalPref,
			// local_pref = 0 is the least preferred, not unset.
			HasLocalPref: r.HasLocalPref,
			Prepend:      r.Prepend,
		}
		if len(r.Communities) > 0 {
			from := len(comms)
			for _, c := range r.Communities {
				comms = append(comms, bgp.Community(c))
			}
			br.Communities = comms[from:len(comms):len(comms)]
		}
		if len(r.LargeCommunities) > 0 {
			from := len(larges)
			for _, c := range r.LargeCommunities {
				larges = append(larges, bgp.LargeCommunity{GlobalAdmin: c.Global, LocalData1: c.Local1, LocalData2: c.Local2})
			}
			br.LargeCommunities = larges[from:len(larges):len(larges)]
		}
		out = append(out, br)
	}
	return out
}

func (a announcer) WithdrawAll(ctx context.Context) error { return a.s.WithdrawAll(ctx) }

// speakerConfig maps the bgp block onto the speaker's config.
func speakerConfig(b config.BGP) bgp.Config {
	c := bgp.Config{
		ASN:                  b.ASN,
		RouterID:             b.RouterID,
		ListenPort:           int(b.ListenPort),
		GracefulShutdown:     b.GracefulShutdown,
		GracefulShutdownWait: b.GracefulShutdownWait,
	}
	for _, n := range b.Neighbors {
		bn := bgp.Neighbor{
			Name: n.Name, Address: n.Address, ASN: n.ASN, Port: n.Port, LocalAddress: n.LocalAddress,
			Passive: n.Passive, MultihopTTL: n.MultihopTTL, HoldTime: n.HoldTime, Keepalive: n.Keepalive,
			ConnectRetry: n.ConnectRetry, PasswordFile: n.PasswordFile,
			GracefulRestart: n.GracefulRestart, RestartTime: n.RestartTime,
		}
		for _, f := range n.Families {
			if f == config.IPv6 {
				bn.Families = append(bn.Families, bgp.IPv6Unicast)
			} else {
				bn.Families = append(bn.Families, bgp.IPv4Unicast)
			}
		}
		c.Neighbors = append(c.Neighbors, bn)
	}
	return c
}

// DeleteGuard refuses a reload that would delete more than share percent of
// the running services or VIPs: an emptied directory or a truncated file
// should not take a site down. Forcing the reload skips it.
func DeleteGuard(old, new *config.Config, share float64) error {
	if share >= 100 {
		return nil
	}
	names := make(map[string]bool, len(new.Services))
	for _, s := range new.Services {
		names[s.Name] = true
	}
	gone := 0
	for _, s := range old.Services {
		if !names[s.Name] {
			gone++
		}
	}
	newVIPs := map[netip.Addr]bool{}
	for _, v := range new.VIPs() {
		newVIPs[v] = true
	}
	oldVIPs := old.VIPs()
	goneVIPs := 0
	for _, v := range oldVIPs {
		if !newVIPs[v] {
			goneVIPs++
		}
	}
	if n := len(old.Services); n > 0 && float64(gone)*100 > share*float64(n) {
		return fmt.Errorf("reload would delete %d of %d services (more than max_delete_share %g%%); run `kglb reload -force` to apply it", gone, n, share)
	}
	if n := len(oldVIPs); n > 0 && float64(goneVIPs)*100 > share*float64(n) {
		return fmt.Errorf("reload would delete %d of %d VIPs (more than max_delete_share %g%%); run `kglb reload -force` to apply it", goneVIPs, n, share)
	}
	return nil
}

func newLogger(opts Options, dc config.Daemon) hclog.Logger {
	level := string(dc.LogLevel)
	if opts.LogLevel != "" {
		level = opts.LogLevel
	}
	format := string(dc.LogFormat)
	if opts.LogFormat != "" {
		format = opts.LogFormat
	}
	return hclog.New(&hclog.LoggerOptions{
		Name:       "kglb",
		Level:      hclog.LevelFromString(level),
		JSONFormat: format == string(config.LogJSON),
		Output:     opts.Output,
		TimeFormat: time.RFC3339,
	})
}

func statsAddress(opts Options, cfg *config.Config) string {
	if opts.StatsAddress != "" {
		return opts.StatsAddress
	}
	return cfg.Daemon.StatsAddress.String()
}

// watchOptions are the reload watcher's options for the config directory
// dir; last receives the record of the last applied config the start found,
// looked up in the state_dir of the files' config, then in defaultState
// (files that do not load name no state_dir, and an emptied directory names
// the default; see README, "Stop, restart, upgrade").
func watchOptions(dir, defaultState string, last *appliedInfo, bindDropped *atomic.Bool, log hclog.Logger, reg prometheus.Registerer) reload.Options[*config.Config] {
	// One Loader for every reload: a one-line edit reads the file the
	// watch named and decodes the block that changed, not the directory.
	loader := config.NewLoader()
	return reload.Options[*config.Config]{
		Dir:         dir,
		Load:        loader.Load,
		LoadChanged: loader.LoadChanged,
		Stamp:       config.DirStamp,
		// The fingerprint covers the password files' content too, so a
		// rotated key is a change.
		Digest: (*config.Config).Fingerprint,
		// The running config's share applies: an edit cannot raise its own
		// bar. At start the running config is the last applied one.
		Guard: func(old, new *config.Config) error {
			return errors.Join(DeleteGuard(old, new, old.Daemon.MaxDeleteShare), bindGuard(bindDropped.Load(), new))
		},
		// `kglb reload -force` overrules the delete guard only: a forced
		// reload past the bind guard restarted the BGP server on a port it
		// could no longer bind, and every session and route went down.
		ForcedGuard: func(_, new *config.Config) error { return bindGuard(bindDropped.Load(), new) },
		LastApplied: func(loaded *config.Config, loadErr error) (*config.Config, bool, error) {
			if loadErr == nil && loaded.Daemon.StateDir != defaultState {
				cfg, info, ok, err := loadApplied(loaded.Daemon.StateDir)
				if ok || err != nil {
					*last = info
					return cfg, ok, err
				}
			}
			cfg, info, ok, err := loadApplied(defaultState)
			*last = info
			return cfg, ok, err
		},
		Hold:       Hold,
		SettleOf:   func(c *config.Config) time.Duration { return c.Daemon.Settle },
		Logger:     log,
		Registerer: reg,
	}
}

// recorder records each config the engine took as the last applied one,
// off the reload path, newest first, from the end of the engine's first
// pass (passed) on. record and stop are called from Run's goroutine only.
type recorder struct {
	records chan *config.Config
	first   chan struct{} // closed by passed
	passed  func()        // the engine's first pass has ended (lb.Options.FirstPass)
	done    chan struct{} // closed as recordApplied returns
	stopped bool
	// save makes one record: saveApplied, or a test's fake.
	save func(cfg *config.Config, dir string, now time.Time) error
}

func newRecorder() *recorder {
	r := &recorder{records: make(chan *config.Config, 1), first: make(chan struct{}), done: make(chan struct{}), save: saveApplied}
	r.passed = sync.OnceFunc(func() { close(r.first) })
	return r
}

// record queues c, replacing a config not yet recorded.
func (r *recorder) record(c *config.Config) {
	select {
	case <-r.records:
	default:
	}
	r.records <- c
}

// stop ends the recording: the config queued, if any, is still recorded
// (after the first pass, or at once if the engine stopped before it), and
// stop waits for the record in progress until ctx ends. It reports whether
// the recording ended. Only the first call waits: a later one (Run's, after
// a stop that left a record behind) returns at once.
func (r *recorder) stop(ctx context.Context) bool {
	if !r.stopped {
		r.stopped = true
		close(r.records)
		r.passed()
		select {
		case <-r.done:
		case <-ctx.Done():
		}
	}
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// recordApplied records each config queued in r as the last applied one,
// once the first pass has ended, until r is stopped.
func (d *daemon) recordApplied(r *recorder) {
	defer close(r.done)
	<-r.first
	for c := range r.records {
		err := r.save(c, d.dir, time.Now())
		if err == nil && c.Daemon.StateDir != d.defaultState {
			if derr := dropApplied(d.defaultState, c.Daemon.StateDir); derr != nil {
				d.log.Error("a start whose files do not load would run the config recorded before state_dir changed", "state_dir", c.Daemon.StateDir, "err", derr)
			}
		}
		switch {
		case errors.Is(err, errNotRecorded):
			d.log.Debug("applied config not recorded; the config made once the files settle is", "err", err)
		case err != nil:
			d.log.Error("cannot record the applied config; a restart with rejected files has an older one to fall back to", "state_dir", c.Daemon.StateDir, "err", err)
		default:
			d.log.Debug("applied config recorded", "state_dir", c.Daemon.StateDir)
		}
	}
}

// statusLine is systemd's STATUS: the counts, and when the files on disk
// are not what runs, why, with the first problem's position.
func (d *daemon) statusLine(cfg *config.Config) string {
	line := cfg.Summary()
	if d.watcher == nil {
		return line
	}
	st := d.watcher.Status()
	switch {
	case st.LastApplied:
		return "running the last applied config (" + d.lastApplied.Time.Format(time.RFC3339) + "): " + firstLine(st.Err) + "; " + line
	case st.Err != nil:
		return "config rejected, the last good config runs: " + firstLine(st.Err) + "; " + line
	case st.Settling:
		return "deletions wait for the config files to settle; " + line
	}
	return line
}

// firstLine is err's first line, and how many more there are: STATUS is one
// line.
func firstLine(err error) string {
	msg, rest, more := strings.Cut(err.Error(), "\n")
	if more {
		msg += fmt.Sprintf(" (and %d more)", strings.Count(rest, "\n")+1)
	}
	return msg
}
