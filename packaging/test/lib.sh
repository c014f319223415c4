# packaging/test/lib.sh: build and boot a Debian bookworm image with systemd
# in qemu (TCG), for scripts/debtest.sh and scripts/demo.sh. Sourced, not run.
#
# The kernel, the host tools and the qemu launch are scripts/vmlib.sh's,
# which vmtest/run.sh shares.
# The debootstrapped base system is cached as a tarball under
# $DEBTEST_CACHE (default .cache/debtest), keyed by its package list.
# The caller sets: root (the repository) and img_name (its messages' prefix).

# Packages of the image: systemd and the tools an operator and the tests use.
IMG_PACKAGES="systemd-sysv,udev,kmod,iproute2,ipvsadm,bird2,busybox,dbus,procps,nftables"
IMG_SUITE=bookworm
IMG_MIRROR="${DEBTEST_MIRROR:-http://deb.debian.org/debian}"

img_cache="${DEBTEST_CACHE:-$root/.cache/debtest}"

vm_name="${img_name:-vm}"
# shellcheck source=../../scripts/vmlib.sh
. "$root/scripts/vmlib.sh"
img_die() { vm_die "$@"; }
img_note() { vm_note "$@"; }
img_have() { vm_have "$@"; }

# img_deps installs the host tools (on a fresh Debian machine, as root).
img_deps() {
	[ "$(id -u)" = 0 ] || vm_die "must run as root (debootstrap, chroot, mkfs)"
	local pkgs=()
	vm_have debootstrap || pkgs+=(debootstrap)
	vm_have mkfs.ext4 || pkgs+=(e2fsprogs)
	vm_need_tools "${pkgs[@]}"
}

# img_kernel fetches the kernel vmtest/run.sh boots too; sets vm_kroot, vm_kver.
img_kernel() { vm_kernel >&2; }

# img_base makes $img_cache/base-<key>.tar.zst (debootstrap once) and sets base.
img_base() {
	local key
	key="$(echo "$IMG_SUITE $IMG_PACKAGES v1" | md5sum | cut -c1-12)"
	base="$img_cache/base-$key.tar"
	mkdir -p "$img_cache"
	[ -s "$base" ] && return 0
	exec 8>"$img_cache/.lock"
	flock 8
	if [ ! -s "$base" ]; then
		local d="$img_cache/base.tmp" t0=$SECONDS
		rm -rf "$d"
		img_note "debootstrap $IMG_SUITE (once; cached in $base; a few minutes)"
		debootstrap --variant=minbase --include="$IMG_PACKAGES" "$IMG_SUITE" "$d" "$IMG_MIRROR" \
			>"$img_cache/debootstrap.log" 2>&1 ||
			{ tail -n 20 "$img_cache/debootstrap.log" >&2; img_die "debootstrap failed (log: $img_cache/debootstrap.log)"; }
		# Smaller image: no package cache, docs or translations.
		rm -rf "$d"/var/cache/apt/archives/*.deb "$d"/var/lib/apt/lists/* "$d"/usr/share/locale/* \
			"$d"/usr/share/man/* "$d"/usr/share/info/*
		find "$d/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
		img_configure "$d"
		tar -C "$d" --numeric-owner --xattrs -cf "$base.tmp" . || img_die "tar of the base failed"
		mv "$base.tmp" "$base"
		rm -rf "$d"
		img_note "base system ready in $((SECONDS - t0))s"
	fi
	flock -u 8
}

# img_configure prepares a fresh debootstrap for a console-only test VM.
img_configure() {
	local d="$1"
	echo kglb-vm >"$d/etc/hostname"
	printf '127.0.0.1\tlocalhost kglb-vm\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$d/etc/hosts"
	echo '/dev/vda / ext4 rw,noatime 0 1' >"$d/etc/fstab"
	# No logins, no timers, nothing that is not needed: the test unit runs and powers off.
	local u
	for u in serial-getty@ttyS0.service getty@tty1.service getty.target apt-daily.timer apt-daily-upgrade.timer \
		e2scrub_all.timer e2scrub_reap.service fstrim.timer systemd-timesyncd.service bird.service \
		systemd-networkd-wait-online.service console-getty.service; do
		ln -sfn /dev/null "$d/etc/systemd/system/$u"
	done
	mkdir -p "$d/etc/systemd/journald.conf.d"
	printf '[Journal]\nStorage=volatile\nForwardToConsole=no\n' >"$d/etc/systemd/journald.conf.d/test.conf"
	# apt must not try the network in the VM.
	echo 'Acquire::http::Timeout "1";' >"$d/etc/apt/apt.conf.d/99kglb-test"
}

# img_modules copies the kernel modules the image needs into DIR and runs depmod.
img_modules() {
	local d="$1" m="$vm_kroot/lib/modules/$vm_kver"
	local dst="$d/lib/modules/$vm_kver"
	mkdir -p "$dst/kernel/drivers"
	cp -a "$m/kernel/net" "$m/kernel/lib" "$m/kernel/crypto" "$m/kernel/arch" "$m/kernel/fs" "$dst/kernel/"
	local sub
	for sub in net/dummy.ko net/veth.ko net/ifb.ko virtio block char; do
		[ -e "$m/kernel/drivers/$sub" ] || continue
		mkdir -p "$dst/kernel/drivers/$(dirname "$sub")"
		cp -a "$m/kernel/drivers/$sub" "$dst/kernel/drivers/$(dirname "$sub")/"
	done
	for sub in modules.builtin modules.builtin.modinfo modules.order; do
		[ -f "$m/$sub" ] && cp "$m/$sub" "$dst/"
	done
	depmod -b "$d" "$vm_kver" || img_die "depmod in the image failed"
}

# img_initramfs WORK writes WORK/initramfs.cpio: busybox, the disk and ext4
# modules, and an /init that mounts /dev/vda and switch_roots to systemd.
img_initramfs() {
	local work="$1" ir="$1/initramfs"
	rm -rf "$ir"
	mkdir -p "$ir"/{bin,dev,proc,sys,newroot,mods}
	cp "$(vm_static_busybox)" "$ir/bin/busybox"
	local name f i=0
	: >"$ir/modules"
	for name in virtio_pci virtio_blk crc32c_generic ext4; do
		vm_module_deps "$name" 2>/dev/null
	done | awk '!seen[$0]++' | while read -r f; do
		i=$((i + 1))
		vm_unpack_module "$f" "$ir/mods/$i.ko"
		echo "/mods/$i.ko" >>"$ir/modules"
	done
	[ -s "$ir/modules" ] || img_die "no disk modules found for the initramfs"
	cat >"$ir/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules); do insmod "$m" 2>/dev/null; done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
mount -t ext4 -o rw,noatime /dev/vda /newroot || { echo "initramfs: cannot mount /dev/vda"; poweroff -f; }
umount /proc /sys
umount /dev 2>/dev/null
exec switch_root /newroot /sbin/init
INIT
	chmod 755 "$ir/init"
	(cd "$ir" && find . -print0 | cpio --null -o -H newc --quiet) >"$work/initramfs.cpio" || img_die "cpio failed"
}

# img_rootfs WORK: unpack the base and add the modules into WORK/root.
img_rootfs() {
	local work="$1"
	rm -rf "$work/root"
	mkdir -p "$work/root"
	tar -C "$work/root" --numeric-owner --xattrs -xf "$base" || img_die "unpacking the base failed"
	img_modules "$work/root"
	img_hold_hooks "$work/root"
}

# img_hold_hooks DIR: load scripts/vm-hold-hooks.nft early at boot and keep
# it (that file says why: a qemu TCG livelock on the kernel's text patching).
# A failure powers the VM off at once, with nft's message on the console.
img_hold_hooks() {
	local d="$1"
	mkdir -p "$d/etc/kglb-vm"
	cp "$root/scripts/vm-hold-hooks.nft" "$d/etc/kglb-vm/hold-hooks.nft"
	cat >"$d/etc/systemd/system/kglb-vm-hooks.service" <<'UNIT'
[Unit]
Description=netfilter hooks held for the whole boot (see scripts/vm-hold-hooks.nft)
DefaultDependencies=no
After=systemd-modules-load.service local-fs.target
Before=sysinit.target network-pre.target kglb.service keepalived.service
FailureAction=poweroff-force
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/sbin/nft -f /etc/kglb-vm/hold-hooks.nft
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0
[Install]
WantedBy=sysinit.target
UNIT
	mkdir -p "$d/etc/systemd/system/sysinit.target.wants"
	ln -sfn /etc/systemd/system/kglb-vm-hooks.service "$d/etc/systemd/system/sysinit.target.wants/kglb-vm-hooks.service"
}

# img_chroot_dpkg WORK DEB: install a .deb in the image as an admin would.
img_chroot_dpkg() {
	local work="$1" deb="$2"
	cp "$deb" "$work/root/root/"
	chroot "$work/root" env DEBIAN_FRONTEND=noninteractive dpkg -i "/root/$(basename "$deb")" >"$work/dpkg-chroot.log" 2>&1 ||
		{ cat "$work/dpkg-chroot.log" >&2; img_die "dpkg -i $(basename "$deb") in the image failed"; }
}

# img_guest_unit WORK SCRIPT: run SCRIPT as a oneshot unit after boot, its
# output on the serial console, then power off.
img_guest_unit() {
	local work="$1" script="$2"
	install -m 0755 "$script" "$work/root/usr/local/sbin/kglb-guest"
	cat >"$work/root/etc/systemd/system/kglb-guest.service" <<'UNIT'
[Unit]
Description=kglb guest test
After=multi-user.target kglb.service
SuccessAction=poweroff-force
FailureAction=poweroff-force
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/kglb-guest
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0
TimeoutStartSec=infinity
[Install]
WantedBy=multi-user.target
UNIT
	ln -sfn /etc/systemd/system/kglb-guest.service "$work/root/etc/systemd/system/multi-user.target.wants/kglb-guest.service"
}

# img_mkfs WORK: WORK/disk.img (ext4, sparse) from WORK/root.
img_mkfs() {
	local work="$1"
	rm -f "$work/disk.img"
	mkfs.ext4 -q -F -L kglb-root -E lazy_itable_init=1,lazy_journal_init=1 -d "$work/root" "$work/disk.img" 1200M >/dev/null 2>"$work/mkfs.log" ||
		{ cat "$work/mkfs.log" >&2; img_die "mkfs.ext4 -d failed"; }
}

# img_boot WORK LOG TIMEOUT LINEFUNC: boot the image; every console line
# (CR and escapes stripped) goes to LOG and to the function LINEFUNC. The
# guest's test writes to the first serial port; the kernel's console is the
# second, written to LOG's name with -kernel (console.log: console-kernel.log).
# There its warnings and worse come with their stack traces (loglevel=5; a
# soft lockup's trace prints at the default level, which loglevel=3 hid) and
# never break a line of the test's output. img_kernel_report reads it.
img_boot() {
	local work="$1" klog
	klog="$(img_kernel_log "$2")"
	: >"$klog"
	vm_qemu_cmd "$work/initramfs.cpio" 1536 "console=ttyS1 loglevel=5 softlockup_all_cpu_backtrace=1 panic=-1 systemd.show_status=false rw net.ifnames=0 ${IMG_APPEND:-}" \
		-serial mon:stdio -serial "file:$klog" \
		-drive "file=$work/disk.img,format=raw,if=virtio,cache=unsafe"
	vm_console "$2" "$3" "$4"
}

# img_kernel_log LOG: where img_boot puts the kernel's console of the boot
# whose test output goes to LOG.
img_kernel_log() { echo "${1%.log}-kernel.log"; }

# img_kernel_report LOG: when the kernel of the boot that wrote LOG reported a
# bug (BUG:, which covers a soft lockup, an Oops, a panic, a hung task), print
# where and up to 300 lines of its report from the first, and return 1.
img_kernel_report() {
	local klog first
	klog="$(img_kernel_log "$1")"
	[ -f "$klog" ] || return 0
	first="$(grep -n -m1 -E 'BUG:|Oops|Kernel panic|blocked for more than' "$klog" | cut -d: -f1)"
	[ -n "$first" ] || return 0
	echo "the guest kernel reported a bug ($klog, line $first on):"
	tail -n +"$first" "$klog" | tr -d '\r' | head -n 300 | sed 's/^/  kernel| /'
	return 1
}
