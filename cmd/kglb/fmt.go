package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/kglb/kglb/config"
)

func runFmt(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("fmt", flag.ContinueOnError)
	fs.SetOutput(stderr)
	check := fs.Bool("check", false, "do not write; list the files that would change and exit 1 if any")
	diff := fs.Bool("diff", false, "do not write; print a unified diff of the changes")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: kglb fmt [-check] [-diff] [DIR|FILE...]")
		fmt.Fprintf(stderr, "\nRewrites every *.hcl file of each DIR (default %s) and each FILE in\ncanonical format, listing the files it changed. Exit status: 0 done,\n1 a file would change (-check) or does not parse, 2 usage.\n\n", defaultConfigDir)
		fs.PrintDefaults()
	}
	targets, code, ok := parsePaths(fs, args)
	if !ok {
		return code
	}
	files, err := expand(targets)
	if err != nil {
		var ds config.Diagnostics
		if errors.As(err, &ds) {
			ds.WriteText(stderr)
		}
		return exitInvalid
	}
	code = exitOK
	for _, name := range files {
		src, err := os.ReadFile(name)
		if err != nil {
			fmt.Fprintf(stderr, "kglb: %v\n", err)
			code = exitInvalid
			continue
		}
		out, err := config.Format(name, src)
		if err != nil {
			var ds config.Diagnostics
			if errors.As(err, &ds) {
				ds.WriteText(stderr)
			} else {
				fmt.Fprintf(stderr, "kglb: %s: %v\n", name, err)
			}
			code = exitInvalid
			continue
		}
		if bytes.Equal(src, out) {
			continue
		}
		switch {
		case *diff:
			stdout.Write(unifiedDiff(name, src, out))
		case *check:
			fmt.Fprintln(stdout, name)
		default:
			if err := writeFile(name, out); err != nil {
				fmt.Fprintf(stderr, "kglb: %v\n", err)
				code = exitInvalid
				continue
			}
			fmt.Fprintln(stdout, name)
		}
		if *check {
			code = exitInvalid
		}
	}
	return code
}

// writeFile replaces name atomically, keeping its mode, so a daemon
// watching the directory never reads half a file.
func writeFile(name string, data []byte) error {
	st, err := os.Stat(name)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(st.Mode().Perm()); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), name)
}
