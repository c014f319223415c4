package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/kglb/kglb/daemon"
	"golang.org/x/sys/unix"
)

// exitChanges: `kglb plan -detailed-exitcode` found changes.
const exitChanges = 4

func init() {
	commands["plan"] = command{"show what a config directory would change in the kernel and the routers, before a reload", runPlan}
}

func runPlan(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("kglb plan", flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("socket", daemon.DefaultControlSocket, "the daemon's control socket")
	asJSON := fs.Bool("json", false, "print the plan as JSON (schema: docs/plan.md)")
	detailed := fs.Bool("detailed-exitcode", false, "exit 4 instead of 0 when the plan has changes")
	offline := fs.Bool("offline", false, "plan without a daemon, against the kernel state kglb owns (as root): no health, no BGP")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: kglb plan [flags] [DIR]")
		fmt.Fprintln(stderr)
		fmt.Fprintln(stderr, "Asks the running daemon what loading DIR (default "+defaultConfigDir+") would do now, without applying it.")
		fmt.Fprintln(stderr, "Exit codes: 0 done, 1 invalid config or refused by the delete guard, 2 usage,")
		fmt.Fprintln(stderr, "3 no daemon reachable, 4 changes (only with -detailed-exitcode).")
		fmt.Fprintln(stderr)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 1 {
		fmt.Fprintf(stderr, "kglb plan: unexpected argument %q\n", fs.Arg(1))
		return exitUsage
	}
	dir := defaultConfigDir
	if fs.NArg() == 1 {
		dir = fs.Arg(0)
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		fmt.Fprintf(stderr, "kglb plan: %v\n", err)
		return exitUsage
	}
	var a daemon.PlanAnswer
	if *offline {
		a, err = daemon.PlanOffline(context.Background(), dir)
	} else {
		a, err = daemon.RequestPlan(*socket, dir)
	}
	if err != nil {
		fmt.Fprintf(stderr, "kglb plan: %v\n", err)
		if !*offline {
			return clientExit(err)
		}
		return exitInvalid
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(a); err != nil {
			fmt.Fprintf(stderr, "kglb plan: %v\n", err)
			return exitInvalid
		}
	} else {
		daemon.WritePlan(stdout, a, isTerminal(stdout))
	}
	switch {
	case a.Result == "failure":
		if *asJSON {
			fmt.Fprintf(stderr, "kglb plan: invalid config:\n%s\n", a.Error)
		}
		return exitInvalid
	case a.Result == "refused":
		fmt.Fprintf(stderr, "kglb plan: the delete guard would refuse this reload: %s\n", a.Error)
		return exitInvalid
	case a.Changes && *detailed:
		return exitChanges
	}
	return exitOK
}

// isTerminal reports whether w is a terminal (colour only there; NO_COLOR
// turns it off).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok || os.Getenv("NO_COLOR") != "" {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
