// GoBGP sets TCP-MD5 on its sockets, and the kernel refuses TCP_MD5SIG on a
// multipath-TCP socket, which Go 1.24+ makes by default for listeners.
//
//go:debug multipathtcp=0

// Command kglb is the kglb load balancer: the daemon and the tools an
// operator runs around it. Each subcommand is one entry of the commands
// table and one function that returns the exit code; it reads its own
// flags and writes to the given streams, so tests call it directly.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
)

// version is set at build time: -ldflags "-X main.version=1.2.3".
var version = "dev"

// defaultConfigDir is where kglb looks for *.hcl files when given none.
const defaultConfigDir = "/etc/kglb"

// Exit codes shared by the subcommands.
const (
	exitOK      = 0
	exitInvalid = 1 // the configuration is invalid, or fmt -check found changes
	exitUsage   = 2
	// exitNoDaemon: `kglb status` or `kglb reload` found no daemon answering.
	exitNoDaemon = 3
)

type command struct {
	summary string
	run     func(args []string, stdout, stderr io.Writer) int
}

// commands is the table main dispatches on; add a subcommand here.
var commands = map[string]command{
	"validate": {"check configuration files and print every problem", runValidate},
	"fmt":      {"rewrite configuration files in canonical format", runFmt},
	"version":  {"print the version", runVersion},
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		usage(stdout)
		return exitOK
	case "-version", "--version":
		return runVersion(nil, stdout, stderr)
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "kglb: unknown command %q\n\n", args[0])
		usage(stderr)
		return exitUsage
	}
	return cmd.run(args[1:], stdout, stderr)
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: kglb <command> [arguments]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "commands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, `run "kglb <command> -h" for a command's flags`)
}

func runVersion(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		fmt.Fprintln(stderr, "usage: kglb version")
		return exitUsage
	}
	fmt.Fprintf(stdout, "kglb %s\n", version)
	return exitOK
}

// parsePaths parses the flags and paths of a command that reads config
// files: the paths (default /etc/kglb), or, when ok is false, the exit code
// (0 after -h, 2 for a usage error). Flags may follow the paths, as in
// `kglb validate /etc/kglb --json`; Go's flag package alone stops at the
// first path. "--" ends the flags.
func parsePaths(fs *flag.FlagSet, args []string) (paths []string, code int, ok bool) {
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, exitOK, false
			}
			return nil, exitUsage, false
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if i := len(args) - len(rest) - 1; i >= 0 && args[i] == "--" {
			paths = append(paths, rest...)
			break
		}
		paths, args = append(paths, rest[0]), rest[1:]
	}
	if len(paths) == 0 {
		paths = []string{defaultConfigDir}
	}
	return paths, exitOK, true
}
