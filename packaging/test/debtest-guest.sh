#!/bin/bash
# debtest-guest.sh runs inside the booted Debian VM (as the oneshot unit
# kglb-guest.service) and drives the installed kglb package as an operator
# would. Every check prints "KGLB-DEB: PASS <step>" or "KGLB-DEB: FAIL
# <step>: <why>"; "KGLB-DEB: DONE" ends the run. scripts/debtest.sh reads them.
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export SYSTEMD_PAGER='' SYSTEMD_COLORS=0

VIP=198.51.100.10
fails=0
say() { echo "KGLB-DEB: $*"; }
pass() { say "PASS $1"; }
fail() {
	say "FAIL $1: $2"
	fails=$((fails + 1))
}
info() { echo "  | $*"; }
show() { "$@" 2>&1 | sed 's/^/  | /'; }

# waitfor SECONDS CMD...: poll CMD every 0.2s until it succeeds.
waitfor() {
	local n=$(($1 * 5))
	shift
	while [ $n -gt 0 ]; do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.2
		n=$((n - 1))
	done
	return 1
}

say "BOOT $(cut -d' ' -f1 /proc/uptime)"

# ================================================================ security (issue 13)
# Who may change the balancer: the daemon runs as kglb with only its
# capabilities, the control socket is for root and group kglb, the stats
# port only reads, and kglb does not start when someone squats its address.
# The image boots with the previous package (built from the commit before
# the kglb user: the daemon ran as root, /etc/kglb root:root); it serves,
# then dpkg -i upgrades to this one, which adopts the IPVS state with no
# write and hands /etc/kglb and /var/lib/kglb to the kglb user and group.
uid_of() { awk '$1 == "Uid:" {print $2}' "/proc/$1/status" 2>/dev/null; }
upgrade_steps() {
	local deb pid npid out w own score
	deb="$(ls /root/new/kglb_*.deb | head -n1)"
	write_web 10.0.1.2 10.0.2.2
	timeout 60 systemctl reload kglb >/dev/null 2>&1
	if waitfor 60 systemctl is-active --quiet kglb && pid="$(systemctl show -p MainPID --value kglb)" &&
		[ "$(uid_of "$pid")" = 0 ] && waitfor 30 has_reals "10.0.1.2:80 10.0.2.2:80 "; then
		pass "the previous package ($(dpkg-query -W -f '${Version}' kglb)) serves web with the daemon as root (pid $pid)"
	else
		fail "previous package" "$(systemctl is-active kglb), reals '$(kernel_reals)'"
		show journalctl -u kglb --no-pager -n 20
	fi
	score="$(systemd-analyze security kglb.service 2>&1 | tail -n1 | sed 's/^.*Overall exposure level for kglb.service: //')"
	say "SECURITY-PREV $score"
	sleep 3 # a full health round
	if out="$(DEBIAN_FRONTEND=noninteractive dpkg -i "$deb" 2>&1)" && waitfor 60 systemctl is-active --quiet kglb &&
		npid="$(systemctl show -p MainPID --value kglb)" && [ "$npid" != "$pid" ]; then
		pass "dpkg -i upgrades to $(dpkg-query -W -f '${Version}' kglb): kglb active, restarted (pid $pid -> $npid)"
	else
		fail "upgrade" "$(systemctl is-active kglb): $out"
		show journalctl -u kglb --no-pager -n 20
	fi
	sleep 3 # a full health round after the restart
	w="$(metric kglb_ipvs_writes_total)"
	if [ "$w" = 0 ] && [ "$(kernel_reals)" = "10.0.1.2:80 10.0.2.2:80 " ]; then
		pass "after the upgrade kglb_ipvs_writes_total is 0 and the reals are in place (state adopted by the kglb user)"
	else
		fail "no IPVS writes after the upgrade" "kglb_ipvs_writes_total=$w reals '$(kernel_reals)'"
		show journalctl -u kglb --no-pager -n 20
	fi
	own="$(stat -c '%n %U:%G %a' /etc/kglb /etc/kglb/*.hcl /var/lib/kglb /var/lib/kglb/* | tr '\n' ';')"
	if ! echo "$own" | tr ';' '\n' | grep . | grep -Ev '^/etc/kglb root:kglb 750$|^/etc/kglb/[^ ]+ root:kglb 640$|^/var/lib/kglb kglb:kglb 750$|^/var/lib/kglb/[^ ]+ kglb:kglb [0-7]+$' >/dev/null; then
		pass "postinst set the ownership: /etc/kglb root:kglb 0750, its files 0640, /var/lib/kglb kglb:kglb"
	else
		fail "ownership after the upgrade" "$own"
	fi
}

security_steps() {
	local pid st out rc good sq msg
	pid="$(systemctl show -p MainPID --value kglb)"
	st="$(grep -E '^(Uid|Gid|CapInh|CapPrm|CapEff|CapBnd|CapAmb):' "/proc/$pid/status" | tr '\t' ' ' | tr '\n' ';')"
	info "daemon pid $pid: $st"
	# CAP_NET_ADMIN (12) and CAP_NET_RAW (13); CAP_NET_BIND_SERVICE (10) dropped: no port below 1024.
	if [ "$(uid_of "$pid")" = "$(id -u kglb)" ] && grep -q '^CapEff:.0000000000003000$' "/proc/$pid/status" &&
		grep -q '^CapAmb:.0000000000003000$' "/proc/$pid/status" && grep -q '^CapPrm:.0000000000003000$' "/proc/$pid/status"; then
		pass "the daemon runs as user kglb with exactly CAP_NET_ADMIN CAP_NET_RAW (CapEff=CapAmb=CapPrm=3000)"
	else
		fail "daemon user and capabilities" "$st"
	fi

	out="$(runuser -u nobody -- kglb reload -force 2>&1)"
	rc=$?
	if [ "$(stat -c '%U:%G %a' /run/kglb/control.sock)" = "kglb:kglb 660" ] && [ $rc = 1 ] &&
		echo "$out" | grep -q 'permission denied' && ! runuser -u nobody -- kglb status >/dev/null 2>&1; then
		pass "as nobody the control socket refuses (EACCES): $out"
	else
		fail "control socket as nobody" "mode $(stat -c '%U:%G %a' /run/kglb/control.sock) rc=$rc: $out"
	fi

	# Loosen the modes as a careless admin might: the peer check still refuses.
	chmod 0755 /run/kglb && chmod 0666 /run/kglb/control.sock
	out="$(runuser -u nobody -- kglb reload -force 2>&1)"
	rc=$?
	chmod 0750 /run/kglb && chmod 0660 /run/kglb/control.sock
	if [ $rc = 1 ] && echo "$out" | grep -q 'refused' &&
		journalctl -u kglb --no-pager | grep 'control request refused' | grep -q 'uid=65534'; then
		pass "with the socket loosened to 0666, SO_PEERCRED still refuses nobody, and the journal says who: $out"
	else
		fail "peer credentials" "rc=$rc: $out"
	fi

	out="$(runuser -u nobody -- bash -c 'exec 3<>/dev/tcp/127.0.0.1/5678 && printf "POST /reload?force=1 HTTP/1.0\r\nContent-Length: 0\r\n\r\n" >&3 && head -n1 <&3' 2>&1)"
	if echo "$out" | grep -q ' 405 '; then
		pass "as nobody, POST /reload?force=1 on the stats port is answered 405: $out"
	else
		fail "read-only stats port" "$out"
	fi

	good="$(cat /etc/kglb/web.hcl)"
	printf 'service "web" {\n  vip  = "198.51.100.999"\n  port = 80\n}\n' >/etc/kglb/web.hcl
	if out="$(kglb status 2>&1)" && echo "$out" | grep -q '10.0.3.2'; then
		pass "kglb status works with a broken config on disk"
	else
		fail "kglb status with a broken config" "$out"
	fi
	out="$(kglb reload 2>&1)"
	rc=$?
	if [ $rc = 1 ] && echo "$out" | grep -q 'web.hcl:2:' && [ "$(kernel_reals)" = "10.0.1.2:80 10.0.2.2:80 10.0.3.2:80 " ] &&
		journalctl -u kglb --no-pager | grep 'reload requested' | grep -q 'uid=0'; then
		pass "kglb reload of a broken config exits 1 with the position ($(echo "$out" | grep -m1 'web.hcl:2:')); the request is logged with uid=0"
	else
		fail "kglb reload with a broken config" "rc=$rc: $out"
	fi
	echo "$good" >/etc/kglb/web.hcl.tmp && chown root:kglb /etc/kglb/web.hcl.tmp && chmod 0640 /etc/kglb/web.hcl.tmp && mv /etc/kglb/web.hcl.tmp /etc/kglb/web.hcl
	out="$(kglb reload 2>&1)" || fail "kglb reload after the fix" "$out"

	# The data plane as the kglb user: TCP-MD5 (a BGP session with BIRD in
	# the client namespace, with a password), SO_MARK (a tunnelled check),
	# besides the IPVS and VIP routes the steps above already checked.
	printf 'md5-s3cret\n' >/etc/kglb/client.secret
	chown root:kglb /etc/kglb/client.secret && chmod 0640 /etc/kglb/client.secret
	cat >/etc/kglb/sec.hcl <<'HCL'
bgp {
  asn       = 65010
  router_id = "10.0.0.1"
  neighbor "client" {
    address       = "10.0.0.2"
    asn           = 65000
    hold_time     = "9s"
    connect_retry = "1s"
    password_file = "/etc/kglb/client.secret"
  }
}

service "tun" {
  vip  = "198.51.100.20"
  port = 80
  real "10.0.1.2" {}
  check "http" {
    tunnel   = true
    interval = "500ms"
    timeout  = "300ms"
  }
}
HCL
	sed -i 's/^\(\s*vip_interface.*\)$/\1\n  health_source = "10.0.0.1"/' /etc/kglb/kglb.hcl
	cat >/run/bird-client.conf <<'BIRD'
router id 10.0.0.2;
protocol device {}
protocol bgp kglb {
  local 10.0.0.2 as 65000;
  neighbor 10.0.0.1 as 65010;
  password "md5-s3cret";
  ipv4 { import all; export none; };
}
BIRD
	ip netns exec client bird -c /run/bird-client.conf -s /run/bird-client.ctl
	timeout 60 systemctl restart kglb && waitfor 30 systemctl is-active --quiet kglb
	if waitfor 40 bash -c 'birdc -s /run/bird-client.ctl show protocols kglb | grep -q Established'; then
		pass "as user kglb, the BGP session with a TCP-MD5 password is Established at BIRD ($(birdc -s /run/bird-client.ctl show route count | grep -o '[0-9]* of [0-9]* routes' | head -n1))"
	else
		fail "TCP-MD5 session as kglb" "$(birdc -s /run/bird-client.ctl show protocols all kglb 2>&1 | tr '\n' ' ')"
		show journalctl -u kglb --no-pager -n 20
	fi
	st="$(http_get 127.0.0.1 5678 /status)"
	if waitfor 10 bash -c "$(declare -f http_get); http_get 127.0.0.1 5678 /status | grep -q '\"last_result\"'" &&
		! echo "$st" | grep -qi 'not permitted' && ! journalctl -u kglb --no-pager | grep -qi 'operation not permitted' &&
		! echo "$st" | grep -q 'md5-s3cret' && ! journalctl -u kglb --no-pager | grep -q 'md5-s3cret'; then
		pass "as user kglb, tunnelled probes set SO_MARK (no 'operation not permitted'); the password is in neither /status nor the journal"
	else
		fail "SO_MARK as kglb" "$(echo "$st" | grep -i -m3 'reason\|not permitted' | tr '\n' ' ')"
	fi
	birdc -s /run/bird-client.ctl down >/dev/null 2>&1
	rm -f /etc/kglb/sec.hcl /etc/kglb/client.secret
	sed -i '/health_source = "10.0.0.1"/d' /etc/kglb/kglb.hcl
	# Applied now and on purpose (it deletes a VIP): a start must not find it pending.
	out="$(kglb reload -force 2>&1)" || fail "forced reload through the socket" "$out"

	# A squatter on the stats address: kglb refuses to start, and says why.
	systemctl stop kglb
	runuser -u nobody -- busybox nc -ll -p 5678 -e /bin/cat &
	sq=$!
	waitfor 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/5678'
	if ! timeout 60 systemctl start kglb 2>/dev/null &&
		msg="$(journalctl -u kglb --no-pager | grep -m1 'listen on stats_address 127.0.0.1:5678: bind: address already in use')"; then
		pass "with 127.0.0.1:5678 squatted, systemctl start kglb fails: ${msg#*]: }"
	else
		fail "squatted stats address" "$(systemctl is-active kglb)"
		show journalctl -u kglb --no-pager -n 10
	fi
	kill "$sq" 2>/dev/null
	pkill -P "$sq" 2>/dev/null
	wait "$sq" 2>/dev/null
	# Restart=on-failure may have an attempt of its own under way (begun while
	# the squatter was still there): end it, then start once, cleanly.
	timeout 120 systemctl stop kglb
	systemctl reset-failed kglb
	if ! { timeout 60 systemctl start kglb && waitfor 30 systemctl is-active --quiet kglb; }; then
		fail "start after the squatter left" "$(systemctl is-active kglb)"
		show systemctl status kglb --no-pager -n 0
		show journalctl -u kglb --no-pager -n 40
	fi
}

# ---------------------------------------------------------------- plan (issue 16)
# kglb plan against the running unit: a candidate directory that drops a
# real is planned (and nothing is written), the running one plans to no
# changes, and the live edit before was logged with what it did.
plan_steps() {
	local out rc rc4
	rm -rf /etc/kglb-next && cp -a /etc/kglb /etc/kglb-next
	sed -i '/real "10.0.3.2"/d' /etc/kglb-next/web.hcl
	out="$(kglb plan /etc/kglb-next 2>&1)"
	rc=$?
	info "kglb plan /etc/kglb-next (exit $rc):"
	echo "$out" | sed 's/^/  | /'
	kglb plan -detailed-exitcode /etc/kglb-next >/dev/null 2>&1
	rc4=$?
	if [ $rc = 0 ] && [ $rc4 = 4 ] && echo "$out" | grep -q -- '- real 10.0.3.2:80' && echo "$out" | grep -q '^guard: pass' &&
		[ "$(kernel_reals)" = "10.0.1.2:80 10.0.2.2:80 10.0.3.2:80 " ]; then
		pass "kglb plan of a candidate without 10.0.3.2 lists its removal, -detailed-exitcode exits 4, the kernel is untouched"
	else
		fail "kglb plan of a candidate" "rc=$rc reals '$(kernel_reals)': $out"
	fi
	out="$(kglb plan -detailed-exitcode 2>&1)"
	rc=$?
	if [ $rc = 0 ] && echo "$out" | grep -q '^no changes$' &&
		journalctl -u kglb --no-pager | grep 'reload applied' | grep -q 'ipvs_writes=add_real=1'; then
		pass "kglb plan of /etc/kglb says no changes (exit 0); the journal logged the live edit: $(journalctl -u kglb --no-pager | grep 'reload applied' | grep 'ipvs_writes=add_real=1' | tail -n1 | sed 's/.*reload applied/reload applied/')"
	else
		fail "kglb plan of the running config" "rc=$rc: $out"
		show journalctl -u kglb --no-pager -n 20
	fi
	out="$(kglb plan -offline /etc/kglb-next 2>&1)"
	rc=$?
	info "kglb plan -offline /etc/kglb-next (exit $rc):"
	echo "$out" | sed 's/^/  | /'
	if [ $rc = 0 ] && echo "$out" | grep -q '^OFFLINE' && echo "$out" | grep -q -- '- real 10.0.3.2:80' && ! echo "$out" | grep -q 'would fail' &&
		[ "$(kernel_reals)" = "10.0.1.2:80 10.0.2.2:80 10.0.3.2:80 " ]; then
		pass "kglb plan -offline (no daemon asked: the kernel and /var/lib/kglb) says so and lists the removal; the kernel is untouched"
	else
		fail "kglb plan -offline" "rc=$rc reals '$(kernel_reals)': $out"
	fi
	rm -rf /etc/kglb-next
}

# ---------------------------------------------------------------- reload logs its plan (issue 16)
# The plan kglb plan prints for a candidate is the plan the reload that
# applies it logs: the same summary, the same service and real lines.
reload_plan_steps() {
	local out before line svc real summary
	rm -rf /etc/kglb-next && cp -a /etc/kglb /etc/kglb-next
	sed -i '/real "10.0.3.2"/d' /etc/kglb-next/web.hcl
	out="$(kglb plan /etc/kglb-next 2>&1)"
	svc="$(echo "$out" | grep -m1 -- '~ service web ' | sed 's/^ *//')"
	real="$(echo "$out" | grep -m1 -- '- real 10.0.3.2:80' | sed 's/^ *//')"
	summary="$(echo "$out" | sed -n 's/^plan: //p')"
	before="$(journalctl -u kglb -o cat --no-pager | grep -c 'reload applied')"
	cp /etc/kglb-next/web.hcl /etc/kglb/.web.hcl.tmp && mv /etc/kglb/.web.hcl.tmp /etc/kglb/web.hcl
	timeout 60 systemctl reload kglb >/dev/null 2>&1
	waitfor 20 has_reals "10.0.1.2:80 10.0.2.2:80 "
	line="$(journalctl -u kglb -o cat --no-pager | grep 'reload applied' | tail -n +"$((before + 1))" | grep -F -- "$real" | tail -n1)"
	info "kglb plan /etc/kglb-next, then the reload that applied it logged:"
	info "$line"
	if [ -n "$svc" ] && [ -n "$real" ] && [ -n "$summary" ] &&
		echo "$line" | grep -qF -- "summary=\"$summary\"" && echo "$line" | grep -qF -- "$svc [$real"; then
		pass "the reload logged the plan kglb plan printed before it (same summary, '$svc [$real')"
	else
		fail "the reload's logged plan" "plan said '$svc' '$real' '$summary'; journal: '$line'"
		show journalctl -u kglb --no-pager -n 20
	fi
	write_web 10.0.1.2 10.0.2.2 10.0.3.2
	waitfor 20 has_reals "10.0.1.2:80 10.0.2.2:80 10.0.3.2:80 " || fail "restore the third real" "reals '$(kernel_reals)'"
	rm -rf /etc/kglb-next
}

# ================================================================ BGP router (issue 14)
# A real top-of-rack router: BIRD in the namespace "tor" (10.0.9.2) peers
# with the kglb unit (10.0.9.1) with graceful restart on both sides and
# installs the VIP it learns in that namespace's kernel, where a client
# sends requests through it: the tor namespace has no other route to the
# VIP. An upgrade (apt-get install of a newer package, whose postinst runs
# try-restart) and a systemctl restart must keep the route in BIRD's RIB as
# stale until kglb's End-of-RIB, with zero failed requests; a systemctl
# stop re-announces it with GRACEFUL_SHUTDOWN, withdraws it while the
# session is up, then ends the session, and the router's route is gone.
TOR_VIP=198.51.100.40
TOR_CTL=/run/bird-tor.ctl
tor_setup() {
	ip netns add tor
	ip link add lbt type veth peer name t0 netns tor
	ip addr add 10.0.9.1/24 dev lbt
	ip link set lbt up
	ip -n tor addr add 10.0.9.2/24 dev t0
	ip -n tor link set t0 up
	ip -n tor link set lo up
	cat >/run/bird-tor.conf <<'BIRD'
router id 10.0.9.2;
log "/run/bird-tor.log" all;
protocol device {}
protocol kernel { ipv4 { import none; export all; }; }
protocol bgp kglb {
  local 10.0.9.2 as 65000;
  neighbor 10.0.9.1 as 65010;
  passive on;
  graceful restart on;
  debug { states, events, packets, routes };
  ipv4 { import all; export none; };
}
BIRD
	ip netns exec tor bird -c /run/bird-tor.conf -s "$TOR_CTL"
	cat >/etc/kglb/.tor.hcl.tmp <<HCL
bgp {
  asn                    = 65010
  router_id              = "10.0.9.1"
  graceful_shutdown      = true
  graceful_shutdown_wait = "2s"
  neighbor "tor" {
    address          = "10.0.9.2"
    asn              = 65000
    hold_time        = "9s"
    connect_retry    = "1s"
    graceful_restart = true
    restart_time     = "60s"
  }
}

service "tor" {
  vip     = "$TOR_VIP"
  port    = 8080
  forward = "nat"

  real "10.0.2.2:80" {}
  real "10.0.3.2:80" {}
}
HCL
	chown root:kglb /etc/kglb/.tor.hcl.tmp && chmod 0640 /etc/kglb/.tor.hcl.tmp && mv /etc/kglb/.tor.hcl.tmp /etc/kglb/tor.hcl
}
tor_proto() { birdc -s "$TOR_CTL" show protocols all kglb 2>/dev/null; }
tor_rib() { birdc -s "$TOR_CTL" show route "$TOR_VIP/32" all 2>/dev/null | grep -A20 "^$TOR_VIP/32"; }
tor_fib() { ip -n tor route show "$TOR_VIP/32" | grep -q 'via 10.0.9.1'; }
# tor_sample: one line of what the router holds: est (session Established),
# gr (BIRD holds kglb's routes for a graceful restart), rib, fib (the
# route in BIRD and in the tor kernel), gshut (the route carries 65535:0).
tor_sample() {
	local p r est=0 gr=0 rib=0 fib=0 gshut=0
	p="$(tor_proto)"
	r="$(tor_rib)"
	echo "$p" | grep -q 'BGP state: *Established' && est=1
	echo "$p" | grep -q 'Neighbor graceful restart active' && gr=1
	[ -n "$r" ] && rib=1
	echo "$r" | grep -q '(65535,0)' && gshut=1
	tor_fib && fib=1
	echo "est=$est gr=$gr rib=$rib fib=$fib gshut=$gshut"
}
tor_sampler_start() {
	: >/run/tor-samples
	(while :; do echo "$(date +%T.%N | cut -c1-12) $(tor_sample)" >>/run/tor-samples; sleep 0.1; done) &
	tor_sampler=$!
}
tor_sampler_stop() { kill "$tor_sampler" 2>/dev/null; wait "$tor_sampler" 2>/dev/null; }
tor_count() { grep -c -- "$1" /run/tor-samples; } # tor_count REGEX
# tor_stop SECONDS: systemctl stop kglb (given up after SECONDS) with the
# sampler on, until the session is down. It sets the line numbers of the
# first sample with the community (first_gs), the first without the route
# while the session was up (first_wd) and the first with it down
# (first_down), and the reason BIRD was given (down).
tor_stop() {
	tor_sampler_start
	timeout "$1" systemctl stop kglb
	waitfor 30 tor_down
	tor_sampler_stop
	echo "$(date +%T.%N | cut -c1-12) $(tor_sample)" >>/run/tor-samples
	first_gs="$(grep -n 'est=1 .*rib=1 .*gshut=1' /run/tor-samples | head -n1 | cut -d: -f1)"
	first_wd="$(grep -n 'est=1 gr=0 rib=0 fib=0' /run/tor-samples | head -n1 | cut -d: -f1)"
	first_down="$(grep -n 'est=0' /run/tor-samples | head -n1 | cut -d: -f1)"
	down="$(tor_proto | grep -o 'Received: Administrative shutdown.*' | head -n1)"
}
# tor_stopped_in_order: the last tor_stop re-announced with GRACEFUL_SHUTDOWN,
# then withdrew while the session was up, then ended the session with a
# NOTIFICATION, and the tor kernel has no route left.
tor_stopped_in_order() {
	[ -n "$first_gs" ] && [ -n "$first_wd" ] && [ -n "$first_down" ] && [ "$first_gs" -lt "$first_wd" ] &&
		[ "$first_wd" -lt "$first_down" ] && [ -n "$down" ] && ! tor_fib
}
tor_refreshed() { [ "$(tor_sample)" = "est=1 gr=0 rib=1 fib=1 gshut=0" ]; }
tor_client_start() {
	: >/run/tor-client.log
	# One line a request: ok or fail, how long it took, when it began. A
	# request fails when it has no answer within 10 s: the TCG guest, on a
	# loaded host, can take seconds to run the client while apt-get works
	# (kglb's own probes time out then); a route missing from the router
	# is caught by BIRD's route log and the samples, not only here.
	ip netns exec tor bash -c "$(declare -f http_get)
		while :; do
			t0=\$(date +%s%N)
			if [ -n \"\$(http_get $TOR_VIP 8080 / 10)\" ]; then r=ok; else r=fail; fi
			echo \"\$r \$(( (\$(date +%s%N) - t0) / 1000000 ))ms \$(date -d @\$((t0 / 1000000000)) +%T)\"
			sleep 0.1
		done >>/run/tor-client.log" &
	tor_client=$!
	waitfor 20 grep -q ok /run/tor-client.log || return 1
	: >/run/tor-client.log
}
tor_client_stop() { # print "<failed> of <requests> (slowest <ms>)"
	kill "$tor_client" 2>/dev/null
	wait "$tor_client" 2>/dev/null
	echo "$(grep -c '^fail' /run/tor-client.log) of $(wc -l </run/tor-client.log) (slowest $(awk '{sub("ms", "", $2); if ($2 > m) m = $2} END {print m + 0}' /run/tor-client.log) ms)"
}
tor_down() { ! tor_proto | grep -q 'BGP state: *Established'; }
# tor_restart WHAT CMD...: run CMD (a restart of the unit) with the client
# and the sampler on, then judge what the router did.
tor_restart() {
	local what="$1" pid npid out f stale gone eor since routes
	shift
	pid="$(systemctl show -p MainPID --value kglb)"
	since="$(date +%s)"
	local from
	from="$(wc -l </run/bird-tor.log)"
	tor_client_start
	tor_sampler_start
	out="$("$@" 2>&1)" || fail "$what" "$out"
	waitfor 60 tor_refreshed
	sleep 1 # requests after the refresh
	tor_sampler_stop
	f="$(tor_client_stop)"
	npid="$(systemctl show -p MainPID --value kglb)"
	stale="$(tor_count 'est=[01] gr=1 rib=1 fib=1')"
	gone="$(tor_count 'rib=0\|fib=0')"
	eor="$(tail -n +"$from" /run/bird-tor.log | grep -E 'Neighbor graceful restart (detected|done)|Got END-OF-RIB' | sed 's/^.*kglb: //' | tr '\n' ';')"
	# BIRD's route trace: the VIP is updated, never removed.
	routes="$(tail -n +"$from" /run/bird-tor.log | grep -F " $TOR_VIP/32" | sed -E 's/^.* > ([a-z]+) .*$/\1/' | sort | uniq -c | awk '{printf "%s %s; ", $2, $1}')"
	if [ "$npid" != "$pid" ] && [ "$stale" -gt 0 ] &&
		journalctl -u kglb --no-pager --since "@$since" | grep -q 'stopped for a planned restart' &&
		journalctl -u kglb --no-pager --since "@$since" | grep -q 'starting after a planned restart' && [ "$gone" = 0 ] &&
		! tail -n +"$from" /run/bird-tor.log | grep -F " $TOR_VIP/32" | grep -q 'removed\|withdrawn' && [ "${f%% *}" = 0 ] && tor_refreshed &&
		case "$eor" in *"graceful restart detected"*"Got END-OF-RIB"*"graceful restart done"*) true ;; *) false ;; esac &&
		tor_proto | grep -q 'AF preserved:.*ipv4'; then
		pass "$what (pid $pid -> $npid, a planned restart by the journal): BIRD kept $TOR_VIP/32 as stale in its RIB and kernel ($stale of $(wc -l </run/tor-samples) samples in graceful restart, none without the route), then End-of-RIB refreshed it ($eor AF preserved: ipv4; BIRD's route trace for it: ${routes}none removed); failed requests: $f"
	else
		fail "$what" "pid $pid -> $npid, stale samples $stale, samples without the route $gone, failed $f, BIRD: $eor routes: $routes"
		show sh -c "tail -n +$from /run/bird-tor.log | grep -F ' $TOR_VIP/32'"
		show cat /run/tor-samples
		show grep -v '^ok' /run/tor-client.log
		show tor_proto
		show journalctl -u kglb --no-pager -n 30
	fi
}
bgp_router_steps() {
	local deb since result held killed
	tor_setup
	timeout 60 systemctl restart kglb && waitfor 30 systemctl is-active --quiet kglb
	if waitfor 60 tor_refreshed && tor_client_start; then
		tor_client_stop >/dev/null
		pass "BIRD in namespace tor learned $TOR_VIP/32 from kglb ($(ip -n tor route show "$TOR_VIP/32" | head -n1)); the tor client reaches it"
	else
		fail "BGP with BIRD in namespace tor" "$(tor_sample)"
		show tor_proto
		show journalctl -u kglb --no-pager -n 30
	fi
	show tor_proto

	deb="$(ls /root/newer/kglb_*.deb | head -n1)"
	tor_restart "apt-get install of the newer package $(dpkg-deb -f "$deb" Version) (postinst try-restart)" \
		env DEBIAN_FRONTEND=noninteractive apt-get install -y "$deb"
	if [ "$(dpkg-query -W -f '${Version}' kglb)" != "$(dpkg-deb -f "$deb" Version)" ]; then
		fail "upgrade to the newer package" "installed $(dpkg-query -W -f '${Version}' kglb)"
	fi
	tor_restart "systemctl restart kglb" timeout 60 systemctl restart kglb

	tor_stop 60
	if tor_stopped_in_order && [ "$(ipvsadm -Ln -t "$TOR_VIP:8080" | grep -c -- '-> 10\.')" = 2 ]; then
		pass "systemctl stop: BIRD saw $TOR_VIP/32 with GRACEFUL_SHUTDOWN (sample $first_gs), withdrawn while the session was up (sample $first_wd), then the session end ($down, sample $first_down); the tor kernel route is gone, the IPVS service stays (on_stop = keep)"
	else
		fail "systemctl stop with a router" "samples: graceful shutdown $first_gs, withdrawn $first_wd, down $first_down; '$down'"
		show cat /run/tor-samples
		show tor_proto
		show journalctl -u kglb --no-pager -n 30
	fi

	# A stop whose waits outlast the unit's TimeoutStopSec=90s: kglb extends
	# the stop's timeout as it begins (EXTEND_TIMEOUT_USEC), so systemd
	# neither kills it in the middle of graceful_shutdown_wait nor cuts the
	# withdrawal and the hold after it.
	sed -i 's/graceful_shutdown_wait = "2s"/graceful_shutdown_wait = "95s"/' /etc/kglb/tor.hcl
	timeout 60 systemctl start kglb && waitfor 30 systemctl is-active --quiet kglb
	if waitfor 60 tor_refreshed; then
		since="$(date '+%Y-%m-%d %H:%M:%S')"
		tor_stop 300
		result="$(systemctl show -p Result --value kglb)"
		held="$(journalctl -u kglb --no-pager --since "$since" | grep -m1 'routes withdrawn; holding' || true)"
		killed="$(journalctl -u kglb --no-pager --since "$since" | grep -m1 -i 'timed out\|killing\|deadline exceeded' || true)"
		if tor_stopped_in_order && [ "$result" = success ] && [ -n "$held" ] && [ -z "$killed" ]; then
			pass "systemctl stop with graceful_shutdown_wait = \"95s\" (past TimeoutStopSec=90s) ran to its end: GRACEFUL_SHUTDOWN (sample $first_gs), withdrawn while the session was up (sample $first_wd), then held (${held#*]: }); Result=$result, nothing killed or cut"
		else
			fail "a stop longer than TimeoutStopSec" "Result=$result held '$held' killed '$killed'; samples: graceful shutdown $first_gs, withdrawn $first_wd, down $first_down"
			show journalctl -u kglb --no-pager --since "$since"
		fi
	else
		fail "a stop longer than TimeoutStopSec" "no route at the router before the stop: $(tor_sample)"
	fi
	birdc -s "$TOR_CTL" down >/dev/null 2>&1
	rm -f /etc/kglb/tor.hcl
	timeout 60 systemctl start kglb && waitfor 30 systemctl is-active --quiet kglb || fail "start after the router steps" "$(systemctl is-active kglb)"
}
# ================================================================ end of BGP router (issue 14)

# ---------------------------------------------------------------- network
# client --- LB (this root namespace) --- real1, real2; NAT forwarding, so
# the reals route their replies back through the LB.
setup_net() {
	sysctl -qw net.ipv4.ip_forward=1
	ip netns add client
	ip link add lbc type veth peer name c0 netns client
	ip addr add 10.0.0.1/24 dev lbc
	ip link set lbc up
	ip -n client addr add 10.0.0.2/24 dev c0
	ip -n client link set c0 up
	ip -n client link set lo up
	ip -n client route add default via 10.0.0.1
	local i
	for i in 1 2 3; do
		ip netns add "real$i"
		ip link add "lbr$i" type veth peer name r0 netns "real$i"
		ip addr add "10.0.$i.1/24" dev "lbr$i"
		ip link set "lbr$i" up
		ip -n "real$i" addr add "10.0.$i.2/24" dev r0
		ip -n "real$i" link set r0 up
		ip -n "real$i" link set lo up
		ip -n "real$i" route add default via "10.0.$i.1"
		mkdir -p "/srv/real$i"
		echo "real$i" >"/srv/real$i/index.html"
		ip netns exec "real$i" busybox httpd -p 80 -h "/srv/real$i"
		ip netns exec "real$i" busybox nc -ll -p 9000 -e /bin/cat &
	done
}

write_web() { # the reals of the web service, as "10.0.1.2" words
	local r tmp=/etc/kglb/.web.hcl.tmp
	{
		cat <<HCL
service "web" {
  vip     = "$VIP"
  port    = 80
  forward = "nat"
  drain   = "0s"

HCL
		for r in "$@"; do echo "  real \"$r\" {}"; done
		cat <<HCL

  check "http" {
    interval = "500ms"
    timeout  = "300ms"
    rise     = 1
    fall     = 2
  }
}

service "echo" {
  vip     = "$VIP"
  port    = 9000
  forward = "nat"

  real "10.0.1.2" {}
}
HCL
	} >"$tmp"
	mv "$tmp" /etc/kglb/web.hcl
}

kernel_reals() { ipvsadm -Ln -t "$VIP:80" 2>/dev/null | awk '$1 == "->" && $2 ~ /^10\./ {print $2}' | sort | tr '\n' ' '; }
vip_routed() { ip route show table local | grep -q "local $VIP "; }
# http_get HOST PORT PATH [SECONDS]: the body of an HTTP/1.0 GET (bash's
# /dev/tcp), given up after SECONDS (default 3).
http_get() {
	timeout "${4:-3}" bash -c 'exec 3<>"/dev/tcp/$1/$2" || exit 1
		printf "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n" "$3" "$1" >&3
		sed "1,/^\r\{0,1\}$/d" <&3' _ "$@"
}
fetch() { ip netns exec client bash -c "$(declare -f http_get); http_get $VIP 80 /" 2>/dev/null; }
# metric NAME: the sum of a metric's samples; "none" when /metrics cannot be read.
metric() {
	local body try
	for try in 1 2 3; do # a slow, shared TCG machine can miss http_get's 3 s
		body="$(http_get 127.0.0.1 5678 /metrics)" && [ -n "$body" ] && break
	done
	[ -n "$body" ] || { echo none; return; }
	echo "$body" | awk -v n="$1" '$1 == n || index($1, n "{") == 1 {s += $NF} END {print s + 0}'
}
has_reals() { [ "$(kernel_reals)" = "$1" ]; }

# replies COUNT: which reals answered COUNT requests.
replies() {
	local i out=""
	for i in $(seq "$1"); do out="$out $(fetch)"; done
	echo "$out" | tr ' ' '\n' | grep . | sort | uniq -c | awk '{printf "%s=%s ", $2, $1}'
}

setup_net
pass "network namespaces (client, real1..3) with HTTP and echo servers"

# ================================================================ issue 10 (helpers)
# The run boots twice: the second boot (after a reboot with a broken edit,
# at the end of the issue 10 block) skips to the checks after that block.
# These helpers serve both boots.
rebooted=/var/lib/kglb-debtest-rebooted
steady='service "steady" {
  vip     = "198.51.100.10"
  port    = 8080
  forward = "nat"

  real "10.0.2.2:80" {}
  real "10.0.3.2:80" {}
}'
client_start() {
	: >/run/client.log
	ip netns exec client bash -c "$(declare -f http_get)
		while :; do
			if [ -n \"\$(http_get $VIP 8080 /)\" ]; then echo ok; else echo fail; fi
			sleep 0.1
		done >>/run/client.log" &
	client=$!
	# Count from the first answer: what a scenario does comes after it.
	waitfor 20 grep -q ok /run/client.log && : >/run/client.log
}
client_fails() { # stop the client; print "<failed> of <requests>"
	kill "$client" 2>/dev/null
	wait "$client" 2>/dev/null
	echo "$(grep -c fail /run/client.log) of $(wc -l </run/client.log)"
}
unit_status() { systemctl show -p StatusText --value kglb; }
restart_ok() { timeout 60 systemctl restart kglb && waitfor 30 systemctl is-active --quiet kglb; }
steady_up() { [ "$(ipvsadm -Ln -t "$VIP:8080" 2>/dev/null | grep -c -- '-> 10\.')" = 2 ]; }
# adds_deletes: IPVS services and reals added or deleted so far.
adds_deletes() {
	http_get 127.0.0.1 5678 /metrics |
		awk 'index($1, "kglb_ipvs_writes_total{") == 1 && $1 ~ /op="(add|delete)_(service|real)"/ {s += $NF} END {print s + 0}'
}
metric_is() { [ "$(metric "$1")" = "$2" ]; }
# ================================================================ end of issue 10 (helpers)
if [ ! -e "$rebooted" ]; then # issue 10: the first boot, up to the reboot
# ---------------------------------------------------------------- 0. upgrade
# (the first boot only: the second runs the upgraded package)
upgrade_steps

# ---------------------------------------------------------------- 1. start
if waitfor 60 systemctl is-active --quiet kglb; then
	pass "kglb.service is active after boot (Type=notify: READY=1 received)"
else
	fail "kglb.service active after boot" "$(systemctl is-active kglb)"
	show systemctl status --no-pager kglb
	show journalctl -u kglb --no-pager -n 30
fi
if lsmod | grep -q '^ip_vs_mh' && [ "$(sysctl -n net.ipv4.vs.expire_nodest_conn 2>/dev/null)" = 0 ] &&
	[ "$(sysctl -n net.ipv4.vs.sloppy_tcp 2>/dev/null)" = 1 ] &&
	[ "$(sysctl -n net.ipv4.vs.schedule_icmp 2>/dev/null)" = 1 ]; then
	pass "modules-load.d loaded ip_vs_mh; sysctl.d set expire_nodest_conn=0 sloppy_tcp=1 schedule_icmp=1"
else
	fail "modules and sysctls" "$(lsmod | grep -c ip_vs) ip_vs modules, expire_nodest_conn=$(sysctl -n net.ipv4.vs.expire_nodest_conn 2>&1)"
fi
if out="$(kglb status 2>&1)"; then
	pass "kglb status answers"
	echo "$out" | sed 's/^/  | /'
else
	fail "kglb status" "$out"
fi
# The probes take every CPU and the engine has one of Go's Ps beyond them
# (health.EngineProcs); the unit sets no CPU quota and no GOMAXPROCS.
procs="$(metric go_sched_gomaxprocs_threads)"
if [ "$procs" = "$(($(nproc) + 1))" ]; then
	pass "kglb runs with GOMAXPROCS $procs on $(nproc) CPUs"
else
	fail "GOMAXPROCS one more than the CPUs" "go_sched_gomaxprocs_threads $procs, $(nproc) CPUs"
fi

# ---------------------------------------------------------------- 2. config
write_web 10.0.1.2 10.0.2.2
if out="$(timeout 60 systemctl reload kglb 2>&1)"; then
	pass "systemctl reload kglb with a new service file"
else
	fail "systemctl reload with a good config" "$out"
fi
if waitfor 20 has_reals "10.0.1.2:80 10.0.2.2:80 " && waitfor 10 vip_routed; then
	pass "IPVS service $VIP:80 with 2 reals and a local route for the VIP"
else
	fail "IPVS service and VIP" "reals: '$(kernel_reals)'"
fi
show ipvsadm -Ln
show ip route show table local "$VIP"
got=""
for _ in $(seq 50); do
	got="$(replies 10)"
	case "$got" in *real1=*real2=*) break ;; esac
	sleep 0.3
done
case "$got" in
*real1=*real2=*) pass "the client reaches both reals through the VIP ($got)" ;;
*) fail "traffic through the VIP" "replies: '$got'" ;;
esac

# ---------------------------------------------------------------- 3. live edit
write_web 10.0.1.2 10.0.2.2 10.0.3.2
if waitfor 20 has_reals "10.0.1.2:80 10.0.2.2:80 10.0.3.2:80 "; then
	pass "an edit to web.hcl (a third real) is applied live, without reload"
else
	fail "live edit" "reals: '$(kernel_reals)'"
fi
plan_steps
reload_plan_steps

# ---------------------------------------------------------------- 4. broken edit
good="$(cat /etc/kglb/web.hcl)"
printf 'service "web" {\n  vip  = "198.51.100.999"\n  port = 80\n}\n' >/etc/kglb/web.hcl
if out="$(timeout 60 systemctl reload kglb 2>&1)"; then
	fail "broken edit" "systemctl reload succeeded"
else
	pass "systemctl reload kglb fails on a broken edit"
fi
# ExecReload's `kglb validate` said it, not only the daemon's own file watch:
# keep the journal lines of processes other than the main one.
mainpid="$(systemctl show -p MainPID --value kglb)"
msg="$(journalctl -u kglb --no-pager -o short | grep 'web.hcl:2:' | grep -v "\[$mainpid\]:" | head -n1)"
if [ -n "$msg" ]; then
	pass "systemctl reload's validate printed the positioned message: ${msg#*]: }"
else
	fail "positioned message" "no web.hcl:2: line from ExecReload (main pid $mainpid) in journalctl -u kglb"
	show journalctl -u kglb --no-pager -n 20
fi
sleep 1
if systemctl is-active --quiet kglb && [ "$(kernel_reals)" = "10.0.1.2:80 10.0.2.2:80 10.0.3.2:80 " ]; then
	pass "the daemon keeps running the last good config"
else
	fail "last good config" "$(systemctl is-active kglb), reals '$(kernel_reals)'"
fi
# The daemon's own watch rejected the edit too (ExecReload's validate failed,
# so no SIGHUP came): the unit's status says so.
if waitfor 10 sh -c "systemctl show -p StatusText --value kglb | grep -q '^config rejected.*web.hcl:2:'"; then
	pass "the unit's status shows the edit the watch rejected: $(unit_status)"
else
	fail "rejected edit in the unit's status" "STATUS=$(unit_status)"
fi
echo "$good" >/etc/kglb/web.hcl.tmp && mv /etc/kglb/web.hcl.tmp /etc/kglb/web.hcl
timeout 60 systemctl reload kglb >/dev/null 2>&1 || fail "reload after the fix" "failed"

# ---------------------------------------------------------------- 5. restart
mkfifo /run/to-echo
ip netns exec client bash -c "exec 3<>/dev/tcp/$VIP/9000 || exit 1
	while read -r line </run/to-echo; do
		echo \"\$line\" >&3
		read -r -t 5 reply <&3 || reply=lost
		echo \"\$reply\" >>/run/echo-replies
	done" &
echoer=$!
echo before >/run/to-echo
waitfor 5 grep -q before /run/echo-replies
waitfor 20 systemctl is-active --quiet kglb
if timeout 60 systemctl restart kglb && waitfor 30 systemctl is-active --quiet kglb; then
	pass "systemctl restart kglb"
else
	fail "restart" "$(systemctl is-active kglb)"
fi
sleep 3 # a full health round after the restart
echo after >/run/to-echo
if waitfor 8 grep -q '^after$' /run/echo-replies; then
	pass "a TCP connection through the VIP survives the restart"
else
	fail "connection across restart" "replies: $(tr '\n' ' ' </run/echo-replies 2>/dev/null)"
fi
w="$(metric kglb_ipvs_writes_total)"
if [ "$w" = 0 ]; then
	pass "kglb_ipvs_writes_total is 0 after the restart (state adopted, nothing rewritten)"
else
	fail "no IPVS writes after restart" "kglb_ipvs_writes_total=$w"
	show journalctl -u kglb --no-pager -n 15
fi
kill "$echoer" 2>/dev/null

# ================================================================ issue 10:
# a start is a reload, every *.hcl entry is read or refused, deletions wait
# for the files to settle. The client counts failed requests to the service
# "steady" (no health check, so a probe timing out on a loaded host cannot
# fail a request) all along each scenario; each asserts none failed and
# what kglb said.
waitfor 20 systemctl is-active --quiet kglb
echo "$steady" >/etc/kglb/steady.hcl
waitfor 30 steady_up || fail "service steady" "$(ipvsadm -Ln 2>&1 | tr '\n' ' ')"
sleep 2 # recorded in /var/lib/kglb/applied

# A broken edit, then a restart: the last applied config runs, STATUS says why.
client_start
good="$(cat /etc/kglb/web.hcl)"
printf 'service "web" {\n  vip  = "198.51.100.10\n  port = 80\n}\n' >/etc/kglb/web.hcl
restart_ok || fail "restart after a broken edit" "$(systemctl is-active kglb)"
st="$(unit_status)"
sleep 2
f="$(client_fails)"
if steady_up && [ "${f%% *}" = 0 ] && case "$st" in *"running the last applied config"*web.hcl:2:*) true ;; *) false ;; esac; then
	pass "restart after a broken edit runs the last applied config; $f requests failed; STATUS=$st"
else
	fail "restart after a broken edit" "active=$(systemctl is-active kglb) failed $f STATUS=$st"
	show journalctl -u kglb --no-pager -n 20
fi
echo "$good" >/etc/kglb/web.hcl.tmp && mv /etc/kglb/web.hcl.tmp /etc/kglb/web.hcl
if waitfor 20 metric_is kglb_config_running_last_applied 0 && waitfor 10 sh -c "! systemctl show -p StatusText --value kglb | grep -q 'last applied'"; then
	pass "fixing the file applies it: kglb_config_running_last_applied 0, STATUS=$(unit_status)"
else
	fail "fix after a restart on the last applied config" "running_last_applied=$(metric kglb_config_running_last_applied) STATUS=$(unit_status)"
fi

# The directory emptied, then a restart: the delete guard refuses it against
# the last applied config, as a running daemon would.
client_start
mkdir -p /root/kglb-saved && mv /etc/kglb/*.hcl /root/kglb-saved/
restart_ok || fail "restart after emptying /etc/kglb" "$(systemctl is-active kglb)"
st="$(unit_status)"
sleep 2
f="$(client_fails)"
if steady_up && [ "${f%% *}" = 0 ] && case "$st" in *"running the last applied config"*"would delete 3 of 3 services"*) true ;; *) false ;; esac; then
	pass "restart after emptying /etc/kglb keeps every service; $f requests failed; STATUS=$st"
else
	fail "restart after emptying /etc/kglb" "failed $f STATUS=$st"
	show journalctl -u kglb --no-pager -n 20
fi
mv /root/kglb-saved/*.hcl /etc/kglb/
waitfor 20 metric_is kglb_config_running_last_applied 0 || fail "restore /etc/kglb" "running_last_applied=$(metric kglb_config_running_last_applied)"

# A writer that truncates, pauses (below daemon.settle, 2s), then writes:
# nothing is deleted nor re-added. steady.hcl holds one service of three, so
# the delete guard allows its removal: only the settle time keeps it.
client_start
w0="$(adds_deletes)"
: >/etc/kglb/steady.hcl
sleep 1
echo "$steady" >/etc/kglb/steady.hcl
sleep 4 # past the settle time
w1="$(adds_deletes)"
f="$(client_fails)"
if [ "$w0" = "$w1" ] && steady_up && [ "${f%% *}" = 0 ]; then
	pass "truncate, pause 1s, write: no IPVS service or real added or deleted ($w0 -> $w1); $f requests failed"
else
	fail "truncate-pause-write" "IPVS adds and deletes $w0 -> $w1, steady up: $(steady_up && echo yes || echo no), failed $f"
	show journalctl -u kglb --no-pager -n 20
fi

# A dangling symlink where steady.hcl was: refused with the path, not read
# as a deleted service (needs config10's readable-entry rule).
client_start
mv /etc/kglb/steady.hcl /root/steady.hcl.saved
ln -s /etc/kglb/gone/steady.hcl /etc/kglb/steady.hcl
sleep 4 # past the settle time
f="$(client_fails)"
msg="$(journalctl -u kglb --no-pager -n 50 | grep -m1 'steady.hcl' || true)"
if steady_up && [ "${f%% *}" = 0 ] && [ -n "$msg" ]; then
	pass "a dangling symlink steady.hcl is refused, the service stays; $f requests failed; journal: ${msg#*]: }"
else
	fail "dangling symlink" "steady up: $(steady_up && echo yes || echo no), failed $f, journal: '$msg'"
	show journalctl -u kglb --no-pager -n 20
fi
rm -f /etc/kglb/steady.hcl && mv /root/steady.hcl.saved /etc/kglb/steady.hcl
waitfor 20 metric_is kglb_config_last_reload_successful 1

# systemctl restart with a mode-000 file: the daemon, without
# CAP_DAC_OVERRIDE, cannot read it; the last applied config runs.
client_start
chmod 000 /etc/kglb/steady.hcl
restart_ok || fail "restart with a mode-000 file" "$(systemctl is-active kglb)"
st="$(unit_status)"
sleep 2
f="$(client_fails)"
if steady_up && [ "${f%% *}" = 0 ] && case "$st" in *"running the last applied config"*steady.hcl*) true ;; *) false ;; esac; then
	pass "systemctl restart with a mode-000 steady.hcl runs the last applied config; $f requests failed; STATUS=$st"
else
	fail "restart with a mode-000 file" "active=$(systemctl is-active kglb) failed $f STATUS=$st"
	show journalctl -u kglb --no-pager -n 20
fi
chmod 644 /etc/kglb/steady.hcl
waitfor 20 metric_is kglb_config_running_last_applied 0 || fail "chmod 644 after a mode-000 restart" "running_last_applied=$(metric kglb_config_running_last_applied)"

# vip_mode is read at start: a restart that changes it moves every VIP from
# kglb's local route (proto 167) to an address on kglb0, and back, and
# removes what the old mode left, with the client counting failures (each
# VIP is down for a moment between the removal and the add).
kglb_route() { ip route show table local proto 167 | grep -q "^local $VIP "; }
vip_address() { ip -o addr show dev kglb0 | grep -q " $VIP/32 "; }
vip_moved() { # vip_moved MODE: the VIP is held the MODE way only
	case "$1" in
	address) vip_address && ! kglb_route ;;
	route) kglb_route && ! vip_address ;;
	esac
}
for mode in address route; do
	client_start
	since="$(date '+%Y-%m-%d %H:%M:%S')"
	sed -i '/^ *vip_mode *=/d' /etc/kglb/kglb.hcl
	[ "$mode" = address ] && sed -i 's/^\(\s*vip_interface.*\)$/\1\n  vip_mode = "address"/' /etc/kglb/kglb.hcl
	restart_ok || fail "restart into vip_mode $mode" "$(systemctl is-active kglb)"
	waitfor 30 vip_moved "$mode" && waitfor 30 steady_up
	sleep 1
	f="$(client_fails)"
	removed="$(journalctl -u kglb --no-pager --since "$since" | grep -m1 'removed vips kglb left behind' || true)"
	if vip_moved "$mode" && steady_up && [ -n "$removed" ]; then
		pass "a restart into vip_mode = \"$mode\" holds $VIP the $mode way only, and removed what the old mode left (${removed#*]: }); $f requests failed"
	else
		fail "restart into vip_mode $mode" "route $(kglb_route && echo yes || echo no), address $(vip_address && echo yes || echo no), removed '$removed', failed $f"
		show journalctl -u kglb --no-pager --since "$since"
	fi
done

# A file of 100,000 nested parentheses (in lines of 80, under the line
# length limit) dropped in while running: refused with its position, no
# crash (needs config10's nesting bound).
client_start
pid0="$(systemctl show -p MainPID --value kglb)"
{
	echo 'x = '
	head -c 100000 /dev/zero | tr '\0' '(' | fold -w 80
} >/etc/kglb/.deep.tmp && mv /etc/kglb/.deep.tmp /etc/kglb/deep.hcl
waitfor 20 metric_is kglb_config_last_reload_successful 0
sleep 1
f="$(client_fails)"
msg="$(journalctl -u kglb --no-pager -n 50 | grep -m1 'deep.hcl:[0-9]*:[0-9]*:' || true)"
if systemctl is-active --quiet kglb && [ "$(systemctl show -p MainPID --value kglb)" = "$pid0" ] && steady_up &&
	[ "${f%% *}" = 0 ] && [ -n "$msg" ]; then
	pass "a deep-nesting file dropped in is refused, the daemon keeps running (pid $pid0); $f requests failed; journal: ${msg#*]: }"
else
	fail "deep nesting" "active=$(systemctl is-active kglb) pid $pid0 -> $(systemctl show -p MainPID --value kglb), failed $f, journal: '$msg'"
	show journalctl -u kglb --no-pager -n 20
fi
rm -f /etc/kglb/deep.hcl
waitfor 20 metric_is kglb_config_last_reload_successful 1

# A reboot after a broken edit (a crash: no clean stop): the boot starts the
# last applied config from /var/lib/kglb/applied, and fixing the file
# applies it. debtest.sh boots the same disk again when it sees REBOOT.
printf 'service "web" {\n  vip  = "198.51.100.10\n  port = 80\n}\n' >/etc/kglb/web.hcl
touch "$rebooted"
sync
say "REBOOT"
reboot -ff
sleep 60
fi # issue 10: the first boot
if [ -e "$rebooted" ]; then # issue 10: the second boot
if waitfor 60 systemctl is-active --quiet kglb && waitfor 30 steady_up && waitfor 30 has_reals "10.0.1.2:80 10.0.2.2:80 10.0.3.2:80 " &&
	case "$(unit_status)" in *"running the last applied config"*web.hcl:2:*) true ;; *) false ;; esac; then
	pass "reboot after a broken edit starts the last applied config: STATUS=$(unit_status)"
else
	fail "reboot after a broken edit" "active=$(systemctl is-active kglb) reals '$(kernel_reals)' STATUS=$(unit_status)"
	show journalctl -b -u kglb --no-pager -n 20
fi
client_start
# The record is the daemon's (kglb:kglb 0640): the copy must be readable by
# the daemon, so give it the group /etc/kglb's files have.
install -m 0640 -g kglb /var/lib/kglb/applied/web.hcl /etc/kglb/web.hcl.tmp && mv /etc/kglb/web.hcl.tmp /etc/kglb/web.hcl
waitfor 20 metric_is kglb_config_running_last_applied 0
sleep 1
f="$(client_fails)"
if [ "$(metric kglb_config_running_last_applied)" = 0 ] && [ "${f%% *}" = 0 ]; then
	pass "after the reboot, fixing the file applies it; $f requests failed"
else
	fail "after the reboot" "running_last_applied=$(metric kglb_config_running_last_applied) failed $f"
fi
rm -f /etc/kglb/steady.hcl
fi
# ================================================================ end of issue 10

# ---------------------------------------------------------------- 6. who may change it
security_steps

# ---------------------------------------------------------------- BGP router (issue 14)
bgp_router_steps

# ---------------------------------------------------------------- 7. security
score="$(systemd-analyze security kglb.service 2>&1 | tail -n1 | sed 's/^.*Overall exposure level for kglb.service: //')"
say "SECURITY $score"
info "systemd-analyze security kglb.service: $score; the settings that cost points:"
systemd-analyze security --no-pager kglb.service 2>&1 | grep '✗' | sed 's/^/  | /' 

# ---------------------------------------------------------------- 8. stop
if systemctl stop kglb && [ "$(kernel_reals)" = "10.0.1.2:80 10.0.2.2:80 10.0.3.2:80 " ] && vip_routed; then
	pass "systemctl stop with on_stop = \"keep\" leaves the IPVS services and VIP in place"
else
	fail "stop with keep" "reals '$(kernel_reals)'"
fi
sed -i 's/on_stop *= *"keep"/on_stop   = "cleanup"/' /etc/kglb/kglb.hcl
systemctl start kglb || fail "start" "$(systemctl is-active kglb)"
if systemctl stop kglb && [ -z "$(ipvsadm -Sn)" ] && ! vip_routed; then
	pass "systemctl stop with on_stop = \"cleanup\" removes the IPVS services and the VIP"
else
	fail "stop with cleanup" "ipvsadm: $(ipvsadm -Sn | tr '\n' ';') vip routed: $(vip_routed && echo yes)"
fi

# ---------------------------------------------------------------- 9. remove, purge
if DEBIAN_FRONTEND=noninteractive apt-get remove -y kglb >/dev/null 2>&1 && [ ! -e /usr/bin/kglb ] &&
	[ -f /etc/kglb/kglb.hcl ] && [ -f /etc/kglb/web.hcl ]; then
	pass "apt-get remove kglb keeps /etc/kglb ($(ls /etc/kglb | tr '\n' ' '))"
else
	fail "remove" "$(ls -a /etc/kglb /usr/bin/kglb 2>&1 | tr '\n' ' ')"
fi
if DEBIAN_FRONTEND=noninteractive apt-get purge -y kglb >/dev/null 2>&1 && [ ! -e /etc/kglb ] && [ ! -e /var/lib/kglb ] &&
	! dpkg -l kglb 2>/dev/null | grep -q '^[ir]'; then
	pass "apt-get purge kglb removes /etc/kglb and /var/lib/kglb"
else
	fail "purge" "$(ls -d /etc/kglb /var/lib/kglb 2>&1 | tr '\n' ' ')"
fi

say "RESULT fails=$fails"
say "DONE"
# Power off at once, without the stop of every process that the unit's
# SuccessAction=poweroff-force makes: the disk is thrown away, and a clean
# shutdown under TCG only costs time.
sync
systemctl poweroff --force --force >/dev/null 2>&1 || echo o >/proc/sysrq-trigger
