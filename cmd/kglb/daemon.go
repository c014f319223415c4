package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"time"

	"github.com/kglb/kglb/config"
	"github.com/kglb/kglb/daemon"
	"github.com/kglb/kglb/health"
)

func init() {
	commands["run"] = command{"run the load balancer daemon", runDaemon}
	commands["status"] = command{"show services, reals, VIPs and BGP peers of a running daemon", runStatus}
	commands["reload"] = command{"ask a running daemon to reload its configuration", runReload}
}

func runDaemon(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("kglb run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	opts := daemon.Options{Output: stderr}
	fs.StringVar(&opts.ConfigDir, "config", defaultConfigDir, "configuration directory (every *.hcl in it)")
	fs.StringVar(&opts.LogLevel, "log-level", "", "log level: trace, debug, info, warn, error (default: daemon.log_level)")
	fs.StringVar(&opts.LogFormat, "log-format", "", "log format: text or json (default: daemon.log_format)")
	fs.StringVar(&opts.StatsAddress, "stats-address", "", "address of the read-only /metrics, /status and /healthz (default: daemon.stats_address)")
	fs.StringVar(&opts.ControlSocket, "socket", daemon.DefaultControlSocket, "the control socket: reloads and status, for root and the kglb group")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "kglb run: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	// Before anything starts: the probes' slots are counted from it. Set
	// only when it changes: setting it stops Go's own updates to a
	// changed CPU quota.
	if n := health.EngineProcs(os.Getenv("GOMAXPROCS"), runtime.GOMAXPROCS(0), runtime.NumCPU()); n != runtime.GOMAXPROCS(0) {
		runtime.GOMAXPROCS(n)
	}
	if err := daemon.Run(context.Background(), opts); err != nil {
		var diags config.Diagnostics
		if errors.As(err, &diags) {
			diags.WriteText(stderr)
			fmt.Fprintln(stderr, "kglb run: the configuration is invalid; nothing was changed")
			return exitInvalid
		}
		fmt.Fprintf(stderr, "kglb run: %v\n", err)
		return exitInvalid
	}
	return exitOK
}

func runStatus(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("kglb status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("socket", daemon.DefaultControlSocket, "the daemon's control socket")
	addr := fs.String("address", "", "read the status from the stats listener at host:port instead (read-only, works from another host)")
	if code, ok := parseClientFlags(fs, args, stderr); !ok {
		return code
	}
	var st daemon.Status
	var err error
	if *addr != "" {
		st, err = daemon.Fetch(*addr)
	} else {
		st, err = daemon.FetchControl(*socket)
	}
	if err != nil {
		fmt.Fprintf(stderr, "kglb status: %v\n", err)
		return clientExit(err)
	}
	daemon.WriteStatus(stdout, st, time.Now())
	return exitOK
}

func runReload(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("kglb reload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	force := fs.Bool("force", false, "apply even if the new config deletes more than daemon.max_delete_share")
	socket := fs.String("socket", daemon.DefaultControlSocket, "the daemon's control socket")
	if code, ok := parseClientFlags(fs, args, stderr); !ok {
		return code
	}
	a, err := daemon.RequestReload(*socket, *force)
	if err != nil {
		fmt.Fprintf(stderr, "kglb reload: %v\n", err)
		return clientExit(err)
	}
	fmt.Fprintf(stdout, "config %s\n", a.Result)
	return exitOK
}

// parseClientFlags parses the flags of a command that talks to a running
// daemon; it takes no arguments and reads no config.
func parseClientFlags(fs *flag.FlagSet, args []string, stderr io.Writer) (int, bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK, false
		}
		return exitUsage, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		return exitUsage, false
	}
	return 0, true
}

// clientExit maps a client error to the exit code: 3 when no daemon
// answers, 1 otherwise (a rejected reload, a refused user).
func clientExit(err error) int {
	if errors.Is(err, daemon.ErrNoDaemon) {
		return exitNoDaemon
	}
	return exitInvalid
}
