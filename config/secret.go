package config

import (
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"strconv"
	"syscall"
)

// DaemonGroup is the system group the packaged daemon runs as: a secret
// may be readable by it (and by root's group), never by others.
const DaemonGroup = "kglb"

// secretModeProblem says why a password file with this mode and group
// leaks its secret, with the command that fixes it, or "" when it does not.
// daemonGID is the gid of DaemonGroup (-1 when the group does not exist).
func secretModeProblem(path string, mode fs.FileMode, gid, daemonGID int) (problem, hint string) {
	perm := mode.Perm()
	switch {
	case perm&0o004 != 0:
		return fmt.Sprintf("password_file %q is readable by every user (mode %04o)", path, perm),
			fmt.Sprintf("run: chmod 0640 %s (owner root, group %s)", path, DaemonGroup)
	case perm&0o040 != 0 && gid != 0 && gid != daemonGID:
		return fmt.Sprintf("password_file %q is readable by group %s, which is not %s's group", path, groupName(gid), DaemonGroup),
			fmt.Sprintf("run: chgrp %s %s && chmod 0640 %s", DaemonGroup, path, path)
	}
	return "", ""
}

// checkSecretFile refuses a password file that others can read. A file
// that cannot be stat'ed is left to the readability check and the speaker.
func (d *decoder) checkSecretFile(rng span, path string) {
	fi, err := os.Stat(path)
	if err != nil {
		return
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return
	}
	// The daemon reads the file at every reload (Fingerprint) and at every
	// session setup: a FIFO there hung the reload loop, a device had no end.
	if kind := fileKind(st.Mode); kind != "" {
		d.errorf(rng, "put the password alone in a regular file (owner root, group "+DaemonGroup+", mode 0640)", "password_file %q is %s, not a regular file", path, kind)
		return
	}
	gid, ok := DaemonGID()
	if !ok {
		gid = -1
	}
	if problem, hint := secretModeProblem(path, fi.Mode(), int(st.Gid), gid); problem != "" {
		d.errorf(rng, hint, "%s", problem)
	}
}

// DaemonGID is the gid of DaemonGroup; ok is false when this host has no
// such group (kglb not installed from the package).
func DaemonGID() (gid int, ok bool) {
	g, err := user.LookupGroup(DaemonGroup)
	if err != nil {
		return 0, false
	}
	n, err := strconv.Atoi(g.Gid)
	return n, err == nil
}

func groupName(gid int) string {
	if g, err := user.LookupGroupId(strconv.Itoa(gid)); err == nil {
		return g.Name
	}
	return strconv.Itoa(gid)
}
