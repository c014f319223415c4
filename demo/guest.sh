#!/bin/bash
# demo/guest.sh runs inside the demo VM (a Debian system with the kglb .deb
# installed, as the oneshot unit kglb-guest.service) and tells what kglb does,
# step by step. Lines for the viewer start with "DEMO| "; a step that did not
# happen as told prints "DEMO-FAIL: ..."; "DEMO-DONE" ends the run.
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export SYSTEMD_PAGER='' SYSTEMD_COLORS=0
VIP=198.51.100.10
BIRDC=(birdc -s /run/bird-demo.ctl)

say() { echo "DEMO| $*"; }
out() { sed 's/^/DEMO|     /'; }
fails=0
bad() { echo "DEMO-FAIL: $*"; fails=$((fails + 1)); }
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
http_get() {
	timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2" || exit 1
		printf "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n" "$3" "$1" >&3
		sed "1,/^\r\{0,1\}$/d" <&3' _ "$@"
}
# spread N: N requests from the client to the VIP, counted per real.
spread() {
	ip netns exec client bash -c "$(declare -f http_get)
		for i in \$(seq $1); do http_get $VIP 80 / 2>/dev/null || echo '(no answer)'; done" |
		sort | uniq -c | awk '{n = $1; $1 = ""; sub(/^ /, ""); printf "%s: %d  ", $0, n}'
}
routed_at_router() { "${BIRDC[@]}" show route for "$VIP" 2>/dev/null | grep -q "$VIP/32"; }
weight_is() { [ "$(weight "$1")" = "$2" ]; }
weight() { ipvsadm -Ln -t "$VIP:80" | awk -v r="$1:80" '$2 == r {print $4}'; }

# ---------------------------------------------------------------- the lab
sysctl -qw net.ipv4.ip_forward=1
ip netns add router
ip netns add client
ip link add lbrt type veth peer name rt0 netns router
ip addr add 10.0.9.1/30 dev lbrt
ip link set lbrt up
ip -n router addr add 10.0.9.2/30 dev rt0
ip -n router link set rt0 up
ip -n router link set lo up
ip netns exec router sysctl -qw net.ipv4.ip_forward=1
ip -n router link add rtc type veth peer name c0 netns client
ip -n router addr add 10.0.8.1/24 dev rtc
ip -n router link set rtc up
ip -n client addr add 10.0.8.2/24 dev c0
ip -n client link set c0 up
ip -n client link set lo up
ip -n client route add default via 10.0.8.1
ip route add 10.0.8.0/24 via 10.0.9.2
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
done
start_real() { ip netns exec "real$1" busybox httpd -f -p 80 -h "/srv/real$1" & echo $! >"/run/real$1.pid"; }
stop_real() { kill "$(cat "/run/real$1.pid")"; }
for i in 1 2 3; do start_real "$i"; done

mkdir -p /etc/kglb-demo
cat >/etc/kglb-demo/bird.conf <<'BIRD'
router id 10.0.9.2;
protocol device {}
protocol kernel { ipv4 { import none; export all; }; }
protocol bgp kglb {
  local 10.0.9.2 as 65000;
  neighbor 10.0.9.1 as 65010;
  ipv4 { import all; export none; };
}
BIRD
ip netns exec router bird -c /etc/kglb-demo/bird.conf -s /run/bird-demo.ctl

say "The lab inside the VM:"
say "  client 10.0.8.2 --- router (BIRD, AS 65000) --- this machine: kglb (AS 65010) --- real1 10.0.1.2"
say "                                                                                 --- real2 10.0.2.2"
say "                                                                                 --- real3 10.0.3.2"
say "  Each real runs a small web server that answers with its own name."
say "  The client reaches the service address (VIP) $VIP only through the router,"
say "  and the router knows that address only while kglb announces it over BGP."
say ""

# ---------------------------------------------------------------- 1
say "1. kglb was installed from its .deb and started by systemd; it runs no service yet:"
systemctl is-active kglb | sed 's/^/kglb.service is /' | out
say ""
say "   We add two files to /etc/kglb: a BGP session with the router, and the service."
cat >/etc/kglb/bgp.hcl <<'HCL'
bgp {
  asn       = 65010
  router_id = "10.0.9.1"

  neighbor "router" {
    address       = "10.0.9.2"
    asn           = 65000
    hold_time     = "9s"
    connect_retry = "1s"
  }
}
HCL
write_web() {
	cat >/etc/kglb/.web.hcl.tmp <<HCL
service "web" {
  vip           = "$VIP"
  port          = 80
  forward       = "nat"
  when_all_down = "withdraw"

  real "10.0.1.2" { weight = $1 }
  real "10.0.2.2" {}
  real "10.0.3.2" {}

  check "http" {
    interval = "500ms"
    timeout  = "300ms"
    rise     = 2
    fall     = 2
  }

  announce {
    min_healthy = 1
  }
}
HCL
	mv /etc/kglb/.web.hcl.tmp /etc/kglb/web.hcl
}
write_web 100
cat /etc/kglb/web.hcl | out
say "   kglb validate checks them; the BGP block is read at start, so: systemctl restart kglb"
kglb validate 2>&1 | out
timeout 60 systemctl restart kglb || bad "systemctl restart kglb failed"
if waitfor 60 routed_at_router; then
	say "   The reals passed their health checks and kglb announced the VIP. The router's view (birdc show route):"
	"${BIRDC[@]}" show route for "$VIP" | grep -v '^BIRD' | out
else
	bad "the router never learned $VIP"
	"${BIRDC[@]}" show protocols all kglb | out
fi
say "   kglb status:"
kglb status | out
say ""

# ---------------------------------------------------------------- 2
say "2. The client sends 30 requests to http://$VIP/. Replies per real:"
got="$(spread 30)"
say "     $got"
case "$got" in *real1*real2*real3*) say "   All three reals take their share." ;; *) bad "traffic did not reach all three reals: $got" ;; esac
say ""

# ---------------------------------------------------------------- 3
say "3. We stop real2's web server. Its health check fails twice and kglb sets its weight to 0:"
stop_real 2
if waitfor 20 weight_is 10.0.2.2 0; then
	ipvsadm -Ln -t "$VIP:80" | out
else
	bad "real2 was not taken out of rotation (weight $(weight 10.0.2.2))"
fi
got="$(spread 30)"
say "   30 more requests: $got"
case "$got" in *real2*) bad "real2 still got traffic: $got" ;; *real1*real3*) say "   real2 gets nothing; the others carry the load." ;; *) bad "unexpected replies: $got" ;; esac
say ""

# ---------------------------------------------------------------- 4
say "4. We stop real1 and real3 too: no real is healthy, and this service says when_all_down = \"withdraw\"."
stop_real 1
stop_real 3
not_routed() { ! routed_at_router; }
if waitfor 30 not_routed; then
	say "   kglb withdrew the route. The router no longer knows the VIP (birdc show route for $VIP):"
	r="$("${BIRDC[@]}" show route for "$VIP" 2>&1 | grep -v '^BIRD' | grep .)"
	echo "${r:-(no route)}" | out
	got="$(spread 3)"
	say "   The client's requests now fail fast at the router: $got"
else
	bad "the VIP was not withdrawn at the router"
fi
say ""

# ---------------------------------------------------------------- 5
say "5. The reals come back; after two good checks each, kglb announces the VIP again:"
for i in 1 2 3; do start_real "$i"; done
if waitfor 30 routed_at_router; then
	"${BIRDC[@]}" show route for "$VIP" | grep -v '^BIRD' | out
else
	bad "the VIP was not announced again"
fi
waitfor 20 weight_is 10.0.2.2 100
say ""

# ---------------------------------------------------------------- 6
say "6. A live edit: in /etc/kglb/web.hcl we give real1 weight 300 (three times the others)."
say "   No restart, no reload command: kglb sees the file change and applies only the difference."
write_web 300
if waitfor 20 weight_is 10.0.1.2 300; then
	ipvsadm -Ln -t "$VIP:80" | out
	got="$(spread 50)"
	say "   50 requests: $got"
	n1="$(echo "$got" | grep -o 'real1: [0-9]*' | awk '{print $2}')"
	if [ "${n1:-0}" -ge 20 ]; then say "   real1 now takes about three fifths of the requests."; else bad "real1 did not get its larger share: $got"; fi
else
	bad "the edit was not applied (real1 weight $(weight 10.0.1.2))"
fi
say ""
if [ "$fails" = 0 ]; then
	say "That is kglb: health-checked reals in IPVS, the VIP announced over BGP only while it can be"
	say "served, and configuration edits applied live."
fi
echo "DEMO-DONE fails=$fails"
# Power off at once, without the stop of every process that the unit's
# SuccessAction=poweroff-force makes: the disk is thrown away, and a clean
# shutdown under TCG only costs time.
sync
systemctl poweroff --force --force >/dev/null 2>&1 || echo o >/proc/sysrq-trigger
