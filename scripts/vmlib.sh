# scripts/vmlib.sh: the helpers both VM harnesses share, sourced, not run:
# vmtest/run.sh (an initramfs of test binaries) and packaging/test/lib.sh
# (a booted Debian image, for scripts/debtest.sh, demo.sh and e2ebench.sh).
# They install host tools, fetch and cache Debian's kernel, resolve and
# unpack kernel modules, and boot qemu with the console read line by line.
#
# The caller sets root (the repository) and vm_name (the prefix of its
# messages). Everything fetched is cached under $root/.cache/vm.
#
# Environment: VM_ACCEL (default tcg,thread=multi; kvm hung here), VM_MEM,
# VM_SMP (default 2), VM_QEMU_ARGS (extra qemu arguments).

vm_cache="$root/.cache/vm"

vm_die() { echo "${vm_name:-vm}: $*" >&2; exit 1; }
vm_note() { echo "${vm_name:-vm}: $*" >&2; }
vm_have() { command -v "$1" >/dev/null 2>&1; }

# ---------------------------------------------------------------- host tools

vm_apt_updated=0
vm_apt_update_once() {
	[ "$vm_apt_updated" = 1 ] && return 0
	[ "$(id -u)" = 0 ] || { vm_note "need root for apt-get update"; return 1; }
	vm_note "apt-get update"
	apt-get update -qq || { vm_note "apt-get update failed"; return 1; }
	vm_apt_updated=1
}

# vm_apt_lists_empty is true on a fresh machine that never ran apt-get update.
vm_apt_lists_empty() {
	! ls /var/lib/apt/lists/ 2>/dev/null | grep -q '_Packages'
}

# vm_install PKG...: apt-get install the Debian packages (as root), with one
# apt-get update when the lists are missing or stale.
vm_install() {
	[ $# -eq 0 ] && return 0
	[ "$(id -u)" = 0 ] || vm_die "need root to install: $* (run as root or install them)"
	vm_have apt-get || vm_die "no apt-get: install $* by hand (Debian bookworm expected)"
	if vm_apt_lists_empty; then vm_apt_update_once || vm_die "cannot install $*"; fi
	vm_note "apt-get install $*"
	if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null; then
		vm_apt_update_once || vm_die "cannot install $*"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null ||
			vm_die "apt-get install $* failed"
	fi
}

# vm_static_busybox finds a statically linked busybox (the dynamic one cannot
# run in an initramfs, which has no libc).
vm_static_busybox() {
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

# vm_need_tools installs what booting a VM takes (qemu, a static busybox,
# kmod, cpio, coreutils' timeout, flock) and any extra host packages named.
vm_need_tools() {
	local pkgs=("$@")
	vm_have qemu-system-x86_64 || pkgs+=(qemu-system-x86)
	vm_static_busybox >/dev/null || pkgs+=(busybox-static)
	vm_have depmod || pkgs+=(kmod)
	vm_have cpio || pkgs+=(cpio)
	vm_have timeout || pkgs+=(coreutils)
	vm_have flock || pkgs+=(util-linux)
	vm_have xz || pkgs+=(xz-utils)
	vm_have dpkg-deb || pkgs+=(dpkg)
	vm_install "${pkgs[@]}"
	vm_have qemu-system-x86_64 || vm_die "qemu-system-x86_64 missing after install"
	vm_static_busybox >/dev/null || vm_die "no static busybox after installing busybox-static"
	vm_have depmod || vm_die "depmod missing after installing kmod"
	vm_have cpio || vm_die "cpio missing after install"
}

# ---------------------------------------------------------------- kernel

# vm_kernel_pkg prints the linux-image-6.1.0-*-amd64 package that
# linux-image-amd64 depends on, or nothing when apt cannot tell.
vm_kernel_pkg() {
	apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'
}

# vm_fetch_kernel makes $vm_cache/kernel/<pkg>/ hold the unpacked package
# with a depmod'ed module tree, and points $vm_cache/kernel/current at it.
vm_fetch_kernel() {
	mkdir -p "$vm_cache/kernel" "$vm_cache/debs"
	local pkg dir
	pkg="$(vm_kernel_pkg)"
	if [ -z "$pkg" ] && [ ! -e "$vm_cache/kernel/current/.done" ] && vm_apt_update_once >&2; then
		pkg="$(vm_kernel_pkg)"
	fi
	if [ -z "$pkg" ]; then
		# Offline with a warm cache: keep using what was fetched before.
		if [ -e "$vm_cache/kernel/current/.done" ]; then
			vm_note "cannot resolve linux-image-amd64 (offline?); using cached $(readlink "$vm_cache/kernel/current")"
			return 0
		fi
		vm_die "cannot resolve the kernel package: apt-cache depends linux-image-amd64 gave nothing (run as root with network, or apt-get update)"
	fi
	dir="$vm_cache/kernel/$pkg"
	if [ ! -e "$dir/.done" ]; then
		vm_note "fetching $pkg"
		rm -rf "$dir"
		rm -f "$vm_cache/debs/${pkg}"_*.deb
		(cd "$vm_cache/debs" && apt-get download -q "$pkg" 2>&1 >/dev/null | grep -v "unsandboxed as root" >&2; [ "${PIPESTATUS[0]}" = 0 ]) || {
			vm_apt_update_once || vm_die "apt-get download $pkg failed"
			(cd "$vm_cache/debs" && apt-get download -q "$pkg" 2>&1 >/dev/null | grep -v "unsandboxed as root" >&2; [ "${PIPESTATUS[0]}" = 0 ]) || vm_die "apt-get download $pkg failed"
		}
		local deb
		deb="$(ls "$vm_cache/debs/${pkg}"_*.deb 2>/dev/null | head -n1)"
		[ -n "$deb" ] || vm_die "apt-get download $pkg left no .deb in $vm_cache/debs"
		mkdir -p "$dir.tmp"
		dpkg-deb -x "$deb" "$dir.tmp" || vm_die "dpkg-deb -x $deb failed"
		local kver
		kver="$(ls "$dir.tmp/lib/modules" | head -n1)"
		[ -n "$kver" ] && [ -f "$dir.tmp/boot/vmlinuz-$kver" ] || vm_die "$deb holds no kernel and modules"
		depmod -b "$dir.tmp" "$kver" || vm_die "depmod on $pkg failed"
		echo "$kver" >"$dir.tmp/.kver"
		touch "$dir.tmp/.done"
		mv "$dir.tmp" "$dir"
		rm -f "$deb"
	fi
	ln -sfn "$pkg" "$vm_cache/kernel/current"
	vm_extract_vmlinux "$dir"
}

# vm_extract_vmlinux caches the uncompressed kernel ELF beside the package:
# qemu boots it directly through its PVH entry point, which skips the xz
# decompression that costs several seconds under TCG. Optional: without it
# the VM boots vmlinuz.
vm_extract_vmlinux() {
	local dir="$1" kver z off
	[ -d "$dir" ] || return 0
	kver="$(cat "$dir/.kver")"
	[ -s "$dir/vmlinux" ] && return 0
	z="$dir/boot/vmlinuz-$kver"
	grep -q '^CONFIG_PVH=y' "$dir/boot/config-$kver" 2>/dev/null || return 0
	off="$(grep -abo $'\xfd7zXZ\x00' "$z" 2>/dev/null | head -n1 | cut -d: -f1 || true)"
	rm -f "$dir/vmlinux.tmp"
	if [ -n "$off" ] && vm_have xz; then
		# xz complains about the bytes after the stream; the output is whole.
		tail -c +$((off + 1)) "$z" | xz -dc >"$dir/vmlinux.tmp" 2>/dev/null || true
	fi
	if [ "$(head -c 4 "$dir/vmlinux.tmp" 2>/dev/null | od -An -c | tr -d ' ')" = '177ELF' ]; then
		mv "$dir/vmlinux.tmp" "$dir/vmlinux"
	else
		rm -f "$dir/vmlinux.tmp"
		vm_note "could not extract an uncompressed kernel from $z; booting vmlinuz (slower)"
	fi
}

# vm_kernel fetches the kernel once (one fetch at a time when several runs
# start together) and sets vm_kroot (its unpacked tree) and vm_kver.
vm_kernel() {
	mkdir -p "$vm_cache"
	exec 9>"$vm_cache/.lock"
	flock 9
	vm_fetch_kernel
	flock -u 9
	vm_kroot="$(cd "$vm_cache/kernel/current" && pwd -P)"
	vm_kver="$(cat "$vm_kroot/.kver")"
}

# vm_module_deps NAME prints the module files NAME needs, dependencies first
# and NAME last, as absolute paths; it fails with modprobe's message when
# the kernel has no such module. Built-in modules print nothing.
vm_module_deps() {
	local out
	out="$(modprobe -d "$vm_kroot" -S "$vm_kver" --show-depends "$1" 2>&1)" || { echo "$out" >&2; return 1; }
	echo "$out" | awk '$1 == "insmod" {print $2}'
}

# vm_unpack_module SRC DST copies a module file, decompressed.
vm_unpack_module() {
	case "$1" in
	*.xz) xz -dc "$1" >"$2" ;;
	*.zst) zstd -qdc "$1" >"$2" ;;
	*.gz) gzip -dc "$1" >"$2" ;;
	*) cp "$1" "$2" ;;
	esac
}

# ---------------------------------------------------------------- qemu

# vm_qemu_cmd INITRD MEM APPEND [QEMU-ARG...] sets the array vm_qemu to the
# command that boots the kernel with INITRD, MEM MiB (VM_MEM overrides) and
# the kernel command line APPEND, console on stdio, no network, no reboot.
vm_qemu_cmd() {
	local initrd="$1" mem="$2" append="$3"
	shift 3
	local kernel="$vm_kroot/boot/vmlinuz-$vm_kver"
	[ -s "$vm_kroot/vmlinux" ] && kernel="$vm_kroot/vmlinux"
	vm_qemu=(qemu-system-x86_64 -accel "${VM_ACCEL:-tcg,thread=multi}" -m "${VM_MEM:-$mem}" -smp "${VM_SMP:-2}"
		-nographic -nic none -no-reboot -kernel "$kernel" -initrd "$initrd" -append "$append" "$@")
	# shellcheck disable=SC2206
	vm_qemu+=(${VM_QEMU_ARGS:-})
}

# vm_console LOG TIMEOUT LINEFUNC runs "${vm_qemu[@]}" for at most TIMEOUT
# seconds; every console line goes to LOG and to the function LINEFUNC. The
# console uses CRLF line endings and the firmware prints terminal escapes
# (ESC c resets the terminal): both are stripped, line by line, so output
# streams as the guest prints it. The status is timeout's: qemu's, or 124
# (137 after a kill) when the time ran out.
vm_console() {
	local log="$1" timeout_s="$2" fn="$3"
	: >"$log"
	set +e
	timeout --foreground -k 10 "$timeout_s" "${vm_qemu[@]}" </dev/null 2>&1 |
		sed -u -e 's/\r$//' -e 's/\x1b\[[0-9;?]*[A-Za-z]//g' -e 's/\x1b[a-zA-Z]//g' |
		while IFS= read -r line || [ -n "$line" ]; do
			printf '%s\n' "$line" >>"$log"
			"$fn" "$line"
		done
	local rc=${PIPESTATUS[0]}
	set -e
	return "$rc"
}

# vm_exit_problem RC TIMEOUT says what vm_console's status RC means, or
# nothing when the VM powered off by itself.
vm_exit_problem() {
	case "$1" in
	0) ;;
	124 | 137) echo "the VM did not finish within ${2}s (killed)" ;;
	*) echo "qemu exited with status $1" ;;
	esac
}
