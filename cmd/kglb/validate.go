package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/kglb/kglb/config"
)

func runValidate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print the diagnostics as a JSON array")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: kglb validate [--json] [DIR|FILE...]")
		fmt.Fprintf(stderr, "\nChecks every *.hcl file of each DIR (default %s) and each FILE as one\nconfiguration. Exit status: 0 valid, 1 invalid, 2 usage.\n\n", defaultConfigDir)
		fs.PrintDefaults()
	}
	targets, code, ok := parsePaths(fs, args)
	if !ok {
		return code
	}
	loader := config.NewLoader()
	loader.Reader = validateReader()
	files, err := expand(targets, &loader.Reader)
	var cfg *config.Config
	if err == nil {
		cfg, err = loader.LoadFiles(files...)
	}
	var ds config.Diagnostics
	if err != nil && !errors.As(err, &ds) {
		ds = config.Diagnostics{{Severity: config.SeverityError, Summary: err.Error()}}
	}
	if *asJSON {
		if werr := ds.WriteJSON(stdout); werr != nil {
			fmt.Fprintln(stderr, "kglb:", werr)
		}
		if err != nil {
			return exitInvalid
		}
		return exitOK
	}
	if err != nil {
		ds.WriteText(stdout)
		fmt.Fprintf(stdout, "\ninvalid: %s\n", config.Plural(ds.Errors(), "error"))
		return exitInvalid
	}
	if len(files) == 0 {
		fmt.Fprintf(stderr, "kglb: warning: no *.hcl files in %s\n", strings.Join(targets, " "))
	}
	fmt.Fprintf(stdout, "valid: %s in %s\n", cfg.Summary(), config.Plural(len(cfg.Files), "file"))
	return exitOK
}

// daemonUser is the system user the packaged daemon runs as.
const daemonUser = "kglb"

// validateReader is whose credentials validate judges readability with, so
// that it refuses what the daemon would: run as root, which reads anything,
// the daemon's user if it exists; otherwise this process, by its mode bits.
func validateReader() config.Reader {
	if os.Geteuid() == 0 {
		if r, err := config.UserReader(daemonUser); err == nil {
			return r
		}
	}
	return config.ProcessReader()
}

// expand turns directories into their *.hcl files, as r may read them
// (nil: as this process can), and keeps files as given.
func expand(targets []string, r *config.Reader) ([]string, error) {
	var files []string
	var ds config.Diagnostics
	for _, t := range targets {
		st, err := os.Stat(t)
		if err != nil {
			ds = append(ds, config.Diagnostic{File: t, Severity: config.SeverityError, Summary: "cannot read: " + pathErr(err), Hint: "give a directory of *.hcl files or a file"})
			continue
		}
		if !st.IsDir() {
			files = append(files, t)
			continue
		}
		fs, err := config.ListFiles(t, r)
		var lds config.Diagnostics
		if errors.As(err, &lds) {
			ds = append(ds, lds...)
			continue
		} else if err != nil {
			ds = append(ds, config.Diagnostic{File: t, Severity: config.SeverityError, Summary: "cannot list directory: " + err.Error()})
			continue
		}
		files = append(files, fs...)
	}
	if len(ds) > 0 {
		return nil, ds
	}
	return files, nil
}

// pathErr is the error without the path, which the diagnostic already has.
func pathErr(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}
