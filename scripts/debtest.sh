#!/usr/bin/env bash
# debtest.sh proves the kglb .deb on a real Debian system: it debootstraps
# bookworm (cached), installs the package with dpkg in the image, boots it
# under qemu with systemd as PID 1 and runs packaging/test/debtest-guest.sh
# there as a oneshot unit: start and readiness, a service brought up, a live
# edit, a refused broken edit, a hitless restart, restarts and a reboot with
# rejected files (the last applied config runs), a truncate-pause-write
# writer, upgrade, security score, a BGP router (BIRD) across an apt-get
# upgrade, a restart and a stop, stop (keep and cleanup), remove and purge.
#
#   scripts/debtest.sh          (make debtest; root; installs missing tools)
#
# Environment:
#   DEBTEST_CACHE    cache directory (default .cache/debtest): the base system tarball
#   DEBTEST_TIMEOUT  seconds for the VM (default 900)
#   DEBTEST_KEEP=1   keep the work directory (image, initramfs)
#   KGLB_DEB         test this package instead of building one with scripts/deb.sh
#   KGLB_PREV_DEB    the previous package the upgrade step starts from
#                    (default: built from KGLB_PREV_COMMIT, the last commit
#                    whose daemon ran as root, 3204d0b)
# The console log of the last run is .cache/debtest/last-console.log, the
# kernel's of each boot last-console-kernel.log and last-console2-kernel.log.
# Exit status 0 only when every step passed.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
img_name=debtest
# shellcheck source=../packaging/test/lib.sh
. "$root/packaging/test/lib.sh"

t0=$SECONDS
img_deps
img_kernel
img_base
t_base=$SECONDS

deb="${KGLB_DEB:-}"
if [ -z "$deb" ]; then
	deb="$("$root/scripts/deb.sh" | tail -n1)" || img_die "scripts/deb.sh failed"
fi
[ -f "$deb" ] || img_die "no package at $deb"
img_note "package $(basename "$deb")"

# The upgrade step goes from the package as it was before the daemon got a
# user of its own (it ran as root, /etc/kglb root:root) to this one.
prev_deb="${KGLB_PREV_DEB:-}"
if [ -z "$prev_deb" ]; then
	prev_commit="${KGLB_PREV_COMMIT:-3204d0b}"
	mkdir -p "$img_cache/prev"
	prev_deb="$img_cache/prev/kglb_0.0.0~prev.${prev_commit}-1_amd64.deb"
	if [ ! -f "$prev_deb" ]; then
		img_note "building the previous package from $prev_commit (once; cached in $prev_deb)"
		prev_src="$(mktemp -d)"
		(cd "$root" && git archive "$prev_commit") | tar -x -C "$prev_src" ||
			img_die "git archive $prev_commit failed"
		VERSION="0.0.0~prev.$prev_commit" OUT="$prev_src/out" "$prev_src/scripts/deb.sh" >/dev/null ||
			img_die "building the previous package from $prev_commit failed"
		mv "$prev_src"/out/kglb_*.deb "$prev_deb"
		rm -rf "$prev_src"
	fi
fi
[ -f "$prev_deb" ] || img_die "no previous package at $prev_deb"
img_note "previous package $(basename "$prev_deb")"

lintian_out=""
if img_have lintian || { [ "${CI:-}" = true ] && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends lintian >/dev/null 2>&1; }; then
	lintian_out="$(lintian --tag-display-limit 0 -I -E --pedantic "$deb" 2>&1 | grep -v 'running with root privileges' || true)"
fi

mkdir -p "$img_cache/tmp"
work="$(mktemp -d "$img_cache/tmp/run.XXXXXX")"
if [ -n "${DEBTEST_KEEP:-}" ]; then img_note "keeping $work"; else trap 'rm -rf "$work"' EXIT; fi

img_rootfs "$work"
# The image starts with the previous package; the guest upgrades to $deb.
img_chroot_dpkg "$work" "$prev_deb"
mkdir -p "$work/root/root/new"
cp "$deb" "$work/root/root/new/"
# The BGP router steps (issue 14) upgrade once more, with apt-get, to the
# same build under a higher version (the next Debian revision, a rebuild),
# uncompressed: unpacking xz under TCG starves the VM for a minute.
newer_ver="$(dpkg-deb -f "$deb" Version).1"
rm -rf "$work/newer" && dpkg-deb -R "$deb" "$work/newer" || img_die "dpkg-deb -R $deb failed"
sed -i "s/^Version: .*/Version: $newer_ver/" "$work/newer/DEBIAN/control"
mkdir -p "$work/root/root/newer"
dpkg-deb --root-owner-group -Znone --build "$work/newer" "$work/root/root/newer/kglb_${newer_ver}_amd64.deb" >/dev/null ||
	img_die "building the newer package $newer_ver failed"
rm -rf "$work/newer"
img_note "newer package $newer_ver (for the apt-get upgrade with a router)"
img_guest_unit "$work" "$root/packaging/test/debtest-guest.sh"
img_initramfs "$work"
img_mkfs "$work"
rm -rf "$work/root"
t_img=$SECONDS
img_note "image ready ($((t_img - t_base))s); booting (TCG; console log: $img_cache/last-console.log)"

on_line() {
	case "$1" in
	*"KGLB-DEB: "* | "  | "*) printf '%s\n' "${1#*KGLB-DEB: }" ;;
	esac
}
log="$work/console.log"
rc=0
img_boot "$work" "$log" "${DEBTEST_TIMEOUT:-900}" on_line || rc=$?
# The guest reboots once (issue 10: a reboot after a broken edit): boot the
# same disk again; it picks up its second part from a marker on the disk.
if [ "$rc" = 0 ] && grep -q 'KGLB-DEB: REBOOT' "$log" && ! grep -q 'KGLB-DEB: DONE' "$log"; then
	img_note "the guest rebooted; booting the same disk again"
	img_boot "$work" "$work/console2.log" "${DEBTEST_TIMEOUT:-900}" on_line || rc=$?
	cat "$work/console2.log" >>"$log"
fi
cp "$log" "$img_cache/last-console.log"
t_end=$SECONDS

failed=()
for l in "$log" "$work/console2.log"; do
	k="$(img_kernel_log "$l")"
	[ -f "$k" ] || continue
	cp "$k" "$img_cache/last-$(basename "$k")"
	img_kernel_report "$l" || failed+=("the guest kernel reported a bug (printed above; $img_cache/last-$(basename "$k"))")
done
problem="$(vm_exit_problem "$rc" "${DEBTEST_TIMEOUT:-900}")"
if [ -n "$problem" ]; then failed+=("$problem"); fi
grep -q 'KGLB-DEB: DONE' "$log" || failed+=("the guest test never finished (see $img_cache/last-console.log)")
while IFS= read -r l; do failed+=("${l#*KGLB-DEB: FAIL }"); done < <(grep 'KGLB-DEB: FAIL ' "$log" || true)
npass="$(grep -c 'KGLB-DEB: PASS ' "$log" || true)"
if [ "$npass" -lt 49 ] && grep -q 'KGLB-DEB: DONE' "$log"; then failed+=("only $npass steps passed, expected 49"); fi
if [ -n "$lintian_out" ]; then failed+=("lintian: $lintian_out"); fi

echo
echo "lintian: ${lintian_out:-clean (lintian -I -E --pedantic printed nothing)}"
grep -o 'KGLB-DEB: SECURITY-PREV .*' "$log" | sed 's/KGLB-DEB: SECURITY-PREV/systemd-analyze security kglb.service (previous package):/' || true
grep -o 'KGLB-DEB: SECURITY .*' "$log" | sed 's/KGLB-DEB: SECURITY/systemd-analyze security kglb.service:/' || true
echo "debtest: $((t_end - t0))s total (base $((t_base - t0))s, image $((t_img - t_base))s, VM $((t_end - t_img))s)"
if [ ${#failed[@]} -gt 0 ]; then
	echo "debtest: FAILED:"
	printf '  - %s\n' "${failed[@]}"
	echo "$npass passed, ${#failed[@]} failed"
	exit 1
fi
echo "$npass passed, 0 failed"
