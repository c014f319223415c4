package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/kglb/kglb/config"
	"github.com/kglb/kglb/internal/atomicfile"
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
	files, err := expand(targets, nil)
	if err != nil {
		var ds config.Diagnostics
		if errors.As(err, &ds) {
			ds.WriteText(stderr)
		}
		return exitInvalid
	}
	code = exitOK
	for _, name := range files {
		src, err := config.ReadFile(name) // never blocks on a FIFO
		if err != nil {
			var ds config.Diagnostics
			if errors.As(err, &ds) {
				ds.WriteText(stderr)
			} else {
				fmt.Fprintf(stderr, "kglb: %v\n", err)
			}
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

// writeFile writes data as the new content of the file name, keeping what
// the file is: through a symlink, the target is written and the symlink
// kept; the owner, group and mode stay; and hard links stay linked. Where
// it can, it writes a temporary file beside the target with the same
// owner, group and mode and renames it over the target, so a daemon
// watching the directory never reads half a file. Where a rename would
// change what the file is, it writes the content into the same inode
// instead (from the start, then truncating to the new length, then
// fsync): when the file has more than one hard link (a new inode would
// split them), and when the temporary file cannot be made beside the
// target or given its owner (a user who may write the file but not the
// directory, or not chown). Such a write is not atomic; the daemon's
// debounce covers the moment it takes.
func writeFile(name string, data []byte) error {
	target, err := filepath.EvalSymlinks(name)
	if err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Stat(target, &st); err != nil {
		return &os.PathError{Op: "stat", Path: target, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return fmt.Errorf("write %s: not a regular file", target)
	}
	if st.Nlink > 1 {
		return writeInPlace(target, data)
	}
	err = replaceFile(target, data, &st)
	if errors.Is(err, errInPlace) {
		return writeInPlace(target, data)
	}
	return err
}

// errInPlace is replaceFile's refusal when it cannot make a temporary file
// beside the target, or give it the target's owner and group.
var errInPlace = errors.New("cannot replace the file")

// replaceFile writes data to a temporary file in target's directory, with
// the owner, group and mode of st, and renames it over target.
func replaceFile(target string, data []byte, st *unix.Stat_t) error {
	err := atomicfile.Write(target, data, func(tmp *os.File) error {
		if err := tmp.Chown(int(st.Uid), int(st.Gid)); err != nil {
			return errInPlace
		}
		// After the chown, which clears the set-id bits.
		if err := unix.Fchmod(int(tmp.Fd()), st.Mode&0o7777); err != nil {
			return &os.PathError{Op: "chmod", Path: tmp.Name(), Err: err}
		}
		return nil
	})
	if errors.Is(err, os.ErrPermission) {
		return errInPlace // no temporary file beside the target
	}
	return err
}

// writeInPlace writes data into target's own inode: every name and
// attribute of the file stays.
func writeInPlace(target string, data []byte) error {
	f, err := os.OpenFile(target, os.O_WRONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.WriteAt(data, 0); err != nil {
		return err
	}
	if err := f.Truncate(int64(len(data))); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return f.Close()
}
