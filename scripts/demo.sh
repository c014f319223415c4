#!/usr/bin/env bash
# demo.sh shows kglb working, in plain words: it builds the .deb, boots a
# Debian VM (qemu, no KVM needed) with the package installed, three web
# servers as reals, a BIRD router and a client, and walks through traffic
# spread, a failed real, the VIP withdrawn at the router, and a live edit.
#
#   make demo        (as root on a Debian machine; installs what it needs)
#
# The VM's console goes to .cache/debtest/demo-console.log, the kernel's to
# demo-console-kernel.log.
# Exit status 0 only when every step happened as told.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
img_name=demo
# shellcheck source=../packaging/test/lib.sh
. "$root/packaging/test/lib.sh"

t0=$SECONDS
echo "kglb demo: preparing (the first run installs qemu and debootstraps a Debian image: a few minutes)"
img_deps
img_kernel 2>/dev/null
img_base
deb="$("$root/scripts/deb.sh" | tail -n1)" || img_die "scripts/deb.sh failed"
mkdir -p "$img_cache/tmp"
work="$(mktemp -d "$img_cache/tmp/demo.XXXXXX")"
trap 'rm -rf "$work"' EXIT
img_rootfs "$work"
img_chroot_dpkg "$work" "$deb"
img_guest_unit "$work" "$root/demo/guest.sh"
img_initramfs "$work"
img_mkfs "$work"
rm -rf "$work/root"
log="$img_cache/demo-console.log"
echo "kglb demo: booting the VM with $(basename "$deb") installed (its console log: $log)"
echo

on_line() {
	case "$1" in
	*"DEMO| "*) printf '%s\n' "${1#*DEMO| }" ;;
	*"DEMO-FAIL: "*) printf '!! %s\n' "${1#*DEMO-FAIL: }" ;;
	esac
}
rc=0
img_boot "$work" "$log" "${DEMO_TIMEOUT:-480}" on_line || rc=$?
echo
img_kernel_report "$log" || rc=1
if [ "$rc" != 0 ]; then
	echo "kglb demo: the VM failed or timed out (status $rc); see $log"
	exit 1
fi
if ! grep -q 'DEMO-DONE fails=0' "$log"; then
	grep -q 'DEMO-DONE' "$log" || echo "kglb demo: the demo did not finish; see $log"
	echo "kglb demo: FAILED: a step did not happen as described (marked !! above); see $log"
	exit 1
fi
echo "kglb demo: done in $((SECONDS - t0))s."
