#!/usr/bin/env bash
# deb.sh builds the kglb Debian package with dpkg-deb (no debhelper, no
# nfpm): out/kglb_<version>_amd64.deb from bin/kglb and packaging/deb/.
#
#   scripts/deb.sh            build bin/kglb (as `make build` does) and package it
#
# Environment:
#   VERSION      the version (default: git describe); a Debian version is
#                derived from it (a leading "v" dropped, "0.0.0+git<hash>"
#                when there is no tag), with the package revision "-1"
#   KGLB_BIN     package this binary instead of building bin/kglb
#   OUT          output directory (default out/)
# It prints the path of the package on its last line.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
src="$root/packaging/deb"
GO="${GO:-go}"
if ! command -v "$GO" >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then GO=/usr/local/go/bin/go; fi
die() { echo "deb: $*" >&2; exit 1; }
command -v dpkg-deb >/dev/null || die "dpkg-deb is missing (apt-get install dpkg)"

version="${VERSION:-$(cd "$root" && git describe --tags --always --dirty 2>/dev/null || echo dev)}"
epoch="${SOURCE_DATE_EPOCH:-$(cd "$root" && git log -1 --format=%ct 2>/dev/null || date +%s)}"

# debian_version maps a git-describe string onto a Debian upstream version.
debian_version() {
	local v="${1#v}"
	if [[ "$v" =~ ^[0-9]+(\.[0-9]+)+ ]]; then
		# 1.2.3-4-gabcdef(-dirty) -> 1.2.3+4.gabcdef(.dirty)
		v="$(echo "$v" | sed -E 's/-([0-9]+)-g/+\1.g/; s/-dirty$/.dirty/; s/-/./g')"
	else
		v="0.0.0+git$(date -u -d "@$epoch" +%Y%m%d).$(echo "$v" | tr -c 'A-Za-z0-9.\n' '.')"
	fi
	echo "$v" | sed -E 's/[^A-Za-z0-9.+~]/./g'
}
upstream="$(debian_version "$version")"
debver="$upstream-1"

bin="${KGLB_BIN:-}"
if [ -z "$bin" ]; then
	bin="$root/bin/kglb"
	(cd "$root" && CGO_ENABLED=0 "$GO" build -ldflags "-X main.version=$version" -o bin/kglb ./cmd/kglb) ||
		die "go build failed"
fi
[ -x "$bin" ] || die "no binary at $bin"

out="${OUT:-$root/out}"
mkdir -p "$out"
stage="$(mktemp -d "${TMPDIR:-/tmp}/kglb-deb.XXXXXX")"
trap 'rm -rf "$stage"' EXIT
pkg="$stage/kglb"

install -d -m 0755 "$pkg/DEBIAN" "$pkg/usr/bin" "$pkg/etc/kglb" "$pkg/usr/lib/systemd/system" \
	"$pkg/usr/lib/modules-load.d" "$pkg/usr/lib/sysctl.d" "$pkg/usr/lib/sysusers.d" "$pkg/usr/share/man/man8" \
	"$pkg/usr/share/bash-completion/completions" "$pkg/usr/share/doc/kglb/examples" \
	"$pkg/usr/share/lintian/overrides"
# Debian ships stripped binaries; bin/kglb keeps its symbols.
if command -v strip >/dev/null; then
	strip --strip-unneeded -o "$pkg/usr/bin/kglb" "$bin" || die "strip $bin failed"
	chmod 0755 "$pkg/usr/bin/kglb"
else
	(cd "$root" && CGO_ENABLED=0 "$GO" build -ldflags "-s -w -X main.version=$version" -o "$pkg/usr/bin/kglb" ./cmd/kglb) ||
		die "go build failed"
fi
install -m 0644 "$src/kglb.hcl" "$pkg/etc/kglb/kglb.hcl"
install -m 0644 "$src/kglb.service" "$pkg/usr/lib/systemd/system/kglb.service"
install -m 0644 "$src/modules-load.conf" "$pkg/usr/lib/modules-load.d/kglb.conf"
install -m 0644 "$src/sysctl.conf" "$pkg/usr/lib/sysctl.d/kglb.conf"
install -m 0644 "$src/sysusers.conf" "$pkg/usr/lib/sysusers.d/kglb.conf"
install -m 0644 "$src/kglb.bash-completion" "$pkg/usr/share/bash-completion/completions/kglb"
gzip -9n <"$src/kglb.8" >"$pkg/usr/share/man/man8/kglb.8.gz"
install -m 0644 "$src/copyright" "$pkg/usr/share/doc/kglb/copyright"
install -m 0644 "$src/lintian-overrides" "$pkg/usr/share/lintian/overrides/kglb"
for f in "$root"/examples/*.hcl; do install -m 0644 "$f" "$pkg/usr/share/doc/kglb/examples/"; done
if [ -f "$root/docs/config.md" ]; then gzip -9n <"$root/docs/config.md" >"$pkg/usr/share/doc/kglb/config.md.gz"; fi
if [ -f "$root/docs/cluster.md" ]; then gzip -9n <"$root/docs/cluster.md" >"$pkg/usr/share/doc/kglb/cluster.md.gz"; fi
if [ -f "$root/docs/plan.md" ]; then gzip -9n <"$root/docs/plan.md" >"$pkg/usr/share/doc/kglb/plan.md.gz"; fi
{
	echo "kglb ($debver) unstable; urgency=medium"
	echo
	echo "  * Package kglb $version."
	echo
	echo " -- kglb maintainers <kglb@example.org>  $(LC_ALL=C date -u -R -d "@$epoch")"
} | gzip -9n >"$pkg/usr/share/doc/kglb/changelog.Debian.gz"
chmod 0644 "$pkg"/usr/share/doc/kglb/*.gz "$pkg/usr/share/man/man8/kglb.8.gz"

install -m 0755 "$src/postinst" "$src/prerm" "$src/postrm" "$pkg/DEBIAN/"
echo /etc/kglb/kglb.hcl >"$pkg/DEBIAN/conffiles"
chmod 0644 "$pkg/DEBIAN/conffiles"
size="$(du -sk --exclude=DEBIAN "$pkg" | cut -f1)"
sed -e "s/@VERSION@/$debver/" -e "s/@SIZE@/$size/" "$src/control.in" >"$pkg/DEBIAN/control"
(cd "$pkg" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum) >"$pkg/DEBIAN/md5sums"
chmod 0644 "$pkg/DEBIAN/control" "$pkg/DEBIAN/md5sums"
find "$pkg" -exec touch -h -d "@$epoch" {} +

deb="$out/kglb_${debver}_amd64.deb"
SOURCE_DATE_EPOCH="$epoch" dpkg-deb --root-owner-group -Zxz --build "$pkg" "$deb" >/dev/null || die "dpkg-deb --build failed"
echo "$deb"
