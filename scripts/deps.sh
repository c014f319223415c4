#!/usr/bin/env bash
# deps.sh installs what `make test` needs on a fresh Debian machine: Debian
# packages through apt-get and Go tools through the Go module proxy. It is
# idempotent and quiet when everything is already there. With CI=true a
# missing piece is an error, never a skip.
set -euo pipefail

need_pkgs=()
have() { command -v "$1" >/dev/null 2>&1; }
have bird || need_pkgs+=(bird2)
[ -x /usr/lib/frr/bgpd ] || need_pkgs+=(frr)
have bgpctl || need_pkgs+=(openbgpd)
have ip || need_pkgs+=(iproute2)
have diff || need_pkgs+=(diffutils)
have patch || need_pkgs+=(patch) # cmd/kglb applies `kglb fmt -diff` output
have lintian || need_pkgs+=(lintian)

if [ ${#need_pkgs[@]} -gt 0 ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "deps: need root to install: ${need_pkgs[*]}" >&2
		exit 1
	fi
	echo "deps: apt-get install ${need_pkgs[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
	# bird2's, frr's and openbgpd's packages start system-wide daemons; the tests run
	# their own, in network namespaces.
	if have systemctl && systemctl is-active --quiet bird 2>/dev/null; then systemctl stop bird || true; fi
	if have systemctl && systemctl is-active --quiet frr 2>/dev/null; then systemctl stop frr || true; fi
	if have systemctl && systemctl is-active --quiet openbgpd 2>/dev/null; then systemctl stop openbgpd || true; fi
fi

gobin="$(go env GOPATH)/bin"
if [ ! -x "$gobin/staticcheck" ]; then
	echo "deps: go install staticcheck"
	go install honnef.co/go/tools/cmd/staticcheck@v0.8.2
fi

# The VM harness fetches its own kernel, qemu and busybox.
exec "$(dirname "$0")/../vmtest/run.sh" deps
