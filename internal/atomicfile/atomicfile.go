// Package atomicfile replaces a file so that a reader, and the file system
// after a crash, sees either the old content or the new, never a part: the
// data goes to a temporary file beside the target, which is fsync'd and
// renamed over the target, and the directory is fsync'd so that the rename
// is on disk too. Every state file and config rewrite of kglb goes through
// it, with the same durability, but the record of the last applied
// configuration: a directory of files, swapped whole (daemon/applied.go).
package atomicfile

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// WriteFile replaces path with data, as a file of mode perm.
func WriteFile(path string, data []byte, perm fs.FileMode) error {
	return Write(path, data, func(f *os.File) error { return f.Chmod(perm) })
}

// Write replaces path with data. setup, when not nil, is called on the
// temporary file before data is written (to give it an owner and a mode;
// the file starts as 0600 and this process's); its error is returned as
// it is. The temporary file is removed on failure.
func Write(path string, data []byte, setup func(*os.File) error) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // after the rename, there is none
	defer tmp.Close()
	if setup != nil {
		if err := setup(tmp); err != nil {
			return err
		}
	}
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err // a LinkError names both paths
	}
	return SyncDir(dir)
}

// SyncDir fsyncs the directory dir: the entries created, renamed or removed
// in it are on disk once it returns.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
