package daemon

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/kglb/kglb/config"
	"github.com/kglb/kglb/internal/atomicfile"
	"golang.org/x/sys/unix"
)

// The last applied configuration lives in state_dir/applied: a copy of the
// content every config file was loaded with (Config.Contents), under its
// base name, and applied.json saying when it was applied, its digest and the
// directory it came from. A start whose files are rejected (invalid, or
// refused by max_delete_share against this copy) runs it instead, so a
// restart, a reboot or an upgrade applies nothing a running daemon would
// refuse.
//
// The copy is of the bytes the config in force was made from, as the loader
// kept them, never of the files as they are by the time it is made: an edit
// since, broken or not, would otherwise leave the config in force
// unrecorded, and a restart with that edit would run an older one. Nor does
// a record read 1,001 files again at 1,000 services.
//
// Only the *.hcl files are copied. What they name by absolute path (a BGP
// password_file, a CA file) is read where it is, as it is at start: secrets
// stay in one place with their own mode, and none is copied into state_dir.
// Digests cover base names and contents, so the copy has the digest of the
// files it was made from, and is loaded with the same config.Load.
//
// The bytes to write are checked against the config's digest first (their
// sums, so nothing is decoded again), then written to applied.new, made
// durable with one syncfs(2) of the state directory's file system (its
// files, their directory entries and applied.new itself), then swapped with
// applied in one rename(2) (RENAME_EXCHANGE; a plain rename the first time)
// and the state directory synced: a crash leaves the old copy or the new
// one, never half. One syncfs, not an fsync per file: at 1,000 files the
// fsyncs and their journal commits cost the first seconds of a cold start
// (0.76 s of CPU of the 1.97 s the record took), competing with the first
// health round; see BenchmarkAppliedSave. syncfs also writes back what other
// programs left dirty on that file system, which can make it slower on a
// busy /var, but never holds up the engine: records are made on their own
// goroutine (recordApplied), each replacing any still waiting. Nor does it
// hold a stop past its deadline (endRecording): a record cut off there
// leaves the one before it.
const (
	appliedName = "applied"
	appliedMeta = "applied.json"
)

// appliedInfo is applied.json.
type appliedInfo struct {
	Time   time.Time `json:"time"`
	Digest string    `json:"digest"` // hex sha256, as Config.Digest
	Dir    string    `json:"dir"`    // the config directory it was loaded from
	Files  []string  `json:"files"`  // base names
}

// errNotRecorded is why saveApplied kept the previous copy: cfg is not the
// config its files make, as while deletions wait for the files to settle
// (Hold marks the digest). The config made once they settle is recorded.
var errNotRecorded = errors.New("the config in force is not what its files make")

// saveApplied records cfg, loaded from dir, as the last applied configuration
// in cfg.Daemon.StateDir.
func saveApplied(cfg *config.Config, dir string, now time.Time) error {
	// Checked before anything is written: a config that is not what its
	// files make leaves applied.new and applied alone.
	if len(cfg.Contents) != len(cfg.Files) {
		// Not a held config: one made without the loader, which a record
		// cannot copy. Logged at Error, not as errNotRecorded's wait.
		return fmt.Errorf("record the applied config: %d files but the contents of %d", len(cfg.Files), len(cfg.Contents))
	}
	sum := config.NewDigester()
	for i, f := range cfg.Files {
		sum.Add(f, sha256.Sum256(cfg.Contents[i]))
	}
	if sum.Sum() != cfg.Digest {
		return fmt.Errorf("record the applied config: %w", errNotRecorded)
	}
	state := cfg.Daemon.StateDir
	tmp := filepath.Join(state, appliedName+".new")
	dst := filepath.Join(state, appliedName)
	if err := os.RemoveAll(tmp); err != nil {
		return fmt.Errorf("record the applied config: %w", err)
	}
	if err := os.MkdirAll(tmp, 0o750); err != nil {
		return fmt.Errorf("record the applied config: %w", err)
	}
	info := appliedInfo{Time: now.UTC(), Digest: hex.EncodeToString(cfg.Digest[:]), Dir: dir}
	for i, f := range cfg.Files {
		base := filepath.Base(f)
		if err := os.WriteFile(filepath.Join(tmp, base), cfg.Contents[i], 0o640); err != nil {
			return fmt.Errorf("record the applied config: %w", err)
		}
		info.Files = append(info.Files, base)
	}
	js, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(tmp, appliedMeta), append(js, '\n'), 0o640); err != nil {
		return fmt.Errorf("record the applied config: %w", err)
	}
	if err := syncFS(tmp); err != nil {
		return fmt.Errorf("record the applied config: %w", err)
	}
	err = unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, dst, unix.RENAME_EXCHANGE)
	if errors.Is(err, unix.ENOENT) {
		err = os.Rename(tmp, dst) // the first record
	}
	if err != nil {
		return fmt.Errorf("record the applied config: rename %s to %s: %w", tmp, dst, err)
	}
	if err := atomicfile.SyncDir(state); err != nil {
		return fmt.Errorf("record the applied config: %w", err)
	}
	// applied.new now holds the previous copy.
	if err := os.RemoveAll(tmp); err != nil {
		return fmt.Errorf("record the applied config: %w", err)
	}
	return nil
}

// dropApplied removes the record in stateDir, once the config applied is
// recorded in another state_dir, recorded. A start whose files do not load
// looks for the record in the default state_dir (such files name none): one
// left there from before state_dir changed would run a config older than the
// last applied, and take away what was added since. Without it such a start
// fails, as on a first install. A recorded that is stateDir under another
// name (a symlink, a bind mount) keeps its record.
func dropApplied(stateDir, recorded string) error {
	a, errA := os.Stat(stateDir)
	if errors.Is(errA, fs.ErrNotExist) {
		return nil
	}
	b, errB := os.Stat(recorded)
	if err := errors.Join(errA, errB); err != nil {
		return fmt.Errorf("remove the record left in %s: %w", stateDir, err)
	}
	if os.SameFile(a, b) {
		return nil
	}
	if err := os.RemoveAll(filepath.Join(stateDir, appliedName)); err != nil {
		return fmt.Errorf("remove the record left in %s: %w", stateDir, err)
	}
	return nil
}

// syncFS commits the file system holding dir to disk: every file written
// there, and dir itself.
func syncFS(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := unix.Syncfs(int(d.Fd())); err != nil {
		return fmt.Errorf("syncfs %s: %w", dir, err)
	}
	return nil
}

// loadApplied loads the last applied configuration recorded in stateDir;
// ok is false when there is none (a first install).
func loadApplied(stateDir string) (cfg *config.Config, info appliedInfo, ok bool, err error) {
	dir := filepath.Join(stateDir, appliedName)
	js, err := readRegular(filepath.Join(dir, appliedMeta), maxAppliedMeta)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, info, false, nil
	}
	if err != nil {
		return nil, info, false, fmt.Errorf("read the last applied config: %w", err)
	}
	if err := json.Unmarshal(js, &info); err != nil {
		return nil, info, false, fmt.Errorf("read the last applied config %s: %w", filepath.Join(dir, appliedMeta), err)
	}
	cfg, err = config.Load(dir)
	if err != nil {
		return nil, info, false, fmt.Errorf("load the last applied config %s: %w", dir, err)
	}
	if hex.EncodeToString(cfg.Digest[:]) != info.Digest {
		return nil, info, false, fmt.Errorf("load the last applied config %s: its digest is not the recorded %s", dir, info.Digest)
	}
	return cfg, info, true, nil
}

// maxAppliedMeta bounds applied.json: a few names per file.
const maxAppliedMeta = 64 << 20

// readRegular reads p, a file of the state directory (applied.json, the
// restart marker), which must be a regular file of at most limit bytes. The
// open does not block: a FIFO in its place would otherwise hang the start.
// The record's config files are read by config.Load, with the loader's
// rule; this one keeps the errno (a missing file is no record).
func readRegular(p string, limit int64) ([]byte, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("read %s: not a regular file (%s)", p, fi.Mode().Type())
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("read %s: larger than %d bytes", p, limit)
	}
	return data, nil
}
