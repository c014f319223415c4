#!/usr/bin/env bash
# vmtest/run.sh runs kglb's kernel tests inside a qemu VM booted from Debian's
# kernel, because the development kernel has no IPVS, dummy links or ipip.
#
#   vmtest/run.sh test  [PKG...]  build, boot, run the vmtest-tagged tests (-test.v)
#   vmtest/run.sh bench [PKG...]  the same with -test.run=^$ -test.bench=. -test.benchmem
#   vmtest/run.sh shell [PKG...]  boot into an interactive busybox sh (Ctrl-A x quits qemu)
#   vmtest/run.sh deps  [PKG...]  install qemu/busybox/kmod/cpio and the VM programs, fetch the kernel
#   vmtest/run.sh list            print the packages the default run would test
#
# PKG is a package directory or import path (./ipvs, ipvs, github.com/kglb/kglb/ipvs);
# the default is every package with a file carrying a `//go:build vmtest` constraint.
# Everything downloaded is cached under .cache/vm/ in the repository.
# A package's testdata/vm-binaries.txt names the programs its tests run in
# the VM (host binaries packed with their shared libraries, and Go commands
# of this module built static); see vmtest/README.md.
#
# Environment:
#   VM_TIMEOUT       seconds before the whole VM run is killed (default 1800)
#   VM_TEST_TIMEOUT  seconds per test binary (default 900; -test.timeout and a kill)
#   VM_RUN           -test.run pattern (test mode) or -test.bench pattern (bench mode)
#   VM_TESTARGS      extra arguments for every test binary
#   VM_MODULES       extra kernel modules to load
#   VM_ENV           NAME=value words exported to the test binaries
#   VM_MEM, VM_SMP   guest memory in MiB (2048) and CPUs (2)
#   VM_ACCEL         qemu accelerator (default tcg,thread=multi; kvm hung here)
#   VM_QEMU_ARGS     extra qemu arguments
#   VM_KEEP=1        keep the build directory (binaries, initramfs, console log)
#   VM_BINARIES      extra host programs for the initramfs ("/usr/sbin/x ...")
#   BENCHTIME        -test.benchtime in bench mode
#   CI=true          any missing piece is a hard failure (it always is: nothing is skipped)
#
# The exit status is 0 only if every test binary printed its PASS marker; a
# build failure, a failed or timed-out binary, a missing marker or a crashed
# or hung VM all exit non-zero.
set -euo pipefail

die() { echo "vmtest: $*" >&2; exit 1; }
note() { echo "vmtest: $*" >&2; }

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
cache="$root/.cache/vm"
module_path="github.com/kglb/kglb"

GO="${GO:-go}"
if ! command -v "$GO" >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then GO=/usr/local/go/bin/go; fi

mode="${1:-}"
[ $# -gt 0 ] && shift
case "$mode" in
test | bench | shell | deps | list) ;;
*)
	sed -n '2,35p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
	exit 2
	;;
esac

have() { command -v "$1" >/dev/null 2>&1; }

# ---------------------------------------------------------------- deps

apt_updated=0
apt_update_once() {
	[ "$apt_updated" = 1 ] && return 0
	[ "$(id -u)" = 0 ] || { note "need root for apt-get update"; return 1; }
	note "apt-get update"
	apt-get update -qq || { note "apt-get update failed"; return 1; }
	apt_updated=1
}

# apt_lists_empty is true on a fresh machine that never ran apt-get update.
apt_lists_empty() {
	! ls /var/lib/apt/lists/ 2>/dev/null | grep -q '_Packages'
}

install_pkgs() {
	[ $# -eq 0 ] && return 0
	[ "$(id -u)" = 0 ] || die "need root to install: $* (run as root or install them)"
	have apt-get || die "no apt-get: install $* by hand (Debian bookworm expected)"
	if apt_lists_empty; then apt_update_once || die "cannot install $*"; fi
	note "apt-get install $*"
	if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null; then
		apt_update_once || die "cannot install $*"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null ||
			die "apt-get install $* failed"
	fi
}

# busybox_static finds a statically linked busybox (the dynamic one cannot
# run in the initramfs, which has no libc).
busybox_static() {
	local b
	for b in /bin/busybox /usr/bin/busybox; do
		[ -x "$b" ] || continue
		# A static binary has no PT_INTERP: no "ld-linux" string in its header.
		if ! head -c 4096 "$b" | grep -aq 'ld-linux'; then
			echo "$b"
			return 0
		fi
	done
	return 1
}

need_tools() {
	local pkgs=()
	have qemu-system-x86_64 || pkgs+=(qemu-system-x86)
	busybox_static >/dev/null || pkgs+=(busybox-static)
	have depmod || pkgs+=(kmod)
	have cpio || pkgs+=(cpio)
	have timeout || pkgs+=(coreutils)
	have flock || pkgs+=(util-linux)
	install_pkgs "${pkgs[@]}"
	have qemu-system-x86_64 || die "qemu-system-x86_64 missing after install"
	busybox_static >/dev/null || die "no static busybox after installing busybox-static"
	have depmod || die "depmod missing after installing kmod"
	have cpio || die "cpio missing after install"
	have "$GO" || die "no go toolchain (looked for '$GO' and /usr/local/go/bin/go)"
}

# kernel_pkg prints the linux-image-6.1.0-*-amd64 package that
# linux-image-amd64 depends on, or nothing when apt cannot tell.
kernel_pkg() {
	apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'
}

# fetch_kernel makes $cache/kernel/<pkg>/ hold the unpacked package with a
# depmod'ed module tree, and points $cache/kernel/current at it.
fetch_kernel() {
	mkdir -p "$cache/kernel" "$cache/debs"
	local pkg dir
	pkg="$(kernel_pkg)"
	if [ -z "$pkg" ] && [ ! -e "$cache/kernel/current/.done" ] && apt_update_once >&2; then
		pkg="$(kernel_pkg)"
	fi
	if [ -z "$pkg" ]; then
		# Offline with a warm cache: keep using what was fetched before.
		if [ -e "$cache/kernel/current/.done" ]; then
			note "cannot resolve linux-image-amd64 (offline?); using cached $(readlink "$cache/kernel/current")"
			return 0
		fi
		die "cannot resolve the kernel package: apt-cache depends linux-image-amd64 gave nothing (run as root with network, or apt-get update)"
	fi
	dir="$cache/kernel/$pkg"
	if [ ! -e "$dir/.done" ]; then
		note "fetching $pkg"
		rm -rf "$dir"
		rm -f "$cache/debs/${pkg}"_*.deb
		(cd "$cache/debs" && apt-get download -q "$pkg" 2>&1 >/dev/null | grep -v "unsandboxed as root" >&2; [ "${PIPESTATUS[0]}" = 0 ]) || {
			apt_update_once || die "apt-get download $pkg failed"
			(cd "$cache/debs" && apt-get download -q "$pkg" 2>&1 >/dev/null | grep -v "unsandboxed as root" >&2; [ "${PIPESTATUS[0]}" = 0 ]) || die "apt-get download $pkg failed"
		}
		local deb
		deb="$(ls "$cache/debs/${pkg}"_*.deb 2>/dev/null | head -n1)"
		[ -n "$deb" ] || die "apt-get download $pkg left no .deb in $cache/debs"
		mkdir -p "$dir.tmp"
		dpkg-deb -x "$deb" "$dir.tmp" || die "dpkg-deb -x $deb failed"
		local kver
		kver="$(ls "$dir.tmp/lib/modules" | head -n1)"
		[ -n "$kver" ] && [ -f "$dir.tmp/boot/vmlinuz-$kver" ] || die "$deb holds no kernel and modules"
		depmod -b "$dir.tmp" "$kver" || die "depmod on $pkg failed"
		echo "$kver" >"$dir.tmp/.kver"
		touch "$dir.tmp/.done"
		mv "$dir.tmp" "$dir"
		rm -f "$deb"
	fi
	ln -sfn "$pkg" "$cache/kernel/current"
	extract_vmlinux "$dir"
}

# extract_vmlinux caches the uncompressed kernel ELF beside the package:
# qemu boots it directly through its PVH entry point, which skips the xz
# decompression that costs several seconds under TCG. Optional: without it
# the VM boots vmlinuz.
extract_vmlinux() {
	local dir="$1" kver z off
	[ -d "$dir" ] || return 0
	kver="$(cat "$dir/.kver")"
	[ -s "$dir/vmlinux" ] && return 0
	z="$dir/boot/vmlinuz-$kver"
	grep -q '^CONFIG_PVH=y' "$dir/boot/config-$kver" 2>/dev/null || return 0
	off="$(grep -abo $'\xfd7zXZ\x00' "$z" 2>/dev/null | head -n1 | cut -d: -f1 || true)"
	rm -f "$dir/vmlinux.tmp"
	if [ -n "$off" ] && have xz; then
		# xz complains about the bytes after the stream; the output is whole.
		tail -c +$((off + 1)) "$z" | xz -dc >"$dir/vmlinux.tmp" 2>/dev/null || true
	fi
	if [ "$(head -c 4 "$dir/vmlinux.tmp" 2>/dev/null | od -An -c | tr -d ' ')" = '177ELF' ]; then
		mv "$dir/vmlinux.tmp" "$dir/vmlinux"
	else
		rm -f "$dir/vmlinux.tmp"
		note "could not extract an uncompressed kernel from $z; booting vmlinuz (slower)"
	fi
}

deps() {
	mkdir -p "$cache"
	need_tools
	need_binaries "$@"
	# One fetch at a time when several runs start together.
	exec 9>"$cache/.lock"
	flock 9
	fetch_kernel
	flock -u 9
}

# ---------------------------------------------------------------- programs

# binaries_list prints the lines of the packages' testdata/vm-binaries.txt
# (comments and blank lines dropped), then one per VM_BINARIES word:
#   /abs/path/on/host  debian-package   a host program, with its libraries
#   go ./cmd/x /abs/path/in/vm          a Go command of this module, static
binaries_list() {
	local p f line
	local -a words
	for p in "$@"; do
		f="$root/$p/testdata/vm-binaries.txt"
		[ -f "$f" ] || continue
		while IFS= read -r line || [ -n "$line" ]; do
			read -r -a words <<<"${line%%#*}"
			[ ${#words[@]} -eq 0 ] && continue
			echo "${words[*]}"
		done <"$f"
	done
	for f in ${VM_BINARIES:-}; do echo "$f -"; done
}

# need_binaries installs the Debian packages that provide the host programs
# the packages' tests need in the VM (all packages with VM tests when none
# is named).
need_binaries() {
	local -a ps=("$@") pkgs=()
	[ ${#ps[@]} -gt 0 ] || mapfile -t ps < <(all_pkgs)
	local path deb
	while read -r path deb _; do
		[ "$path" = go ] && continue
		[ -x "$path" ] && continue
		[ -n "$deb" ] && [ "$deb" != - ] || die "VM program $path is missing and no package is named for it"
		pkgs+=("$deb")
	done < <(binaries_list "${ps[@]}" | awk '!seen[$0]++')
	[ ${#pkgs[@]} -gt 0 ] || return 0
	mapfile -t pkgs < <(printf '%s\n' "${pkgs[@]}" | sort -u)
	install_pkgs "${pkgs[@]}"
	# Packages such as bird2 start a system-wide daemon; the tests run their own.
	local d
	for d in "${pkgs[@]}"; do
		case "$d" in bird2) d=bird ;; esac
		if have systemctl && systemctl is-active --quiet "$d" 2>/dev/null; then systemctl stop "$d" || true; fi
	done
}

# copy_host_program copies a dynamically (or statically) linked host program
# into the initramfs at the same path, with every shared library ldd names
# and the dynamic loader, each at the path ldd prints (symlinks resolved).
copy_host_program() {
	local ir="$1" path="$2" lib out
	[ -x "$path" ] || die "VM program $path is missing on the host (vmtest/run.sh deps installs it)"
	mkdir -p "$ir$(dirname "$path")"
	cp -L "$path" "$ir$path"
	# "not a dynamic executable" (exit 1) for a static program: nothing to add.
	out="$(ldd "$path" 2>/dev/null)" || return 0
	for lib in $(echo "$out" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
		[ -e "$ir$lib" ] && continue
		mkdir -p "$ir$(dirname "$lib")"
		cp -L "$lib" "$ir$lib" || die "copy $lib (for $path)"
	done
}

# add_programs puts the programs the built packages need into the initramfs.
add_programs() {
	local ir="$1" a b c
	while read -r a b c; do
		if [ "$a" = go ]; then
			[ -n "$b" ] && [ "${c#/}" != "$c" ] || die "vm-binaries: want 'go ./cmd/x /abs/path', got 'go $b $c'"
			[ -e "$ir$c" ] && continue
			note "go build ./${b#./} -> $c"
			mkdir -p "$ir$(dirname "$c")"
			(cd "$root" && CGO_ENABLED=0 "$GO" build -trimpath -ldflags='-s -w' -o "$ir$c" "./${b#./}") ||
				die "go build $b failed"
		else
			copy_host_program "$ir" "$a"
		fi
	done < <(binaries_list "${built[@]}" | awk '!seen[$0]++')
}

# ---------------------------------------------------------------- packages

# all_pkgs lists the repository-relative directories of packages with a file
# built only under the vmtest tag.
all_pkgs() {
	(cd "$root" && grep -rlE --include='*.go' '^//go:build .*\bvmtest\b' . \
		--exclude-dir=.cache --exclude-dir=.git --exclude-dir=testdata --exclude-dir=vendor 2>/dev/null |
		while read -r f; do
			grep -qE '^//go:build .*!vmtest' "$f" && continue
			d="$(dirname "$f")"
			echo "${d#./}"
		done | sort -u)
}

# rel_pkg maps ./ipvs, ipvs, ipvs/ or github.com/kglb/kglb/ipvs to "ipvs".
rel_pkg() {
	local p="$1"
	case "$p" in
	*...*) die "package patterns with ... are not supported: $1" ;;
	"$root") p=. ;;
	"$root"/*) p="${p#"$root"/}" ;;
	"$module_path") p=. ;;
	"$module_path"/*) p="${p#"$module_path"/}" ;;
	esac
	p="${p#./}"
	p="${p%/}"
	[ -n "$p" ] || p=.
	[ -d "$root/$p" ] || die "no package directory $root/$p (from '$1')"
	echo "$p"
}

# ---------------------------------------------------------------- initramfs

# module_files prints, in load order, the module files (relative to the
# module tree) for every module named in modules.txt and VM_MODULES.
module_files() {
	local kroot="$1" kver="$2" line name optional
	local -a names=()
	while read -r line; do
		line="${line%%#*}"
		line="$(echo "$line" | tr -d '[:space:]')"
		[ -z "$line" ] && continue
		names+=("$line")
	done <"$here/modules.txt"
	for name in ${VM_MODULES:-}; do names+=("$name"); done
	for name in "${names[@]}"; do
		optional=0
		if [ "${name#\?}" != "$name" ]; then
			optional=1
			name="${name#\?}"
		fi
		local out
		if ! out="$(modprobe -d "$kroot" -S "$kver" --show-depends "$name" 2>&1)"; then
			if [ "$optional" = 1 ]; then
				note "module $name not in this kernel (optional, skipped)"
				continue
			fi
			die "module $name: $out"
		fi
		# "insmod /path/x.ko opts" lines; "builtin x" for built-in modules.
		# The module itself is the last line; an optional one may fail to
		# load in the VM (crc32c_intel without SSE4.2 under TCG): mark it "?".
		echo "$out" | awk -v opt="$optional" '$1 == "insmod" {p[++n] = $2} END {for (i = 1; i <= n; i++) print ((i == n && opt == 1) ? "?" : "") p[i]}'
	done | sed "s|^\(?\{0,1\}\)$kroot/lib/modules/$kver/|\1|" | awk '{k = $0; sub(/^\?/, "", k)} !seen[k]++'
}

build_initramfs() {
	local work="$1" kroot="$2" kver="$3"
	local ir="$work/root"
	mkdir -p "$ir"/{bin,dev,proc,sys,tmp,run,root,etc/kglb-vm,pkgs,var,lib/modules/"$kver"}
	ln -s ../run "$ir/var/run"
	cp "$(busybox_static)" "$ir/bin/busybox"
	cp "$here/init" "$ir/init"
	chmod 755 "$ir/init"
	# What Go's net and os/user packages read.
	printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$ir/etc/hosts"
	printf 'hosts: files dns\n' >"$ir/etc/nsswitch.conf"
	printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$ir/etc/passwd"
	printf 'root:x:0:\nnogroup:x:65534:\n' >"$ir/etc/group"
	: >"$ir/etc/resolv.conf"
	if [ -f /etc/services ]; then cp /etc/services "$ir/etc/services"; fi

	# Modules, in the order modprobe resolved them (dependencies first).
	local mods="$ir/lib/modules/$kver"
	module_files "$kroot" "$kver" >"$work/modules.order"
	local f
	while read -r f; do
		f="${f#\?}"
		mkdir -p "$mods/$(dirname "$f")"
		case "$f" in
		*.ko.xz) xz -dc "$kroot/lib/modules/$kver/$f" >"$mods/${f%.xz}" ;;
		*.ko.zst) zstd -qdc "$kroot/lib/modules/$kver/$f" >"$mods/${f%.zst}" ;;
		*.ko.gz) gzip -dc "$kroot/lib/modules/$kver/$f" >"$mods/${f%.gz}" ;;
		*) cp "$kroot/lib/modules/$kver/$f" "$mods/$f" ;;
		esac
	done <"$work/modules.order"
	sed -E 's/\.ko\.(xz|zst|gz)$/.ko/' "$work/modules.order" >"$ir/etc/kglb-vm/modules"
	for f in modules.builtin modules.builtin.modinfo modules.order; do
		[ -f "$kroot/lib/modules/$kver/$f" ] && cp "$kroot/lib/modules/$kver/$f" "$mods/"
	done
	depmod -b "$ir" "$kver" || die "depmod on the initramfs failed"

	# The run's settings; the kernel command line carries mode and timeout.
	{
		echo "KVER=$kver"
		printf 'CI=%q\n' "${CI:-}"
		printf 'VM_RUN=%q\n' "${VM_RUN:-}"
		printf 'VM_TESTARGS=%q\n' "${VM_TESTARGS:-}"
		printf 'BENCHTIME=%q\n' "${BENCHTIME:-}"
		local kv
		for kv in ${VM_ENV:-}; do
			case "$kv" in
			[A-Za-z_]*=*) printf 'export %s=%q\n' "${kv%%=*}" "${kv#*=}" ;;
			*) die "VM_ENV: want NAME=value words, got '$kv'" ;;
			esac
		done
	} >"$ir/etc/kglb-vm/env"
	: >"$ir/etc/kglb-vm/pkgs"
	local p
	for p in "${built[@]}"; do
		echo "$p" >>"$ir/etc/kglb-vm/pkgs"
		mkdir -p "$ir/pkgs/$p"
		mv "$work/bin/$p/pkg.test" "$ir/pkgs/$p/pkg.test"
		if [ -d "$root/$p/testdata" ]; then cp -a "$root/$p/testdata" "$ir/pkgs/$p/testdata"; fi
		if [ "$p" = . ]; then echo "$module_path"; else echo "$module_path/$p"; fi >"$ir/pkgs/$p/importpath"
	done

	# Uncompressed: the kernel unpacks it faster than it would gunzip it
	# under TCG, and skipping compression saves host time too.
	add_programs "$ir"

	(cd "$ir" && find . -print0 | sort -z | cpio --null -o -H newc --quiet) >"$work/initramfs.cpio" ||
		die "cpio failed"
}

# ---------------------------------------------------------------- run

run_vm() {
	local work="$1" kroot="$2" kver="$3"
	local timeout_s="${VM_TIMEOUT:-1800}" per="${VM_TEST_TIMEOUT:-900}"
	local accel="${VM_ACCEL:-tcg,thread=multi}"
	local append="console=ttyS0 quiet panic=-1 kglb.mode=$mode kglb.timeout=$per"
	local kernel="$kroot/boot/vmlinuz-$kver"
	[ -s "$kroot/vmlinux" ] && kernel="$kroot/vmlinux"
	local -a qemu=(qemu-system-x86_64 -accel "$accel" -m "${VM_MEM:-2048}" -smp "${VM_SMP:-2}"
		-nographic -nic none -no-reboot -kernel "$kernel" -initrd "$work/initramfs.cpio"
		-append "$append")
	# shellcheck disable=SC2206
	qemu+=(${VM_QEMU_ARGS:-})

	if [ "$mode" = shell ]; then
		note "booting a shell; Ctrl-A x quits qemu, 'poweroff -f' powers off"
		"${qemu[@]}"
		return 0
	fi

	local log="$work/console.log" start end rc=0
	start=$EPOCHREALTIME
	# The console uses CRLF line endings and the firmware prints terminal
	# escapes (ESC c resets the terminal): strip both, line by line, so the
	# output streams and the bench lines come out exactly as go test prints them.
	set +e
	timeout --foreground -k 10 "$timeout_s" "${qemu[@]}" </dev/null 2>&1 |
		sed -u -e 's/\r$//' -e 's/\x1b\[[0-9;?]*[A-Za-z]//g' -e 's/\x1b[a-zA-Z]//g' |
		while IFS= read -r line || [ -n "$line" ]; do
			printf '%s\n' "$line" >>"$log"
			case "$line" in
			*"KGLB-VM: BOOT "*)
				echo "$EPOCHREALTIME" >"$work/boot.at"
				[ "$mode" = bench ] && continue
				;;
			"KGLB-VM: RUN "*) [ "$mode" = bench ] && continue ;;
			esac
			printf '%s\n' "$line"
		done
	rc=${PIPESTATUS[0]}
	set -e
	end=$EPOCHREALTIME
	cp "$log" "$cache/last-console.log" 2>/dev/null || true

	local failed=0 p label
	if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
		note "FAIL: the VM did not finish within VM_TIMEOUT=${timeout_s}s (killed)"
		failed=1
	elif [ "$rc" != 0 ]; then
		note "FAIL: qemu exited with status $rc"
		failed=1
	fi
	if ! grep -q 'KGLB-VM: DONE$' "$log"; then
		note "FAIL: the VM never reached the end of its run (crash, panic or hang); see $cache/last-console.log"
		failed=1
	fi
	if grep -q 'KGLB-VM: FAIL' "$log"; then
		grep -o 'KGLB-VM: FAIL.*' "$log" | sed 's/^/vmtest: /' >&2
		failed=1
	fi
	for p in "${built[@]}"; do
		label="$p"
		# Not anchored at the start: console escape codes may precede a line.
		if grep -q "KGLB-VM: PASS $label\$" "$log"; then
			continue
		fi
		note "FAIL: $label has no PASS marker"
		failed=1
	done
	for p in "${build_failed[@]}"; do
		note "FAIL: $p did not build"
		failed=1
	done
	local boot="?" guest
	[ -s "$work/boot.at" ] && boot="$(awk -v a="$start" -v b="$(cat "$work/boot.at")" 'BEGIN {printf "%.1f", b - a}')"
	guest="$(grep -o 'KGLB-VM: BOOT [0-9.]*' "$log" | awk '{print $3; exit}')"
	note "$(printf 'VM %s run: %.1fs total; /init reached after %ss (guest uptime %ss)' "$mode" \
		"$(awk -v a="$start" -v b="$end" 'BEGIN {print b - a}')" "$boot" "${guest:-?}")"
	if [ "$failed" != 0 ]; then
		note "FAILED (console log: $cache/last-console.log)"
		return 1
	fi
	note "all ${#built[@]} test binaries passed"
}

main() {
	if [ "$mode" = list ]; then
		all_pkgs
		return 0
	fi
	if [ "$mode" = deps ]; then
		local -a dp=()
		local a
		for a in "$@"; do dp+=("$(rel_pkg "$a")"); done
		deps "${dp[@]}"
		return 0
	fi

	local -a pkgs=()
	if [ $# -gt 0 ]; then
		local a
		for a in "$@"; do pkgs+=("$(rel_pkg "$a")"); done
	else
		mapfile -t pkgs < <(all_pkgs)
	fi
	if [ ${#pkgs[@]} -eq 0 ] && [ "$mode" != shell ]; then
		die "no packages with //go:build vmtest files"
	fi
	deps "${pkgs[@]}"
	local kroot kver
	kroot="$(cd "$cache/kernel/current" && pwd -P)"
	kver="$(cat "$kroot/.kver")"

	mkdir -p "$cache/tmp"
	work="$(mktemp -d "$cache/tmp/run.XXXXXX")"
	if [ -n "${VM_KEEP:-}" ]; then
		note "keeping $work (VM_KEEP)"
	else
		trap 'rm -rf "$work"' EXIT
	fi

	built=()
	build_failed=()
	local p
	# -vet=off: make lint runs go vet; here it only slowed the build.
	for p in "${pkgs[@]}"; do
		mkdir -p "$work/bin/$p"
		note "go test -c -tags vmtest ./$p"
		if (cd "$root" && CGO_ENABLED=0 "$GO" test -c -vet=off -tags vmtest -ldflags='-s -w' \
			-o "$work/bin/$p/pkg.test" "./$p"); then
			if [ -f "$work/bin/$p/pkg.test" ]; then
				built+=("$p")
			else
				# go test -c writes nothing for a package without tests.
				note "FAIL: ./$p has no test files"
				build_failed+=("$p")
			fi
		else
			build_failed+=("$p")
		fi
	done
	if [ ${#built[@]} -eq 0 ] && [ "$mode" != shell ]; then
		die "nothing built: ${build_failed[*]}"
	fi

	build_initramfs "$work" "$kroot" "$kver"
	note "initramfs $(du -h "$work/initramfs.cpio" | cut -f1), kernel $kver, packages: ${built[*]:-none}"
	run_vm "$work" "$kroot" "$kver"
}

main "$@"
