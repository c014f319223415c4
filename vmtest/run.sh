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

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
vm_name=vmtest
# shellcheck source=../scripts/vmlib.sh
. "$root/scripts/vmlib.sh"
cache="$vm_cache"
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

# ---------------------------------------------------------------- deps

# deps installs the host tools and the packages' VM programs, and fetches
# the kernel (sets vm_kroot, vm_kver).
deps() {
	vm_need_tools
	vm_have "$GO" || vm_die "no go toolchain (looked for '$GO' and /usr/local/go/bin/go)"
	need_binaries "$@"
	vm_kernel
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
	# Every VM: /init loads scripts/vm-hold-hooks.nft with it.
	echo "/usr/sbin/nft nftables"
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
		[ -n "$deb" ] && [ "$deb" != - ] || vm_die "VM program $path is missing and no package is named for it"
		pkgs+=("$deb")
	done < <(binaries_list "${ps[@]}" | awk '!seen[$0]++')
	[ ${#pkgs[@]} -gt 0 ] || return 0
	mapfile -t pkgs < <(printf '%s\n' "${pkgs[@]}" | sort -u)
	vm_install "${pkgs[@]}"
	# Packages such as bird2 start a system-wide daemon; the tests run their own.
	local d
	for d in "${pkgs[@]}"; do
		case "$d" in bird2) d=bird ;; esac
		if vm_have systemctl && systemctl is-active --quiet "$d" 2>/dev/null; then systemctl stop "$d" || true; fi
	done
}

# copy_host_program copies a dynamically (or statically) linked host program
# into the initramfs at the same path, with every shared library ldd names
# and the dynamic loader, each at the path ldd prints (symlinks resolved).
copy_host_program() {
	local ir="$1" path="$2" lib out
	[ -x "$path" ] || vm_die "VM program $path is missing on the host (vmtest/run.sh deps installs it)"
	mkdir -p "$ir$(dirname "$path")"
	cp -L "$path" "$ir$path"
	# "not a dynamic executable" (exit 1) for a static program: nothing to add.
	out="$(ldd "$path" 2>/dev/null)" || return 0
	for lib in $(echo "$out" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
		[ -e "$ir$lib" ] && continue
		mkdir -p "$ir$(dirname "$lib")"
		cp -L "$lib" "$ir$lib" || vm_die "copy $lib (for $path)"
	done
}

# add_programs puts the programs the built packages need into the initramfs.
add_programs() {
	local ir="$1" a b c
	while read -r a b c; do
		if [ "$a" = go ]; then
			[ -n "$b" ] && [ "${c#/}" != "$c" ] || vm_die "vm-binaries: want 'go ./cmd/x /abs/path', got 'go $b $c'"
			[ -e "$ir$c" ] && continue
			vm_note "go build ./${b#./} -> $c"
			mkdir -p "$ir$(dirname "$c")"
			(cd "$root" && CGO_ENABLED=0 "$GO" build -trimpath -ldflags='-s -w' -o "$ir$c" "./${b#./}") ||
				vm_die "go build $b failed"
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
	*...*) vm_die "package patterns with ... are not supported: $1" ;;
	"$root") p=. ;;
	"$root"/*) p="${p#"$root"/}" ;;
	"$module_path") p=. ;;
	"$module_path"/*) p="${p#"$module_path"/}" ;;
	esac
	p="${p#./}"
	p="${p%/}"
	[ -n "$p" ] || p=.
	[ -d "$root/$p" ] || vm_die "no package directory $root/$p (from '$1')"
	echo "$p"
}

# ---------------------------------------------------------------- initramfs

# module_files prints, in load order, the module files (relative to the
# module tree) for every module named in modules.txt and VM_MODULES.
module_files() {
	local line name optional
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
		if ! out="$(vm_module_deps "$name" 2>&1)"; then
			if [ "$optional" = 1 ]; then
				vm_note "module $name not in this kernel (optional, skipped)"
				continue
			fi
			vm_die "module $name: $out"
		fi
		# The module itself is the last line; an optional one may fail to
		# load in the VM (crc32c_intel without SSE4.2 under TCG): mark it "?".
		echo "$out" | awk -v opt="$optional" 'NF {p[++n] = $0} END {for (i = 1; i <= n; i++) print ((i == n && opt == 1) ? "?" : "") p[i]}'
	done | sed "s|^\(?\{0,1\}\)$vm_kroot/lib/modules/$vm_kver/|\1|" | awk '{k = $0; sub(/^\?/, "", k)} !seen[k]++'
}

build_initramfs() {
	local work="$1" kver="$vm_kver"
	local ir="$work/root"
	mkdir -p "$ir"/{bin,dev,proc,sys,tmp,run,root,etc/kglb-vm,pkgs,var,lib/modules/"$kver"}
	ln -s ../run "$ir/var/run"
	cp "$(vm_static_busybox)" "$ir/bin/busybox"
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
	module_files >"$work/modules.order"
	local f dst
	while read -r f; do
		f="${f#\?}"
		mkdir -p "$mods/$(dirname "$f")"
		dst="${f%.xz}"
		dst="${dst%.zst}"
		vm_unpack_module "$vm_kroot/lib/modules/$kver/$f" "$mods/${dst%.gz}"
	done <"$work/modules.order"
	sed -E 's/\.ko\.(xz|zst|gz)$/.ko/' "$work/modules.order" >"$ir/etc/kglb-vm/modules"
	for f in modules.builtin modules.builtin.modinfo modules.order; do
		[ -f "$vm_kroot/lib/modules/$kver/$f" ] && cp "$vm_kroot/lib/modules/$kver/$f" "$mods/"
	done
	depmod -b "$ir" "$kver" || vm_die "depmod on the initramfs failed"

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
			*) vm_die "VM_ENV: want NAME=value words, got '$kv'" ;;
			esac
		done
	} >"$ir/etc/kglb-vm/env"
	: >"$ir/etc/kglb-vm/pkgs"
	cp "$root/scripts/vm-hold-hooks.nft" "$ir/etc/kglb-vm/hold-hooks.nft"
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
		vm_die "cpio failed"
}

# ---------------------------------------------------------------- run

# console_line prints a console line as go test printed it (the bench mode
# leaves out the harness's own lines) and notes when /init was reached.
console_line() {
	case "$1" in
	*"KGLB-VM: BOOT "*)
		echo "$EPOCHREALTIME" >"$work/boot.at"
		[ "$mode" = bench ] && return 0
		;;
	"KGLB-VM: RUN "*) [ "$mode" = bench ] && return 0 ;;
	esac
	printf '%s\n' "$1"
}

run_vm() {
	local work="$1"
	local timeout_s="${VM_TIMEOUT:-1800}" per="${VM_TEST_TIMEOUT:-900}"
	vm_qemu_cmd "$work/initramfs.cpio" 2048 "console=ttyS0 quiet panic=-1 kglb.mode=$mode kglb.timeout=$per"

	if [ "$mode" = shell ]; then
		vm_note "booting a shell; Ctrl-A x quits qemu, 'poweroff -f' powers off"
		"${vm_qemu[@]}"
		return 0
	fi

	local log="$work/console.log" start end rc=0
	start=$EPOCHREALTIME
	vm_console "$log" "$timeout_s" console_line || rc=$?
	end=$EPOCHREALTIME
	cp "$log" "$cache/last-console.log" 2>/dev/null || true

	local failed=0 p label
	local problem
	problem="$(vm_exit_problem "$rc" "$timeout_s")"
	if [ -n "$problem" ]; then
		vm_note "FAIL: $problem"
		failed=1
	fi
	if ! grep -q 'KGLB-VM: DONE$' "$log"; then
		vm_note "FAIL: the VM never reached the end of its run (crash, panic or hang); see $cache/last-console.log"
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
		vm_note "FAIL: $label has no PASS marker"
		failed=1
	done
	for p in "${build_failed[@]}"; do
		vm_note "FAIL: $p did not build"
		failed=1
	done
	local boot="?" guest
	[ -s "$work/boot.at" ] && boot="$(awk -v a="$start" -v b="$(cat "$work/boot.at")" 'BEGIN {printf "%.1f", b - a}')"
	guest="$(grep -o 'KGLB-VM: BOOT [0-9.]*' "$log" | awk '{print $3; exit}')"
	vm_note "$(printf 'VM %s run: %.1fs total; /init reached after %ss (guest uptime %ss)' "$mode" \
		"$(awk -v a="$start" -v b="$end" 'BEGIN {print b - a}')" "$boot" "${guest:-?}")"
	if [ "$failed" != 0 ]; then
		vm_note "FAILED (console log: $cache/last-console.log)"
		return 1
	fi
	vm_note "all ${#built[@]} test binaries passed"
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
		vm_die "no packages with //go:build vmtest files"
	fi
	deps "${pkgs[@]}"

	mkdir -p "$cache/tmp"
	work="$(mktemp -d "$cache/tmp/run.XXXXXX")"
	if [ -n "${VM_KEEP:-}" ]; then
		vm_note "keeping $work (VM_KEEP)"
	else
		trap 'rm -rf "$work"' EXIT
	fi

	built=()
	build_failed=()
	local p
	# -vet=off: make lint runs go vet; here it only slowed the build.
	for p in "${pkgs[@]}"; do
		mkdir -p "$work/bin/$p"
		vm_note "go test -c -tags vmtest ./$p"
		if (cd "$root" && CGO_ENABLED=0 "$GO" test -c -vet=off -tags vmtest -ldflags='-s -w' \
			-o "$work/bin/$p/pkg.test" "./$p"); then
			if [ -f "$work/bin/$p/pkg.test" ]; then
				built+=("$p")
			else
				# go test -c writes nothing for a package without tests.
				vm_note "FAIL: ./$p has no test files"
				build_failed+=("$p")
			fi
		else
			build_failed+=("$p")
		fi
	done
	if [ ${#built[@]} -eq 0 ] && [ "$mode" != shell ]; then
		vm_die "nothing built: ${build_failed[*]}"
	fi

	build_initramfs "$work"
	vm_note "initramfs $(du -h "$work/initramfs.cpio" | cut -f1), kernel $vm_kver, packages: ${built[*]:-none}"
	run_vm "$work"
}

main "$@"
