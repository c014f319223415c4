#!/usr/bin/env bash
# e2ebench.sh measures kglb against keepalived side by side, end to end, as
# installed: the booted Debian image of scripts/debtest.sh (systemd, a disk,
# the .deb installed) with Debian's keepalived and ipvsadm beside it, reals
# in a network namespace of the VM, and the two daemons run in turn (A B A B)
# on the same N services x 10 reals: wrr, NAT, TCP checks every 1s, timeout
# 0.5s, rise 1, fall 3. It prints one benchmark line per metric for
# tools/benchtab: the kglb / keepalived ratio (or, for detection and
# recovery, each daemon's time over its configured time), with both figures.
#
#   scripts/e2ebench.sh            (make e2ebench; root; N=100, 200 and 1000)
#
# Where the two cannot mean the same:
#   - keepalived has no rise/fall: a real is up at its first passing check
#     (rise 1) and down after "retry 2" retries "delay_before_retry 1" apart
#     (fall 3 at interval 1s). With `alpha` and `inhibit_on_failure` it adds
#     every real at weight 0 and raises it on the first pass, as kglb does.
#   - keepalived puts no VIP on the host (that is its VRRP's job, not
#     configured here); kglb adds a local route per VIP (its default).
#   - An edit: kglb sees the one changed file itself; keepalived is told
#     with `systemctl reload keepalived` (SIGHUP) and re-reads its file.
#   - kglb re-reads the kernel every 30s (resync); keepalived never does.
#
# A cold start is timed from `systemctl start` by packaging/test/e2ecold,
# which reads /proc/net/ip_vs until every real is present, then up. It
# replaced a shell loop that started awk, cut and sleep at each poll: in the
# cold windows of make bench at N=1000 the CPU outside the daemon and the
# reals' server was 0.45 to 0.77 of the VM's 2 CPUs with that loop, and it
# left keepalived (one thread) less of the machine than kglb: round 1's
# every-real-up printed 25.02 s for kglb and 32.03 s for keepalived with it,
# 22.64 s and 20.30 s with e2ecold (which printed its own cost, 3.1 s of
# CPU over the 22.64 s).
#
# After the two daemons, each round runs the bare probe loop
# (packaging/test/e2eprobe: a TCP check's system calls and nothing else) in
# the same steady window: checks-per-cpu-s-bare is that loop over keepalived,
# the most a daemon making the same checks reaches in that boot, and
# checks-per-cpu-s-of-bare is kglb's share of it. The loop runs its checks
# back to back, as both daemons do where the checks ask more than the VM
# runs (N=1000); at N=100 they wait between checks, and pay a wakeup the
# loop does not.
#
# Environment:
#   E2E_N        sizes to run, one VM each (default "100 200 1000"): at
#                N=100 the checks ask 1,000 probes a second, about what the VM
#                runs (probes row near 1, though a lag under one interval may
#                stand: kglb's metrics in the out dir say), so detection and
#                recovery times mean what they promise; at N=200 and N=1000
#                the checks ask more than it can run
#   E2E_ROUNDS   rounds of A B (default 2)
#   E2E_WINDOW   seconds of the steady-state CPU window (default 20)
#   E2E_EDITS    weight edits per run (default 3)
#   E2E_PROFILE=1  kglb runs with KGLB_PPROF=1; CPU profiles of its cold start
#                and of the steady window, a trace of the cold start, a heap
#                profile, goroutines and smaps after the window (what its RSS
#                is made of) land in .cache/e2ebench/out-N/ with the journals.
#                Not for the rows: the guest's polling for the profiler and
#                the profiles take the VM's CPUs from kglb's cold start alone
#                (at N=1000, on a shared host: 27.7 s to every real present
#                in one run with it, 6.7 s in one without)
#   E2E_ORDER    the daemons of a round (default "kglb keepalived bare"); for an
#                experiment, kglb@VAR=value[,VAR=value] runs kglb with that
#                environment too (e.g. "kglb kglb@GOMAXPROCS=1 keepalived"),
#                and an entry unit:Directive=value adds that line to the unit
#                (e.g. kglb@unit:SystemCallFilter= runs it without the filter),
#                and bare@procs=N runs the bare loop with N of Go's Ps, as
#                kglb runs (GOMAXPROCS the CPUs plus one), where plain bare has one,
#                bare@sandbox in kglb's unit's sandbox (its seccomp filters,
#                namespaces and capabilities; settings join with ","):
#                their lines carry that label and stay out of the rows. Entries
#                may repeat ("kglb kglb@X kglb kglb@X"): one window of the same
#                build moves by a tenth and more against the next, so judge a
#                change by pairs in one boot (a change to the code, too,
#                behind an environment variable of the experiment's build).
#                An entry clock:NAME switches the kernel's clocksource for the
#                entries after it (each switch prints what a clock read then
#                costs). Under TCG the kernel finds the vCPUs' TSCs
#                unsynchronized and offers hpet and acpi_pm; booted with
#                IMG_APPEND="clocksource=tsc tsc=reliable" it offers tsc too.
#                The entries after a switch keep their labels, so their lines
#                join the rows: read the M lines in order
#   E2E_OUT      where console logs, journals and profiles go (default .cache/e2ebench)
#   E2E_PERF=1   a system-wide `perf record -e cpu-clock -a -g` over each
#                daemon's steady window (the host's perf and its libraries
#                copied into the image); its report by command, library and
#                symbol lands in $E2E_OUT/out-N/e2e-out/perf-DAEMON-ROUND.txt,
#                and kglb's /metrics is scraped around the window for its
#                probe and engine counters: a diagnostic run (perf and the
#                scrapes cost CPU), not one whose rows count
#   KGLB_DEB     test this package instead of building one with scripts/deb.sh
# Console logs: $E2E_OUT/console-N.log, the kernel's console-N-kernel.log.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
img_name=e2ebench
# shellcheck source=../packaging/test/lib.sh
. "$root/packaging/test/lib.sh"
IMG_PACKAGES="$IMG_PACKAGES,keepalived"

sizes="${E2E_N:-100 200 1000}"
rounds="${E2E_ROUNDS:-2}"
img_deps
img_have debugfs || img_die "debugfs (e2fsprogs) is needed to read the results off the disk"
img_kernel
img_base

deb="${KGLB_DEB:-}"
if [ -z "$deb" ]; then
	deb="$("$root/scripts/deb.sh" | tail -n1)" || img_die "scripts/deb.sh failed"
fi
[ -f "$deb" ] || img_die "no package at $deb"
outdir="${E2E_OUT:-$root/.cache/e2ebench}"
mkdir -p "$img_cache/tmp" "$outdir"
work="$(mktemp -d "$img_cache/tmp/e2e.XXXXXX")"
trap 'rm -rf "$work"' EXIT
for c in e2ereal e2ewatch e2eprobe e2ecold; do
	(cd "$root" && CGO_ENABLED=0 go build -o "$work/$c" "./packaging/test/$c") || img_die "building $c failed"
done

# write_configs DIR N: the same N services x 10 reals for both daemons.
write_configs() {
	local d="$1" n="$2" i j k a v
	mkdir -p "$d/etc/e2ebench" "$d/etc/keepalived"
	: >"$d/etc/e2ebench/reals"
	: >"$d/etc/e2ebench/vips"
	rm -f "$d"/etc/kglb/*.hcl
	cat >"$d/etc/kglb/kglb.hcl" <<'HCL'
daemon {
  vip_interface   = "kglb0"
  stats_address   = "127.0.0.1:5678"
  resync_interval = "30s"
  on_stop         = "cleanup"
  stop_hold       = "0s"
}
HCL
	{
		echo 'global_defs {'
		echo '  router_id e2ebench'
		echo '}'
	} >"$d/etc/keepalived/keepalived.conf"
	for ((i = 0; i < n; i++)); do
		v="10.200.$((i / 250)).$((i % 250 + 1))"
		echo "$v" >>"$d/etc/e2ebench/vips"
		{
			printf 'service "s%04d" {\n  vip       = "%s"\n  port      = 80\n  scheduler = "wrr"\n  forward   = "nat"\n  drain     = "0s"\n\n' "$i" "$v"
			for ((j = 0; j < 10; j++)); do
				k=$((i * 10 + j))
				a="10.1.$((k / 250)).$((k % 250 + 1))"
				printf '  real "%s" { weight = 1 }\n' "$a"
			done
			printf '\n  check "tcp" {\n    interval = "1s"\n    timeout  = "500ms"\n    rise     = 1\n    fall     = 3\n  }\n}\n'
		} >"$d/etc/kglb/$(printf 's%04d.hcl' "$i")"
		{
			printf 'virtual_server %s 80 {\n  delay_loop 1\n  lb_algo wrr\n  lb_kind NAT\n  protocol TCP\n  alpha\n' "$v"
			for ((j = 0; j < 10; j++)); do
				k=$((i * 10 + j))
				a="10.1.$((k / 250)).$((k % 250 + 1))"
				echo "$a" >>"$d/etc/e2ebench/reals"
				printf '  real_server %s 80 {\n    weight 1\n    inhibit_on_failure\n    TCP_CHECK {\n      connect_timeout 0.5\n      retry 2\n      delay_before_retry 1\n    }\n  }\n' "$a"
			done
			echo '}'
		} >>"$d/etc/keepalived/keepalived.conf"
	done
}

# ratio NAME A B UNIT-A UNIT-B: a benchmark line with a/b first.
row() {
	awk -v name="$1" -v a="$2" -v b="$3" -v ua="$4" -v ub="$5" 'BEGIN {
		if (a == "" || b == "" || b + 0 == 0) { printf "%s\t1\t-1 ratio\n", name; exit }
		printf "%s\t1\t%.3f ratio\t%.2f %s\t%.2f %s\n", name, a / b, a, ua, b, ub }'
}
# mean DAEMON METRIC: the mean of a metric over the rounds, from the console log.
mean() {
	awk -v d="$1" -v m="$2" '$1 == "E2E:" && $2 == "M" && $3 == d && $5 == m {s += $6; n++} END {if (n) printf "%.3f", s / n}' "$log"
}

rc=0
echo "pkg: e2e"
for n in $sizes; do
	img_rootfs "$work"
	img_chroot_dpkg "$work" "$deb"
	img_guest_unit "$work" "$root/packaging/test/e2ebench-guest.sh"
	# Both daemons start when the benchmark says, not at boot.
	rm -f "$work/root/etc/systemd/system/multi-user.target.wants/kglb.service" \
		"$work/root/etc/systemd/system/multi-user.target.wants/keepalived.service"
	install -m 0755 "$work/e2ereal" "$work/e2ewatch" "$work/e2eprobe" "$work/e2ecold" "$work/root/usr/local/sbin/"
	write_configs "$work/root" "$n"
	cat >"$work/root/etc/e2ebench/env" <<ENV
N=$n
ROUNDS=$rounds
WINDOW=${E2E_WINDOW:-20}
EDITS=${E2E_EDITS:-3}
COLD_TIMEOUT=$((n < 500 ? 600 : 1200))
PROFILE=${E2E_PROFILE:-0}
PERF=${E2E_PERF:-0}
ORDER="${E2E_ORDER:-kglb keepalived bare}"
ENV
	if [ "${E2E_PROFILE:-0}" = 1 ]; then
		mkdir -p "$work/root/etc/systemd/system/kglb.service.d"
		printf '[Service]\nEnvironment=KGLB_PPROF=1\n' >"$work/root/etc/systemd/system/kglb.service.d/pprof.conf"
	fi
	if [ "${E2E_PERF:-0}" = 1 ]; then
		p="$(command -v perf)" || img_die "E2E_PERF=1 needs perf on the host (apt-get install linux-perf)"
		mkdir -p "$work/root/usr/local/lib/e2eperf"
		cp -L "$p" $(ldd "$p" | awk '$3 ~ /^\// {print $3}') "$work/root/usr/local/lib/e2eperf/"
		printf '#!/bin/sh\nexec env LD_LIBRARY_PATH=/usr/local/lib/e2eperf /usr/local/lib/e2eperf/perf "$@"\n' >"$work/root/usr/local/bin/perf"
		chmod 0755 "$work/root/usr/local/bin/perf"
	fi
	img_initramfs "$work"
	img_mkfs "$work"
	rm -rf "$work/root"
	img_note "N=$n: image ready; booting (TCG; console log: $outdir/console-$n.log)"
	on_line() {
		case "$1" in
		*"E2E: "* | "  | "*) printf '%s\n' "${1#*E2E: }" >&2 ;;
		esac
	}
	log="$work/console.log"
	vrc=0
	img_boot "$work" "$log" "${E2E_TIMEOUT:-$((1200 + n * rounds * 3))}" on_line || vrc=$?
	cp "$log" "$outdir/console-$n.log"
	cp "$(img_kernel_log "$log")" "$outdir/console-$n-kernel.log"
	img_kernel_report "$log" >&2 || rc=1
	rm -rf "$outdir/out-$n"
	mkdir -p "$outdir/out-$n"
	debugfs -R "rdump /root/e2e-out $outdir/out-$n" "$work/disk.img" >/dev/null 2>&1 || true
	if [ "$vrc" != 0 ] || ! grep -q 'E2E: DONE' "$log"; then
		img_note "N=$n: the VM did not finish (status $vrc; see $outdir/console-$n.log)"
		rc=1
	fi
	if grep -q 'E2E: FAIL' "$log"; then
		grep 'E2E: FAIL' "$log" | sed 's/^.*E2E: /e2ebench: /' >&2
		rc=1
	fi
	for m in cold-present cold-up edit rss; do
		u=s
		[ "$m" = rss ] && u=mb
		row "BenchmarkE2E$n/$m" "$(mean kglb "$m-$u")" "$(mean keepalived "$m-$u")" "kglb-$u" "keepalived-$u"
	done
	# More checks per CPU-second is better: this ratio is kglb over keepalived too.
	row "BenchmarkE2E$n/checks-per-cpu-s" "$(mean kglb checks-per-cpu-s)" "$(mean keepalived checks-per-cpu-s)" kglb-checks keepalived-checks
	# The bare probe loop: what a check's system calls alone reach, over
	# keepalived (the ceiling of the row above in this boot), and kglb's share of it.
	row "BenchmarkE2E$n/checks-per-cpu-s-bare" "$(mean bare checks-per-cpu-s)" "$(mean keepalived checks-per-cpu-s)" bare-checks keepalived-checks
	row "BenchmarkE2E$n/checks-per-cpu-s-of-bare" "$(mean kglb checks-per-cpu-s)" "$(mean bare checks-per-cpu-s)" kglb-checks bare-checks
	row "BenchmarkE2E$n/checks-per-s" "$(mean kglb checks-per-s)" "$(mean keepalived checks-per-s)" kglb-checks keepalived-checks
	# Detection and recovery: each daemon against its configured time
	# (interval x fall = 3s, interval x rise = 1s), the mean over the reals
	# that failed and the slowest of them; and the probes it managed per
	# second in the steady window over those its checks ask for (N x 10 reals
	# every 1s): the times promise something only where that is near 1.
	for d in kglb keepalived; do
		row "BenchmarkE2E$n/detect-$d" "$(mean "$d" detect-s)" 3 "$d-s" configured-s
		row "BenchmarkE2E$n/detect-max-$d" "$(mean "$d" detect-max-s)" 3 "$d-s" configured-s
		row "BenchmarkE2E$n/recover-$d" "$(mean "$d" recover-s)" 1 "$d-s" configured-s
		row "BenchmarkE2E$n/recover-max-$d" "$(mean "$d" recover-max-s)" 1 "$d-s" configured-s
		row "BenchmarkE2E$n/probes-$d" "$(mean "$d" checks-per-s)" "$((n * 10))" "$d-per-s" asked-per-s
	done
done
exit "$rc"
