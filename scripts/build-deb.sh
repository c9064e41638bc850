#!/bin/sh
# build-deb.sh: the Debian package, as dpkg-buildpackage -b would build it, into target/deb/
# (keysock_VERSION_ARCH.deb), then lintian on it (no error or warning allowed).
#
# debian/rules is run directly (dpkg-buildpackage writes into the parent directory, which
# belongs to no one build): dpkg-checkbuilddeps, then "build" and "binary" with the
# environment dpkg-buildpackage sets (dpkg-buildflags, SOURCE_DATE_EPOCH). The release
# binaries are target/release's, shared with `make build`.
# Environment: LINTIAN=0 skips lintian.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
die() { echo "build-deb: $*" >&2; exit 1; }
for c in dpkg-checkbuilddeps dh lintian; do
  command -v "$c" >/dev/null || die "$c not found (Debian packages: dpkg-dev debhelper lintian)"
done
dpkg-checkbuilddeps || die "build dependencies missing (debian/control)"
eval "$(dpkg-buildflags --export=sh)"
SOURCE_DATE_EPOCH=$(dpkg-parsechangelog -STimestamp)
export SOURCE_DATE_EPOCH
version=$(dpkg-parsechangelog -SVersion)
arch=$(dpkg-architecture -qDEB_HOST_ARCH)
deb=target/deb/keysock_${version}_${arch}.deb
mkdir -p target/deb
rm -f "$deb"
debian/rules build
debian/rules binary DEB_DESTDIR=target/deb     # Rules-Requires-Root: no
[ -s "$deb" ] || die "$deb was not built"
debian/rules clean >/dev/null
if [ "${LINTIAN:-1}" != 0 ]; then
  # --fail-on warning: any error or warning fails the build; overrides need a reason
  # (debian/keysock.lintian-overrides).
  lintian --fail-on error,warning --display-level ">=warning" "$deb" || die "lintian: $deb (above)"
fi
echo "build-deb: $deb"
