#!/bin/bash
# unit-gate.sh [UNIT...]: the gate for the systemd units in units/ (DESIGN.md, "Units").
#
#   * `systemd-analyze verify` must print nothing for every unit;
#   * every .service sets MemoryMax=;
#   * `systemd-analyze security --offline=true` must rate every .service at or below its
#     threshold: 2.0, or the value of a comment line in the unit such as
#         # keysock-exposure-max: 5.0
#   * every .service, units/user/*.service included, must have `LimitCORE=0` in [Service]
#     (THREATS.md: no core dumps of processes that hold secrets; the security score does
#     not look at it).
#
# UNIT is a file in units/ given by name or path (skd.service, units/skd.socket); the default
# is every units/*.service and units/*.socket.
#
# The units are checked as installed, not as written: `make install` puts the binaries, units
# and man pages into a scratch prefix (so ExecStart= is rewritten to the installed binary,
# which verify requires to exist, and Documentation=man: pages resolve through MANPATH).
# Nothing is written outside that scratch directory, which is removed on exit. Missing
# binaries are built first (`cargo build --bins`, or --release for PROFILE=release).
#
# Environment: CARGO (default cargo), PROFILE (default debug), MAKE (default make).
set -euo pipefail

PROG=unit-gate
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEFAULT_MAX=2.0
PROFILE=${PROFILE:-debug}

die() { echo "$PROG: $*" >&2; exit 1; }

command -v systemd-analyze >/dev/null || die "systemd-analyze not found (Debian package: systemd)"

cd "$ROOT"
units=()
if [ $# -eq 0 ]; then
  for u in units/*.service units/*.socket; do [ -e "$u" ] && units+=("$(basename "$u")"); done
  [ ${#units[@]} -gt 0 ] || die "no units in $ROOT/units"
else
  for a in "$@"; do
    b=$(basename "$a")
    [ -f "units/$b" ] || die "$a: no such unit in units/"
    units+=("$b")
  done
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/unit-gate.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# Build the binaries `make install` copies (the Makefile's DAEMONS and TOOLS) if one is
# missing. Only their existence matters here, so binaries that exist are not rebuilt: the
# gate judges the units, whatever state the Rust code is in.
bins=$(printf 'unit-gate-bins:\n\t@echo $(DAEMONS) $(TOOLS)\n' |
  "${MAKE:-make}" -C "$ROOT" --no-print-directory -s -f Makefile -f - unit-gate-bins 2>/dev/null || true)
need_build=0
[ -n "$bins" ] || need_build=1
for b in $bins; do [ -x "target/$PROFILE/$b" ] || need_build=1; done
if [ $need_build = 1 ]; then
  case $PROFILE in
    debug) build=(build --bins) ;;
    release) build=(build --release --bins) ;;
    *) build=(build --profile "$PROFILE" --bins) ;;
  esac
  echo "$PROG: cargo ${build[*]}"
  if ! "${CARGO:-cargo}" "${build[@]}" --quiet >"$tmp/build.log" 2>&1; then
    cat "$tmp/build.log" >&2
    die "cargo ${build[*]} failed"
  fi
fi

# Install into the scratch prefix. Every directory is given on the command line, so neither
# the environment nor a calling make (MAKEFLAGS) can point the install elsewhere.
if ! "${MAKE:-make}" -C "$ROOT" --no-print-directory -s install PROFILE="$PROFILE" DESTDIR= \
    PREFIX="$tmp/prefix" BINDIR="$tmp/prefix/bin" SBINDIR="$tmp/prefix/sbin" \
    UNITDIR="$tmp/system" USERUNITDIR="$tmp/user" MANDIR="$tmp/man" PAMDIR="$tmp/pam.d" >"$tmp/install.log" 2>&1; then
  cat "$tmp/install.log" >&2
  die "make install into the scratch prefix $tmp/prefix failed (output above)"
fi

# Look units up only in the scratch unit directory (verify adds it) and the distribution's
# vendor directory: drop-ins or older copies in /etc or /usr/local on this machine must not
# change the verdict.
vendor=/usr/lib/systemd/system
[ -d "$vendor" ] || vendor=/lib/systemd/system
export SYSTEMD_UNIT_PATH=$vendor
export SYSTEMD_PAGER= SYSTEMD_COLORS=0 LC_ALL=C.UTF-8
# Documentation=man:PAGE(N) is checked by running man(1): let it find the pages just
# installed (the trailing ':' keeps the system's manpath too). Without man-db, verify
# cannot check them, so check the installed files ourselves.
export MANPATH="$tmp/man:"
man_opt=()
if ! command -v man >/dev/null; then
  man_opt=(--man=no)
  echo "$PROG: man(1) not found (Debian package man-db): checking Documentation=man: pages by file"
fi

failed=0
fail() { echo "$PROG: FAIL $*" >&2; failed=$((failed + 1)); }

# LimitCORE=0 in the [Service] section of FILE (the last assignment wins, as for systemd).
no_core() {
  awk '/^\[/ { sec = $0 } sec == "[Service]" && /^LimitCORE=/ { v = $0 } END { exit v != "LimitCORE=0" }' "$1"
}

for u in "${units[@]}"; do
  inst=$tmp/system/$u
  if [ ! -f "$inst" ]; then fail "$u: make install did not install it"; continue; fi

  rc=0
  out=$(systemd-analyze verify "${man_opt[@]}" "$inst" 2>&1) || rc=$?
  if [ ${#man_opt[@]} -gt 0 ]; then
    for page in $(sed -n 's/^Documentation=//p' "$inst" | tr ' ' '\n' | sed -n 's/^man:\(.*\)(\([0-9a-z]*\))$/\1.\2/p'); do
      compgen -G "$tmp/man/man*/$page*" >/dev/null || compgen -G "/usr/share/man/man*/$page*" >/dev/null ||
        out+="${out:+$'\n'}$u: man page $page not installed"
    done
  fi
  if [ $rc -ne 0 ] || [ -n "$out" ]; then
    fail "$u: systemd-analyze verify (exit $rc):"
    printf '%s\n' "$out" | sed "s|$tmp/prefix|\$PREFIX|g; s|$tmp/system/||g; s/^/    /" >&2
    continue
  fi

  case $u in
  *.service)
    # A ceiling on memory: no flood of clients may take the host's memory.
    grep -q '^MemoryMax=' "units/$u" || { fail "$u: no MemoryMax="; continue; }
    if ! no_core "units/$u"; then fail "$u: no LimitCORE=0 in [Service] (a crash would dump secrets to disk)"; continue; fi
    max=$(sed -n 's/^#[[:space:]]*keysock-exposure-max:[[:space:]]*\([0-9][0-9]*\(\.[0-9]*\)\{0,1\}\)[[:space:]]*$/\1/p' "units/$u" | head -n1)
    if [ -z "$max" ] && grep -q 'keysock-exposure-max' "units/$u"; then
      fail "$u: malformed '# keysock-exposure-max: N' line"; continue
    fi
    max=${max:-$DEFAULT_MAX}
    rc=0
    sec=$(systemd-analyze security --offline=true --no-pager "$inst" 2>&1) || rc=$?
    score=$(printf '%s\n' "$sec" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9][0-9.]*\).*/\1/p' | tail -n1)
    if [ -z "$score" ]; then
      fail "$u: systemd-analyze security gave no score (exit $rc):"
      printf '%s\n' "$sec" | sed 's/^/    /' >&2
      continue
    fi
    if awk -v s="$score" -v m="$max" 'BEGIN { exit !(s + 0 > m + 0) }'; then
      fail "$u: exposure $score is above the threshold $max; the exposed settings:"
      printf '%s\n' "$sec" | grep '✗' | sed 's/[[:space:]]*$//; s/^/    /' >&2
      continue
    fi
    printf '%s: %-24s verify ok  exposure %s (max %s)\n' "$PROG" "$u" "$score" "$max"
    ;;
  *)
    printf '%s: %-24s verify ok\n' "$PROG" "$u"
    ;;
  esac
done

# The user units (units/user/): verified by a user manager's rules; their exposure is not
# rated (a user manager cannot apply most of the sandboxing options).
user_units=0
if [ $# -eq 0 ]; then
  mkdir -p "$tmp/xdg"
  for f in units/user/*; do
    [ -e "$f" ] || continue
    u=$(basename "$f"); user_units=$((user_units + 1))
    inst=$tmp/user/$u
    if [ ! -f "$inst" ]; then fail "user/$u: make install did not install it"; continue; fi
    rc=0
    out=$(XDG_RUNTIME_DIR=$tmp/xdg SYSTEMD_UNIT_PATH=/usr/lib/systemd/user systemd-analyze --user verify "${man_opt[@]}" "$inst" 2>&1) || rc=$?
    if [ $rc -ne 0 ] || [ -n "$out" ]; then
      fail "user/$u: systemd-analyze --user verify (exit $rc):"
      printf '%s\n' "$out" | sed "s|$tmp/prefix|\$PREFIX|g; s|$tmp/user/||g; s/^/    /" >&2
      continue
    fi
    case $u in *.service)
      grep -q '^MemoryMax=' "$f" || { fail "user/$u: no MemoryMax="; continue; }
      no_core "$f" || { fail "user/$u: no LimitCORE=0 in [Service] (a crash would dump secrets to disk)"; continue; }
      ;;
    esac
    printf '%s: %-24s verify ok\n' "$PROG" "user/$u"
  done
fi

if [ $failed -gt 0 ]; then
  die "$failed of $((${#units[@]} + user_units)) units failed"
fi
echo "$PROG: all $((${#units[@]} + user_units)) units passed"
