package config

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Reader is whose credentials the configuration must be readable with.
// Readability is judged by the mode bits against these credentials, never
// by trying: the daemon runs without CAP_DAC_OVERRIDE, so a file that root
// can open may still be one it cannot, and kglb validate, run as root,
// must refuse what the daemon would refuse. POSIX ACLs are not consulted.
type Reader struct {
	UID  uint32
	GIDs []uint32 // the primary group and the supplementary groups
	Name string   // who that is, for messages: "user kglb", "this process"
}

// ProcessReader is the credentials of this process: its effective user,
// effective group and supplementary groups. The daemon judges with these.
func ProcessReader() Reader {
	r := Reader{UID: uint32(os.Geteuid()), GIDs: []uint32{uint32(os.Getegid())}, Name: "this process"}
	if gs, err := os.Getgroups(); err == nil {
		for _, g := range gs {
			r.GIDs = append(r.GIDs, uint32(g))
		}
	}
	slices.Sort(r.GIDs)
	r.GIDs = slices.Compact(r.GIDs)
	return r
}

// UserReader is the credentials of the named system user: its uid, its
// primary group and the groups it is a member of.
func UserReader(name string) (Reader, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return Reader{}, err
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return Reader{}, fmt.Errorf("user %s: uid %q: %w", name, u.Uid, err)
	}
	r := Reader{UID: uint32(uid), Name: "user " + name}
	ids, err := u.GroupIds()
	if err != nil {
		ids = []string{u.Gid}
	}
	for _, id := range append(ids, u.Gid) {
		if g, err := strconv.ParseUint(id, 10, 32); err == nil {
			r.GIDs = append(r.GIDs, uint32(g))
		}
	}
	slices.Sort(r.GIDs)
	r.GIDs = slices.Compact(r.GIDs)
	return r, nil
}

// String is who the reader is: "user kglb (uid 998, gids 998)".
func (r Reader) String() string {
	gs := make([]string, len(r.GIDs))
	for i, g := range r.GIDs {
		gs[i] = strconv.FormatUint(uint64(g), 10)
	}
	name := r.Name
	if name == "" {
		name = "credentials"
	}
	return fmt.Sprintf("%s (uid %d, gids %s)", name, r.UID, strings.Join(gs, ","))
}

// may reports whether the mode bits of st grant r every bit of want (4
// read, 1 search), as the kernel grants a process without capabilities:
// by the owner's bits if r owns it, else the group's if r is in its group,
// else the others'.
func (r *Reader) may(st *unix.Stat_t, want uint32) bool {
	if r == nil {
		return true
	}
	mode := st.Mode
	switch {
	case st.Uid == r.UID:
		mode >>= 6
	case slices.Contains(r.GIDs, st.Gid):
		mode >>= 3
	}
	return mode&want == want
}

// accessError is why a configuration file or directory cannot be read, and
// what to do about it.
type accessError struct {
	reason, hint string
}

func (e *accessError) Error() string { return e.reason }

const renameHint = "every *.hcl entry of the directory is read as configuration: make it a regular file (or a symlink to one), or rename or remove it"

// judge says whether st, what stat (following symlinks) said of the entry
// at p, is a regular file r may read: nil, or an *accessError.
func (r *Reader) judge(p string, st *unix.Stat_t) error {
	if kind := fileKind(st.Mode); kind != "" {
		return &accessError{reason: "is " + kind + ", not a regular file", hint: renameHint}
	}
	if !r.may(st, 4) {
		return &accessError{
			reason: fmt.Sprintf("is not readable by %s: mode %04o, owner %d:%d", r, st.Mode&0o7777, st.Uid, st.Gid),
			hint:   fmt.Sprintf("make it readable by %s, as the daemon reads without CAP_DAC_OVERRIDE: chmod a+r %s, or give it to that user or group", r, p),
		}
	}
	if st.Size > MaxFileSize {
		return &accessError{reason: fmt.Sprintf("is larger than the limit of %d MiB", MaxFileSize>>20), hint: "split the configuration over several files of the directory"}
	}
	return nil
}

// fileKind names what a non-regular file is ("a directory"), or "".
func fileKind(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return ""
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFIFO:
		return "a FIFO"
	case unix.S_IFSOCK:
		return "a socket"
	case unix.S_IFCHR, unix.S_IFBLK:
		return "a device"
	case unix.S_IFLNK:
		return "a symlink"
	}
	return "not a regular file"
}

// statError turns a failed stat (following symlinks) of the entry at p
// into an *accessError, telling a dangling symlink and a loop apart from a
// missing file.
func statError(dirfd int, name string, err error) error {
	var lst unix.Stat_t
	isLink := unix.Fstatat(dirfd, name, &lst, unix.AT_SYMLINK_NOFOLLOW) == nil && lst.Mode&unix.S_IFMT == unix.S_IFLNK
	switch {
	case isLink && errors.Is(err, unix.ENOENT):
		target, _ := readlinkat(dirfd, name)
		return &accessError{reason: fmt.Sprintf("is a dangling symlink: its target %s does not exist", quote(target)), hint: "point the symlink at an existing file, or remove it"}
	case errors.Is(err, unix.ELOOP):
		return &accessError{reason: "is a symlink loop", hint: "point the symlink at a regular file, or remove it"}
	case errors.Is(err, unix.EACCES):
		return &accessError{reason: "cannot be reached: permission denied", hint: "give the daemon search permission on every directory on the way to the file"}
	}
	return &accessError{reason: errText(err), hint: "check the path and its permissions"}
}

func readlinkat(dirfd int, name string) (string, error) {
	buf := make([]byte, 4096)
	n, err := unix.Readlinkat(dirfd, name, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// fileProblem is the diagnostic of a file that cannot be read.
func fileProblem(p string, err error) Diagnostic {
	var ae *accessError
	if errors.As(err, &ae) {
		return Diagnostic{File: p, Severity: SeverityError, Summary: "cannot read file: " + ae.reason, Hint: ae.hint}
	}
	return Diagnostic{File: p, Severity: SeverityError, Summary: "cannot read file: " + errText(err), Hint: "check the path and its permissions"}
}

// readFile reads the configuration file at p as r may: stat first, so that
// anything but a regular file r may read is refused without being opened;
// then open without blocking (a FIFO swapped in after the stat does not
// hang the open) and check again what was opened. A nil r reads whatever
// the kernel lets this process open.
func readFile(p string, r *Reader) ([]byte, error) {
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		return nil, statError(unix.AT_FDCWD, p, err)
	}
	if err := r.judge(p, &st); err != nil {
		return nil, err
	}
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, statError(unix.AT_FDCWD, p, err)
	}
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, err
	}
	if err := r.judge(p, &st); err != nil {
		return nil, err
	}
	// One buffer of the file's size, plus the byte that lets the read
	// which finds EOF fit: a reload reads every file, so a second, doubled
	// buffer per file would be most of its garbage.
	b := make([]byte, 0, int(st.Size)+1)
	lr := io.LimitReader(f, MaxFileSize+1)
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)] // the file grew since Stat
		}
		n, err := lr.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	if len(b) > MaxFileSize {
		return nil, &accessError{reason: fmt.Sprintf("is larger than the limit of %d MiB", MaxFileSize>>20), hint: "split the configuration over several files of the directory"}
	}
	return b, nil
}

// ReadFile reads one configuration file as kglb fmt does: a regular file
// (or a symlink to one) of at most MaxFileSize, never blocking on a FIFO.
// The error is a Diagnostics naming the file and the reason.
func ReadFile(p string) ([]byte, error) {
	b, err := readFile(p, nil)
	if err != nil {
		return nil, Diagnostics{fileProblem(p, err)}
	}
	return b, nil
}
