package daemon

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// noHugePages turns transparent huge pages off for the daemon (prctl
// PR_SET_THP_DISABLE), before its heap grows. With THP "always" (Debian's
// default) the kernel backs Go's heap arenas with 2 MiB pages, and a page
// counts whole in RSS however little of it the heap uses or has handed back:
// in the side-by-side benchmark (scripts/e2ebench.sh, N=200) kglb's anonymous
// RSS was 57 MB of which 51 MB huge pages, for 13.5 MB of heap in use and
// 7.5 MB of stacks. The daemon's heap is small and its accesses are not
// TLB-bound, so it gives nothing up; the setting is the process's own, not the
// host's.
func noHugePages() error {
	if err := unix.Prctl(unix.PR_SET_THP_DISABLE, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("prctl PR_SET_THP_DISABLE: %w", err)
	}
	return nil
}
