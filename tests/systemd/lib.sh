# tests/systemd/lib.sh: what every real-systemd test shares. Source it after setting
#   PROG   the test's name for messages, e.g. tests/systemd/run.sh
#   UNITS  the units whose status and journal a failure prints, e.g. "skd.socket skd.service"
# It checks for root and box.sh, makes a box state directory that the EXIT trap stops and
# removes, and defines step/ok/fail/box/wait_state/journal_has/dropin/boot/boot_and_install.
# Environment: CARGO (default cargo), BOX (default tests/systemd/box.sh, the project's harness).

here=$(cd "$(dirname "$0")" && pwd)
ROOT=$(git -C "$here" rev-parse --show-toplevel 2>/dev/null || (cd "$here/../.." && pwd))
ROOT=$(readlink -f "$ROOT")
BOX=${BOX:-$ROOT/tests/systemd/box.sh}

if [ "$(id -u)" != 0 ]; then
  echo "$PROG: needs root (box.sh boots systemd in new namespaces)" >&2
  exit 77
fi
[ -x "$BOX" ] || { echo "$PROG: $BOX not found or not executable" >&2; exit 1; }
for c in curl make; do
  command -v "$c" >/dev/null || { echo "$PROG: $c not found" >&2; exit 1; }
done

export BOX_NET=1            # a private network namespace for the box: start and exec alike
STATE=$(mktemp -d "${TMPDIR:-/tmp}/keysock-box.XXXXXX")
booted=0
cleanup() {
  if [ $booted = 1 ]; then "$BOX" stop "$STATE" >/dev/null 2>&1 || echo "$PROG: box.sh stop failed" >&2; fi
  rm -rf "$STATE"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

passed=0
step() { STEP=$1; echo "### $1"; }
ok() { passed=$((passed + 1)); echo "ok: $STEP${1:+: $1}"; }
# Run CMD inside the box (time-limited: nothing in these tests takes more than a few seconds).
box() { timeout 60 "$BOX" exec "$STATE" "$@"; }
fail() {
  echo "FAIL: $STEP: $*" >&2
  if [ $booted = 1 ] && [ -s "$STATE/init.pid" ]; then
    local u j=()
    for u in $UNITS; do j+=(-u "$u"); done
    echo "--- systemctl status $UNITS" >&2
    # shellcheck disable=SC2086
    box systemctl --no-pager status $UNITS >&2 2>&1 || true
    echo "--- journalctl ${j[*]}" >&2
    box journalctl --no-pager -o short-precise "${j[@]}" >&2 2>&1 || true
  fi
  echo "$passed passed, 1 failed"
  exit 1
}
# wait_state UNIT STATE: up to 10 s for `systemctl is-active UNIT` to print STATE.
wait_state() {
  local s=
  for _ in $(seq 1 100); do
    s=$(box systemctl is-active "$1" || true)
    [ "$s" = "$2" ] && return 0
    sleep 0.1
  done
  fail "$1 is '$s', expected $2"
}
# journal_has UNIT TEXT: up to 5 s for TEXT to show up in UNIT's journal (left in $J).
journal_has() {
  for _ in $(seq 1 50); do
    J=$(box journalctl --no-pager -o cat -u "$1" 2>&1 || true)
    grep -qF -- "$2" <<<"$J" && return 0
    sleep 0.1
  done
  fail "no '$2' in journalctl -u $1"
}
# journal_count UNIT TEXT: how many lines of UNIT's journal hold TEXT now.
journal_count() {
  box journalctl --no-pager -o cat -u "$1" 2>/dev/null | grep -cF -- "$2" || true
}
# journal_more UNIT TEXT N: up to 5 s for more than N lines with TEXT, i.e. a new one since N
# was counted (an earlier restart may have logged the same line already).
journal_more() {
  local n
  for _ in $(seq 1 50); do
    n=$(journal_count "$1" "$2")
    [ "$n" -gt "$3" ] && return 0
    sleep 0.1
  done
  fail "no new '$2' in journalctl -u $1 ($n lines, as before)"
}
# syslog_step NAME WANT STDIN CMD...: the step syslog. CMD (the daemon NAME with --syslog, in
# the foreground) runs inside the box, outside any unit, with STDIN as its standard input,
# and gets SIGTERM after 2 s: it must exit 0 and write nothing to stderr, and the line WANT
# and a new stop line must reach the journal through /dev/log (_TRANSPORT=syslog, identifier
# NAME, facility daemon). Nothing else brings its lines there: its stderr is this script's.
syslog_step() {
  local name=$1 want=$2 in=$3 out j stops q
  shift 3
  step syslog
  q=(--no-pager -o cat -t "$name" _TRANSPORT=syslog SYSLOG_FACILITY=3)
  stops=$(box journalctl "${q[@]}" 2>/dev/null | grep -c 'stopped reason="\{0,1\}SIGTERM' || true)
  out=$(box sh -c 'in=$1; shift; timeout --preserve-status -s TERM 2 "$@" <"$in" 2>&1 >/dev/null; echo "exit=$?"' \
    sh "$in" "$@" 2>&1)
  [ "$(tail -n1 <<<"$out")" = exit=0 ] || fail "$name --syslog did not stop cleanly on SIGTERM: $out"
  [ "$out" = exit=0 ] || fail "$name --syslog wrote to stderr: $out"
  for _ in $(seq 1 50); do
    j=$(box journalctl "${q[@]}" 2>&1 || true)
    grep -qF -- "$want" <<<"$j" && [ "$(grep -c 'stopped reason="\{0,1\}SIGTERM' <<<"$j")" -gt "$stops" ] && break
    sleep 0.1
  done
  grep -qF -- "$want" <<<"$j" || fail "no '$want' through syslog with identifier $name: $j"
  [ "$(grep -c 'stopped reason="\{0,1\}SIGTERM' <<<"$j")" -gt "$stops" ] || fail "no new stop line through syslog: $j"
  ok "'$want' and the stop line through /dev/log, nothing on stderr"
}
# dropin UNIT TEXT: this test's drop-in for UNIT, then daemon-reload.
dropin() {
  box sh -c "mkdir -p /etc/systemd/system/$1.d && cat > /etc/systemd/system/$1.d/sdbox.conf && systemctl daemon-reload" <<<"$2" ||
    fail "writing the drop-in for $1"
}
# boot: the step boot (a box with the repository mounted at the same path).
boot() {
  step boot
  booted=1     # from here on the trap stops the box, even if start fails half-way
  local pid1 st
  pid1=$("$BOX" start "$STATE" "$ROOT" 2>&1 >"$STATE.pid1") && pid1=$(cat "$STATE.pid1") ||
    { rm -f "$STATE.pid1"; fail "box.sh start: $pid1"; }
  rm -f "$STATE.pid1"
  st=$(box systemctl is-system-running 2>&1 || true)
  case $st in running | degraded) ;; *) fail "box state is '$st'" ;; esac
  ok "PID 1 = host pid $pid1, $st"
}
# boot_and_install FILE...: the steps boot and install (`make install PROFILE=debug` inside),
# then checks that each FILE was installed.
boot_and_install() {
  boot
  local out f
  step install
  out=$(box make -C "$ROOT" --no-print-directory -s install PROFILE=debug 2>&1) || fail "make install PROFILE=debug: $out"
  for f in "$@"; do
    box test -e "$f" || fail "$f was not installed"
  done
  ok
}
# build: the debug binaries the box installs (a no-op when up to date).
build() {
  "${CARGO:-cargo}" build --bins --quiet --manifest-path "$ROOT/Cargo.toml" || fail "cargo build --bins"
}
