#!/bin/bash
# e2ebench-guest.sh runs inside the booted Debian VM of scripts/e2ebench.sh
# (as the oneshot unit kglb-guest.service): kglb (the installed .deb) and
# Debian's keepalived, in turn A B A B, on the same N services x 10 reals
# (wrr, NAT, TCP checks every 1s, timeout 0.5s, rise 1, fall 3). The reals are
# addresses in one network namespace ("reals") answered by e2ereal, which
# counts the connections it accepts. Each measurement prints one line
#   E2E: M <daemon> <round> <metric> <value>
# that the host script turns into benchmark rows; "E2E: DONE" ends the run.
# The parameters come from /etc/e2ebench/env (written by the host script).
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export SYSTEMD_PAGER='' SYSTEMD_COLORS=0
# shellcheck source=/dev/null
. /etc/e2ebench/env # N ROUNDS WINDOW EDITS COLD_TIMEOUT PROFILE PERF
PERF="${PERF:-0}"
REALS=$((N * 10))
out=/root/e2e-out
mkdir -p "$out"

say() { echo "E2E: $*"; }
info() { echo "  | $*"; }
now() { local up _; read -r up _ </proc/uptime; echo "$up"; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.2f", b - a}'; }
metric() { say "M $1 $2 $3 $4"; }

say "BOOT $(cut -d' ' -f1 /proc/uptime) N=$N rounds=$ROUNDS"

# ---------------------------------------------------------------- reals
setup_net() {
	sysctl -qw net.ipv4.ip_forward=1
	ip netns add reals
	ip link add e2e0 type veth peer name r0 netns reals
	ip addr add 10.0.0.1/24 dev e2e0
	ip link set e2e0 up
	ip -n reals addr add 10.0.0.2/24 dev r0
	ip -n reals link set r0 up
	ip -n reals link set lo up
	ip -n reals route add default via 10.0.0.1
	ip netns exec reals sysctl -qw net.core.somaxconn=8192 net.ipv4.tcp_max_syn_backlog=8192
	ip route add 10.1.0.0/16 via 10.0.0.2
	awk '{print "address add " $1 "/32 dev r0"}' /etc/e2ebench/reals | ip -n reals -batch - ||
		{ say "FAIL adding the real addresses"; return 1; }
	ip netns exec reals /usr/local/sbin/e2ereal -listen 0.0.0.0:80 -count /run/e2ereal.count &
	realpid=$!
	sleep 1
	# ip netns exec runs e2ereal in its place: $! is e2ereal itself.
	say "guest: clocksource $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource) kernel $(uname -r) cpus $(nproc)"
	# What the kernel made of the TSC: without a TSC it trusts (under TCG it
	# finds the vCPUs' TSCs unsynchronized) it runs on HPET, which the vDSO
	# cannot read, so every clock read is a system call and an emulated
	# device read; the line after says what one costs.
	dmesg | grep -iE 'tsc|clocksource|sched_clock' | sed 's/^/  | dmesg: /'
	say "guest: $(/usr/local/sbin/e2eprobe -clock-reads 20000)"
}

accepted() { cat /run/e2ereal.count 2>/dev/null || echo 0; }

# clean_kernel gives the next daemon the kernel of a fresh boot. A deleted
# real waits in the kernel's destination trash (for a minute or more), and
# every real added meanwhile is first looked for in that list, one by one
# (ip_vs_trash_get_dest): the daemon started right after another would pay
# for its predecessor's 10,000 reals in its first pass (kglb's took 2.8,
# 3.9 and 4.5 s on three starts in one boot). Unloading ip_vs empties the
# trash; its sysctls come back at their defaults, so kglb's are set again.
clean_kernel() {
	ipvsadm -C
	ip link del kglb0 2>/dev/null
	rm -rf /var/lib/kglb/*
	modprobe -r ip_vs_rr ip_vs_wrr ip_vs_lc ip_vs_wlc ip_vs_sh ip_vs_mh ip_vs &&
		modprobe -a ip_vs ip_vs_rr ip_vs_wrr ip_vs_lc ip_vs_wlc ip_vs_sh ip_vs_mh &&
		sysctl -q -p /usr/lib/sysctl.d/kglb.conf ||
		say "FAIL reloading ip_vs between daemons: the next one may pay for the last one's reals"
}

# file_of V: V (a daemon, a kglb@ variant or bare) as part of a file name.
# A variant of a dozen unit directives is longer than a file name may be
# (255 bytes), and a directive's value may hold a '/': such a label is cut
# and made unique by its checksum, so that its counters and journal are kept.
file_of() {
	case "$1" in
	*/*) ;;
	*) if [ "${#1}" -le 100 ]; then
		echo "$1"
		return
	fi ;;
	esac
	printf '%s-%s\n' "$(printf '%s' "$1" | tr -c 'A-Za-z0-9@=:,._-' _ | cut -c1-60)" "$(printf '%s' "$1" | cksum | cut -d' ' -f1)"
}
# settings_of V: the settings of a variant V (D@S[,S]), a word each; none for
# a plain D.
settings_of() { case "$1" in *@*) echo "${1#*@}" | tr , ' ' ;; esac; }
comm_of() { case "${1%%@*}" in bare) echo e2eprobe ;; *) echo "${1%%@*}" ;; esac; }
unit_of() { case "${1%%@*}" in kglb) echo kglb.service ;; bare) echo e2eprobe.service ;; *) echo keepalived.service ;; esac; }
cg_cpu_us() { awk '$1 == "usage_usec" {print $2}' "/sys/fs/cgroup/system.slice/$(unit_of "$1")/cpu.stat" 2>/dev/null || echo 0; }
cg_rss_kb() {
	local p s=0 r
	for p in $(cat "/sys/fs/cgroup/system.slice/$(unit_of "$1")/cgroup.procs" 2>/dev/null); do
		r="$(awk '$1 == "VmRSS:" {print $2}' "/proc/$p/status" 2>/dev/null)"
		s=$((s + ${r:-0}))
	done
	echo "$s"
}

# set_weight DAEMON SVC REAL W: the one-line edit an operator makes.
set_weight() {
	local d="$1" svc="$2" rl="$3" w="$4"
	if [ "$d" = kglb ]; then
		sed -i "s/^  real \"$rl\" { weight = [0-9]* }/  real \"$rl\" { weight = $w }/" "/etc/kglb/s$svc.hcl"
	else
		sed -i "/^  real_server $rl 80 {/,/^  }/ s/^    weight [0-9]*/    weight $w/" /etc/keepalived/keepalived.conf
		systemctl reload keepalived
	fi
}

# waitw VIP REAL W SECONDS: wait until the real has weight W in the kernel.
waitw() {
	local end
	end=$(awk -v a="$(now)" -v b="$4" 'BEGIN {print a + b}')
	while awk -v a="$(now)" -v b="$end" 'BEGIN {exit !(a < b)}'; do
		ipvsadm -Ln -t "$1:80" 2>/dev/null | awk -v r="$2:80" -v w="$3" '$1 == "->" && $2 == r && $4 == w {f = 1} END {exit !f}' && return 0
		sleep 0.05
	done
	return 1
}

profpid=""
realpid=""
profile() { # DAEMON ROUND: a CPU profile and a trace of kglb during its cold start
	profpid=""
	[ "$PROFILE" = 1 ] && [ "$1" = kglb ] || return 0
	(
		local i
		for i in $(seq 600); do
			curl_get /healthz >/dev/null 2>&1 && break
			sleep 0.2
		done
		# The trace beside the profile, from 3 s in: the first round of
		# checks, not what follows it.
		(sleep 3 && curl_get "/debug/pprof/trace?seconds=5" >"$out/trace-$2.out") &
		curl_get "/debug/pprof/profile?seconds=20" >"$out/cpu-$2.pprof"
		wait
	) &
	profpid=$!
}
# steady_profile DAEMON ROUND: a CPU profile of kglb over the steady window
# (where checks per CPU-second are measured; the profile's own cost is in it).
steady_profile() {
	profpid=""
	[ "$PROFILE" = 1 ] && [ "$1" = kglb ] || return 0
	curl_get "/debug/pprof/profile?seconds=$((WINDOW - 1))" >"$out/cpu-steady-$2.pprof" &
	profpid=$!
}
# steady_perf DAEMON ROUND: with PERF=1, a system-wide perf profile of the
# steady window (every process and the softirqs, kernel stacks included).
perfpid=""
steady_perf() {
	perfpid=""
	[ "$PERF" = 1 ] || return 0
	sysctl -qw kernel.kptr_restrict=0 kernel.perf_event_paranoid=-1
	perf record -q -e cpu-clock -F 97 -a -g -o "$out/perf-$(file_of "$1")-$2.data" -- sleep "$((WINDOW - 1))" >/dev/null 2>&1 &
	perfpid=$!
}
perf_report() {
	[ "$PERF" = 1 ] || return 0
	local f="$out/perf-$(file_of "$1")-$2"
	{
		perf report -i "$f.data" --stdio --no-children --sort comm -g none 2>&1 | grep -v '^$' | head -40
		perf report -i "$f.data" --stdio --no-children --sort comm,dso,sym -g none 2>&1 | grep -v '^$' | head -150
		perf report -i "$f.data" --stdio --no-children --sort comm,sym -g caller,0.5,callee,function,percent --percent-limit 2 2>&1 | head -600
		# The measured process's time by what it includes (its system
		# calls, interrupts, functions), in percent of all samples.
		perf report -i "$f.data" --stdio --children --comm "$(comm_of "$1")" --sort sym -g none --percent-limit 0.3 2>&1 | grep -v '^$' | head -150
	} >"$f.txt"
	rm -f "$f.data"
	grep -v '^#' "$f.txt" | head -12 | sed 's/^/  | perf: /'
}

# memory DAEMON LABEL ROUND: what the RSS row is made of, summed over the
# unit's processes as cg_rss_kb does, read from /proc without asking the
# daemon (a scrape or a heap profile grows what it measures): anonymous
# memory (Go's heap and stacks) and file pages (the binary), and the peak.
memory() {
	local f="" p
	for p in $(cat "/sys/fs/cgroup/system.slice/$(unit_of "$1")/cgroup.procs" 2>/dev/null); do
		f="$f /proc/$p/status"
	done
	[ -n "$f" ] || return 0
	# shellcheck disable=SC2086 # one word per file
	awk -v d="$2" -v r="$3" '$1 ~ /^(VmRSS|RssAnon|RssFile|VmHWM):$/ {sub(":", "", $1); s[$1] += $2}
		END {printf "E2E: D %s %s memory-kb rss %d anon %d file %d peak %d\n", d, r, s["VmRSS"], s["RssAnon"], s["RssFile"], s["VmHWM"]}' $f 2>/dev/null
}

# steady_memory DAEMON ROUND: what kglb's RSS is made of, after the window.
steady_memory() {
	[ "$PROFILE" = 1 ] && [ "$1" = kglb ] || return 0
	curl_get /debug/pprof/heap >"$out/heap-$2.pprof"
	curl_get "/debug/pprof/goroutine?debug=1" >"$out/goroutine-$2.txt"
	curl_get /metrics | grep -E '^(go_|process_)' >"$out/runtime-$2.txt"
	local p
	for p in $(cat "/sys/fs/cgroup/system.slice/kglb.service/cgroup.procs"); do
		cat "/proc/$p/status" "/proc/$p/smaps_rollup" "/proc/$p/smaps"
	done >"$out/smaps-$2.txt" 2>&1
}
# counters DAEMON: "name value" lines of what the steady window's CPU is made
# of, for diag to subtract: the daemon's cgroup (usage, user, system, in us),
# its processes' and threads' clock ticks, context switches and schedstat
# (run and run-queue wait, ns; timeslices), the machine's /proc/stat ticks and
# softirqs, the TCP counters of the root namespace (the probes' side) and of
# the reals' namespace (the reals' side), the reals' server's own CPU ticks
# and the connections it accepted.
counters() {
	local d="$1" cg p t
	cg="/sys/fs/cgroup/system.slice/$(unit_of "$d")"
	# When the cgroup's CPU is read: diag divides it by the time between two
	# readings, which is longer than a cold start's window (e2ecold returns
	# after it, and these reads take a second or more under TCG).
	awk '{print "uptime-s", $1}' /proc/uptime
	awk '{print "cg." $1, $2}' "$cg/cpu.stat" 2>/dev/null
	for p in $(cat "$cg/cgroup.procs" 2>/dev/null); do
		awk '{sub(/^.*\) /, ""); print "proc.utime", $12; print "proc.stime", $13}' "/proc/$p/stat" 2>/dev/null
		awk '$1 == "Seccomp_filters:" {print "seccomp-filters", $2}' "/proc/$p/status" 2>/dev/null
		for t in /proc/"$p"/task/*; do
			awk '$1 == "voluntary_ctxt_switches:" {print "ctx.voluntary", $2} $1 == "nonvoluntary_ctxt_switches:" {print "ctx.nonvoluntary", $2}' "$t/status" 2>/dev/null
			awk '{print "sched.run-ns", $1; print "sched.wait-ns", $2; print "sched.slices", $3}' "$t/schedstat" 2>/dev/null
			echo "threads 1"
		done
	done
	awk '{print "uptime-stat-s", $1}' /proc/uptime # as above, for /proc/stat, read later
	awk '$1 == "cpu" {print "stat.user", $2 + $3; print "stat.system", $4; print "stat.idle", $5 + $6; print "stat.irq", $7; print "stat.softirq", $8}' /proc/stat
	awk 'NR > 1 {s = 0; for (i = 2; i <= NF; i++) s += $i; print "softirq." $1, s}' /proc/softirqs | tr -d :
	nstat -asz 2>/dev/null | awk '$1 ~ /^(TcpActiveOpens|TcpAttemptFails|TcpOutRsts|TcpEstabResets|TcpRetransSegs|TcpOutSegs|TcpExtTCPAbortOnClose|TcpExtTCPAbortOnLinger|TcpExtTCPTimeouts)$/ {print "root." $1, $2}'
	ip netns exec reals nstat -asz 2>/dev/null | awk '$1 ~ /^(TcpPassiveOpens|TcpInSegs|TcpOutRsts|TcpEstabResets|TcpExtListenDrops|TcpExtListenOverflows|TcpExtTCPReqQFullDrop|TcpExtTCPReqQFullDoCookies|TcpExtSyncookiesSent)$/ {print "reals." $1, $2}'
	[ -n "$realpid" ] && awk '{sub(/^.*\) /, ""); print "e2ereal.ticks", $12 + $13}' "/proc/$realpid/stat" 2>/dev/null
	echo "accepted $(accepted)"
}
# kglb_counters: the aggregate health and engine counters of kglb's /metrics,
# with PERF=1 only: a scrape renders every real's series (95,106 lines at
# N=1000), CPU that stays outside the window, and out of the runs whose rows
# count (each round's last step times one: its "scrape" line).
kglb_counters() {
	[ "$PERF" = 1 ] || return 0
	curl_get /metrics | awk '
		/^kglb_health_results_total/ {match($0, /outcome="[a-z]+"/); o = substr($0, RSTART + 9, RLENGTH - 10); r[o] += $NF}
		/^kglb_health_probe_lag_seconds_count/ {print "kglb.probes-started", $NF}
		/^kglb_health_changes_total/ {print "kglb.changes", $NF}
		/^kglb_reconcile_duration_seconds_count/ {print "kglb.engine-passes", $NF}
		/^kglb_health_probes_per_second/ {print "kglb.rate-" ($0 ~ /configured/ ? "configured" : "managed"), $NF}
		/^go_goroutines / {print "kglb.goroutines", $NF}
		/^go_threads / {print "kglb.go-threads", $NF}
		/^go_gc_duration_seconds_count / {print "kglb.gc-cycles", $NF}
		END {for (o in r) print "kglb.results-" o, r[o]}'
}
# diag DAEMON ROUND SECONDS BEFORE AFTER: one "E2E: D" line per counter that
# moved over the window (delta; the gauges kglb.rate-*, kglb.goroutines,
# kglb.go-threads and threads as they are after), and derived per-check
# figures: a check is a connection the reals accepted.
diag() {
	local d="$1" r="$2" w="$3" b="$4" a="$5"
	awk -v d="$d" -v r="$r" -v w="$w" '
		FNR == NR {x[$1] += $2; next}
		{y[$1] += $2}
		END {
			for (k in y) {
				v = (k ~ /^(kglb\.rate-|kglb\.go|threads|seccomp|uptime)/) ? y[k] : y[k] - x[k]
				if (v != 0) printf "E2E: D %s %s %s %s\n", d, r, k, v
			}
			n = y["accepted"] - x["accepted"]
			if (n <= 0) n = 1
			cg = (y["cg.usage_usec"] - x["cg.usage_usec"])
			busy = 0; for (k in y) if (k ~ /^stat\.(user|system|irq|softirq)$/) busy += (y[k] - x[k]) * 10000
			tick = 10000 # USER_HZ 100: us per tick
			printf "E2E: D %s %s per-check cgroup-us %.0f user-us %.0f system-us %.0f\n", d, r, cg / n, (y["cg.user_usec"] - x["cg.user_usec"]) / n, (y["cg.system_usec"] - x["cg.system_usec"]) / n
			printf "E2E: D %s %s per-check machine-busy-us %.0f softirq-us %.0f e2ereal-us %.0f\n", d, r, busy / n, (y["stat.softirq"] - x["stat.softirq"]) * tick / n, (y["e2ereal.ticks"] - x["e2ereal.ticks"]) * tick / n
			printf "E2E: D %s %s per-check connects %.3f attempt-fails %.3f passive-opens %.3f ctx-switches %.2f\n", d, r, (y["root.TcpActiveOpens"] - x["root.TcpActiveOpens"]) / n, (y["root.TcpAttemptFails"] - x["root.TcpAttemptFails"]) / n, (y["reals.TcpPassiveOpens"] - x["reals.TcpPassiveOpens"]) / n, (y["ctx.voluntary"] + y["ctx.nonvoluntary"] - x["ctx.voluntary"] - x["ctx.nonvoluntary"]) / n
			# CPUs over the time between the readings (uptime-s for the
			# cgroup, uptime-stat-s for /proc/stat), not over the window w,
			# which the readings of a cold start outlast by seconds.
			span = y["uptime-s"] - x["uptime-s"]
			if (span <= 0) span = w
			sspan = y["uptime-stat-s"] - x["uptime-stat-s"]
			if (sspan <= 0) sspan = w
			printf "E2E: D %s %s window accepted %d in %ss; cgroup %.2f CPUs over %.2fs, machine busy %.2f CPUs over %.2fs\n", d, r, n, w, cg / 1e6 / span, span, busy / 1e6 / sspan, sspan
		}' "$b" "$a" | sort
}

# curl_get PATH: GET from kglb's stats address with bash's /dev/tcp (no curl in the image).
curl_get() {
	timeout 60 bash -c 'exec 3<>/dev/tcp/127.0.0.1/5678 || exit 1
		printf "GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n" "$1" >&3
		sed "1,/^\r\{0,1\}$/d" <&3' _ "$1"
}

# window V ROUND: the steady window of V (a daemon, a kglb@ variant or bare):
# the checks the reals accepted per second and per CPU-second of V's cgroup,
# the share of a CPU it took, and the diagnostic lines of what that CPU was.
window() {
	local v="$1" d="${1%%@*}" r="$2" k cpu0 n0 cpu1 n1
	k="$(file_of "$v")-$r"
	# kglb's /metrics first: rendering every real's series costs CPU, which
	# must stay out of the counters' window.
	: >"$out/before-$k.txt"
	[ "$d" = kglb ] && kglb_counters >"$out/before-$k.txt"
	counters "$d" >>"$out/before-$k.txt"
	cpu0="$(cg_cpu_us "$d")" n0="$(accepted)"
	steady_profile "$d" "$r"
	steady_perf "$v" "$r"
	sleep "$WINDOW"
	cpu1="$(cg_cpu_us "$d")" n1="$(accepted)"
	counters "$d" >"$out/after-$k.txt"
	[ -n "$profpid" ] && wait "$profpid"
	[ -n "$perfpid" ] && wait "$perfpid" && perf_report "$v" "$r"
	[ "$d" = kglb ] && kglb_counters >>"$out/after-$k.txt"
	diag "$v" "$r" "$WINDOW" "$out/before-$k.txt" "$out/after-$k.txt"
	metric "$v" "$r" checks-per-s "$(awk -v a="$n0" -v b="$n1" -v w="$WINDOW" 'BEGIN {printf "%.0f", (b - a) / w}')"
	metric "$v" "$r" checks-per-cpu-s "$(awk -v a="$n0" -v b="$n1" -v x="$cpu0" -v y="$cpu1" 'BEGIN {printf "%.0f", (b - a) / ((y - x) / 1e6)}')"
	metric "$v" "$r" cpu-share "$(awk -v x="$cpu0" -v y="$cpu1" -v w="$WINDOW" 'BEGIN {printf "%.3f", (y - x) / 1e6 / w}')"
}

# ipvs_rules: the daemons' IPVS table (N wrr services of 10 NAT reals at
# weight 1, as both have it in their steady window) for ipvsadm -R.
ipvs_rules() {
	awk 'FNR == NR {v[FNR - 1] = $1; next}
		{i = int((FNR - 1) / 10); if ((FNR - 1) % 10 == 0) print "-A -t " v[i] ":80 -s wrr"; print "-a -t " v[i] ":80 -r " $1 ":80 -m -w 1"}' \
		/etc/e2ebench/vips /etc/e2ebench/reals
}

# sandbox_props: the sandbox of kglb's installed unit (the directives that
# confine the process: seccomp filters, namespaces, capabilities), one
# "-p" and one "Directive=value" a line, for systemd-run.
sandbox_props() {
	awk '/^\[Service\]/ {s = 1; next} /^\[/ {s = 0}
		s && /^(NoNewPrivileges|Protect[A-Za-z]+|Private(Tmp|Devices)|Restrict[A-Za-z]+|LockPersonality|MemoryDenyWriteExecute|SystemCall[A-Za-z]+|CapabilityBoundingSet)=/ {print "-p"; print}' \
		"$(systemctl show -P FragmentPath kglb.service)"
}

# run_bare V ROUND: the bare probe loop (packaging/test/e2eprobe) in the
# daemons' steady window, over the same reals and the same IPVS table: the
# checks per CPU-second of nothing but a TCP check's system calls in this
# boot, the most any daemon making the same checks can reach. V is bare, or
# for an experiment bare@S[,S]: the loop under Go's scheduler with N Ps
# (S procs=N: e2eprobe -procs), or in kglb's sandbox (S sandbox), whose
# lines stay out of the rows.
run_bare() {
	local v="$1" r="$2" k kv
	local args=() props=()
	k="$(file_of "$v")-$r"
	for kv in $(settings_of "$v"); do
		case "$kv" in
		procs=*) args+=(-procs "${kv#procs=}") ;;
		sandbox)
			mapfile -t props < <(sandbox_props)
			[ "${#props[@]}" -gt 0 ] || { say "FAIL $v round $r: no sandbox read from kglb's unit"; return; }
			info "round $r: $v: in kglb's sandbox, $((${#props[@]} / 2)) directives"
			;;
		*) say "FAIL $v round $r: unknown setting $kv (want procs=N or sandbox)"; return ;;
		esac
	done
	clean_kernel
	ipvs_rules | ipvsadm -R || say "FAIL $v round $r: ipvsadm -R"
	info "round $r: $v: the probe loop"
	systemd-run --quiet --unit=e2eprobe.service "${props[@]}" /usr/local/sbin/e2eprobe -reals /etc/e2ebench/reals "${args[@]}" ||
		{ say "FAIL $v round $r: e2eprobe did not start"; return; }
	sleep 3
	window "$v" "$r"
	stop_unit "$v" "$r" e2eprobe.service
	journalctl -u e2eprobe.service --no-pager -o short-monotonic >"$out/journal-$k.txt" 2>&1
}

# stop_unit LABEL ROUND UNIT stops UNIT and prints how long that took. A stop
# that outlasts the unit's own stop timeout by a margin means a hang outside
# the unit (systemd kills the unit at its timeout): then what every process is
# waiting in, a goroutine dump of kglb (SIGQUIT, into its journal) and the
# journal's tail go to the console before the run goes on.
stop_unit() {
	local v="$1" r="$2" u="$3" t0 pid
	t0="$(now)"
	if ! timeout 150 systemctl stop "$u"; then
		say "FAIL $v round $r: systemctl stop $u did not return in 150 s"
		info "loadavg $(cat /proc/loadavg)"
		systemctl status "$u" --no-pager 2>&1 | head -20 | sed 's/^/  | status: /'
		ps -eo pid,stat,wchan:32,pcpu,etime,comm | sed 's/^/  | ps: /'
		pid="$(systemctl show -p MainPID --value "$u")"
		if [ "${pid:-0}" != 0 ]; then
			for t in /proc/"$pid"/task/*; do info "thread ${t##*/} $(cat "$t/wchan" 2>/dev/null) $(cat "$t/stat" 2>/dev/null | cut -d' ' -f3)"; done
			kill -QUIT "$pid"
			sleep 5
		fi
		journalctl -u "$u" --no-pager -n 200 -o short-monotonic 2>&1 | sed 's/^/  | journal: /'
		timeout 60 systemctl kill -s KILL "$u"
		return
	fi
	say "D $v $r stop-s $(since "$t0")"
}

# run_one DAEMON ROUND: DAEMON is kglb or keepalived, or, for an experiment,
# kglb@VAR=value[,VAR=value]: kglb with that environment (a runtime drop-in;
# an entry unit:Directive=value is written as that [Service] line instead),
# its lines labelled with the whole word (the host's rows take plain kglb only).
run_one() {
	local v="$1" d="${1%%@*}" r="$2" t0 cold tp="" tu="" w kv k
	k="$(file_of "$v")-$r"
	rm -rf /run/systemd/system/kglb.service.d
	if [ "$v" != "$d" ]; then
		mkdir -p /run/systemd/system/kglb.service.d
		{
			echo '[Service]'
			for kv in $(settings_of "$v"); do
				case "$kv" in
				unit:*) echo "${kv#unit:}" ;;
				*) echo "Environment=$kv" ;;
				esac
			done
		} >/run/systemd/system/kglb.service.d/e2e-variant.conf
	fi
	systemctl daemon-reload
	clean_kernel
	info "round $r: $v: cold start"
	# The cold start's counters too (its lines say round R-cold): whether
	# the machine was saturated while the reals came up, and by whom.
	counters "$d" >"$out/before-cold-$k.txt"
	t0="$(now)"
	systemctl start --no-block "$(unit_of "$d")"
	profile "$d" "$r"
	# e2ecold times it (present, then up) from t0; on a timeout it prints
	# what it reached and fails.
	cold="$(e2ecold -since "$t0" -reals "$REALS" -timeout "${COLD_TIMEOUT}s")" ||
		say "FAIL $v round $r: cold start: not every real up after ${COLD_TIMEOUT}s (e2ecold above)"
	tp="$(awk '$1 == "present" {print $2}' <<<"$cold")"
	tu="$(awk '$1 == "up" {print $2}' <<<"$cold")"
	[ -n "$tp" ] && metric "$v" "$r" cold-present-s "$tp"
	[ -n "$tu" ] && metric "$v" "$r" cold-up-s "$tu"
	say "D $v $r-cold poller $(awk '$1 == "polls"' <<<"$cold")"
	counters "$d" >"$out/after-cold-$k.txt"
	if [ -n "$tu" ]; then
		diag "$v" "$r-cold" "$tu" "$out/before-cold-$k.txt" "$out/after-cold-$k.txt" | grep -E ' (per-check|window) ' || true
	fi
	[ -n "$profpid" ] && wait "$profpid" # the profile, if any
	# Where kglb's start went: its steps and its first pass.
	[ "$d" = kglb ] && journalctl -u kglb.service -o cat --no-pager | grep -E 'kglb running|first pass applied' | sed 's/^/  | /'

	# Steady state: checks per CPU-second of the daemon's cgroup, and RSS.
	sleep 3
	window "$v" "$r"
	steady_memory "$d" "$r"
	metric "$v" "$r" rss-mb "$(awk -v k="$(cg_rss_kb "$d")" 'BEGIN {printf "%.1f", k / 1024}')"
	memory "$d" "$v" "$r"

	# One-line weight edits while the checks run.
	local i svc rl vip
	for i in $(seq "$EDITS"); do
		svc=$(((i * 7919) % N)) rl="$(sed -n "$((svc * 10 + 3))p" /etc/e2ebench/reals)" vip="$(sed -n "$((svc + 1))p" /etc/e2ebench/vips)"
		w=$((i + 1))
		t0="$(now)"
		set_weight "$d" "$(printf %04d "$svc")" "$rl" "$w"
		if waitw "$vip" "$rl" "$w" 60; then
			metric "$v" "$r" edit-s "$(since "$t0")"
		else
			say "FAIL $v round $r: edit of $rl in service $svc to weight $w not in the kernel after 60s"
		fi
		set_weight "$d" "$(printf %04d "$svc")" "$rl" 1
		waitw "$vip" "$rl" 1 60 >/dev/null
		sleep 1
	done

	# Failure detection and recovery: 5 of one service's 10 reals stop
	# answering (their addresses leave the namespace: a probe gets "no route
	# to host", or times out once the namespace rate-limits its ICMP errors)
	# and come back. Not all 10: with every real down kglb's default
	# when_all_down = "fail_open" keeps their weights, keepalived does not.
	svc=$((N / 2)) vip="$(sed -n "$((svc + 1))p" /etc/e2ebench/vips)"
	local addrs
	addrs="$(sed -n "$((svc * 10 + 1)),$((svc * 10 + 5))p" /etc/e2ebench/reals | tr '\n' ' ')"
	# e2ewatch takes each address away (or back), at a random point of the
	# checks' 1s interval, and times each real from its own change to its
	# weight in the kernel, polling over netlink: the mean over the five and
	# the slowest.
	local took
	# shellcheck disable=SC2086 # one word per real
	if took="$(/usr/local/sbin/e2ewatch -vip "$vip:80" -phase 1s -state down $addrs)"; then
		metric "$v" "$r" detect-s "${took% *}"
		metric "$v" "$r" detect-max-s "${took#* }"
	else
		say "FAIL $v round $r: detection not timed (e2ewatch above)"
	fi
	# shellcheck disable=SC2086 # one word per real
	if took="$(/usr/local/sbin/e2ewatch -vip "$vip:80" -phase 1s -state up $addrs)"; then
		metric "$v" "$r" recover-s "${took% *}"
		metric "$v" "$r" recover-max-s "${took#* }"
	else
		say "FAIL $v round $r: recovery not timed (e2ewatch above)"
	fi

	if [ "$d" = kglb ]; then
		# The scrape an operator's Prometheus makes: what it costs kglb,
		# and its RSS after it (a diagnostic: the rows were taken before).
		local t0 c0
		t0="$(now)" c0="$(cg_cpu_us "$d")"
		curl_get /metrics >"$out/metrics-$r.txt"
		say "D $v $r scrape wall-s $(since "$t0") cpu-s $(awk -v a="$c0" -v b="$(cg_cpu_us "$d")" 'BEGIN {printf "%.2f", (b - a) / 1e6}') bytes $(wc -c <"$out/metrics-$r.txt")"
		memory "$d" "$v" "$r-scraped"
		grep -E '^kglb_(reconcile_duration_seconds_(sum|count)|health_probe_lag_seconds_(sum|count)|ipvs_apply_seconds_(sum|count)|health_probes_(per_second|in_flight))' "$out/metrics-$r.txt" | sed 's/^/  | /'
	fi
	stop_unit "$v" "$r" "$(unit_of "$d")"
	journalctl -u "$(unit_of "$d")" --no-pager -o short-monotonic >"$out/journal-$k.txt" 2>&1
	info "$v round $r done; $(wc -l <"$out/journal-$k.txt") journal lines"
}

setup_net || { say DONE; exit 1; }
say "reals ready: $REALS addresses in netns reals, $(accepted) accepted"
for r in $(seq "$ROUNDS"); do
	for d in $ORDER; do
		case "${d%%@*}" in
		clock:*)
			# An experiment's switch of the kernel's clocksource for the
			# entries after it, so that two clocks compare in one boot.
			# The kernel takes a name it does not have without an error and
			# keeps its clock: what it runs is read back.
			cs=/sys/devices/system/clocksource/clocksource0
			echo "${d#clock:}" >"$cs/current_clocksource"
			if [ "$(cat "$cs/current_clocksource")" != "${d#clock:}" ]; then
				say "FAIL round $r: clocksource ${d#clock:} not taken (available: $(cat "$cs/available_clocksource"))"
			fi
			say "round $r: clocksource now $(cat "$cs/current_clocksource"); $(/usr/local/sbin/e2eprobe -clock-reads 20000)"
			;;
		bare) run_bare "$d" "$r" ;;
		*) run_one "$d" "$r" ;;
		esac
	done
done
clean_kernel
sync
say DONE
# The results are on the disk: power off at once (a clean shutdown after a
# run at this scale sat for minutes).
systemctl poweroff --force --force
