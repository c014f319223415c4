package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/kglb/kglb/config"
	"github.com/kglb/kglb/daemon"
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
	fs.StringVar(&opts.StatsAddress, "stats-address", "", "address of /metrics and /status (default: daemon.stats_address)")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "kglb run: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
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

// statsAddress parses the -address flag of the client commands: the daemon's
// stats address, read from the config when not given.
func statsAddress(fs *flag.FlagSet, args []string, stderr io.Writer) (string, bool) {
	addr := fs.String("address", "", "the daemon's stats address (default: daemon.stats_address of -config)")
	dir := fs.String("config", defaultConfigDir, "configuration directory to read the stats address from")
	if err := fs.Parse(args); err != nil {
		return "", false
	}
	if *addr != "" {
		return *addr, true
	}
	cfg, err := config.Load(*dir)
	if err != nil {
		fmt.Fprintf(stderr, "%s: cannot read the stats address from %s (%v); pass -address\n", fs.Name(), *dir, err)
		return "", false
	}
	return cfg.Daemon.StatsAddress.String(), true
}

func runStatus(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("kglb status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr, ok := statsAddress(fs, args, stderr)
	if !ok {
		return exitUsage
	}
	st, err := daemon.Fetch(addr)
	if err != nil {
		fmt.Fprintf(stderr, "kglb status: %v\n", err)
		return exitInvalid
	}
	daemon.WriteStatus(stdout, st, time.Now())
	return exitOK
}

func runReload(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("kglb reload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	force := fs.Bool("force", false, "apply even if the new config deletes more than daemon.max_delete_share")
	addr, ok := statsAddress(fs, args, stderr)
	if !ok {
		return exitUsage
	}
	msg, err := daemon.RequestReload(addr, *force)
	if err != nil {
		fmt.Fprintf(stderr, "kglb reload: %v\n", err)
		return exitInvalid
	}
	fmt.Fprintln(stdout, msg)
	return exitOK
}
