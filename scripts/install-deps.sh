#!/bin/sh
# Installs the Debian packages that building and testing need, when running as root and one
# is missing. As another user it only reports what is missing.
set -eu
PKGS="build-essential debhelper lintian pkg-config libssl-dev libsqlite3-dev libpam0g-dev pamtester mandoc curl python3 python3-venv python3-cryptography openssl sqlite3 openssh-client systemd util-linux iproute2 postgresql"
[ "${1:-}" = bench ] && PKGS="$PKGS wrk nginx-light socat openssh-server"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "install-deps: missing Debian packages:$missing (run as root to install them)" >&2
  exit 1
fi
echo "install-deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
