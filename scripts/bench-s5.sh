#!/bin/bash
# bench-s5.sh [BINDIR]: s5d against the original s5server (s5 0.0.3), in the same run.
#
#   * connect-to-secret time, one client process per fetch (start, connect, POST, decrypt,
#     print), mean over N fetches, for: our s5client -> s5d, the original s5client -> s5d,
#     the original s5client -> s5server;
#   * idle RSS of s5d and of s5server (VmRSS after serving N answers).
#
# BINDIR holds s5d and s5client (default target/release). The original comes from the virtual
# environment target/s5-venv (made with pip from PyPI if missing). N: env N (default 50).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$(readlink -f "${1:-$ROOT/target/release}")
N=${N:-50}
VENV=$ROOT/target/s5-venv

die() { echo "bench-s5: $*" >&2; exit 1; }
[ -x "$BIN/s5d" ] && [ -x "$BIN/s5client" ] || die "$BIN/s5d and $BIN/s5client not built (cargo build --release --bins)"
if [ ! -e "$VENV/.keysock-ok" ]; then
  rm -rf "$VENV"
  python3 -m venv "$VENV" && "$VENV/bin/pip" install --quiet --disable-pip-version-check s5==0.0.3 ||
    die "python3 -m venv + pip install s5==0.0.3 failed"
  echo "s5==0.0.3" > "$VENV/.keysock-ok"
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/bench-s5.XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start NAME PROGRAM: a server on a fresh port, unlimited answers, secret on stdin.
start() {
  local name=$1 prog=$2 port
  port=$(free_port)
  printf 'bench-secret-%s\n' "$name" | PYTHONUNBUFFERED=1 setsid "$prog" --foreground --bind-address 127.0.0.1 \
    --port-min "$port" --port-max "$port" --client-file "$tmp/$name.json" --logfile "$tmp/$name.log" \
    --success-max 0 >"$tmp/$name.out" 2>"$tmp/$name.err" &
  pids+=($!)
  eval "${name}_pid=$!"
  for _ in $(seq 1 200); do [ -s "$tmp/$name.json" ] && return 0; sleep 0.05; done
  die "$name did not start: $(cat "$tmp/$name.err")"
}

# run LABEL CLIENT SERVER: mean ms per fetch over N fetches; sets MS.
run() {
  local label=$1 client=$2 server=$3 t0 t1 out
  out=$("$client" --client-file "$tmp/$server.json" --host 127.0.0.1) || die "$label: warm-up fetch failed"
  [ "$out" = "bench-secret-$server" ] || die "$label: got '$out'"
  t0=$(date +%s%N)
  for _ in $(seq 1 "$N"); do
    "$client" --client-file "$tmp/$server.json" --host 127.0.0.1 >/dev/null || die "$label: fetch failed"
  done
  t1=$(date +%s%N)
  MS=$(awk -v a="$t0" -v b="$t1" -v n="$N" 'BEGIN { printf "%.2f", (b - a) / n / 1e6 }')
  printf 'bench-s5: %-28s %8s ms/fetch (N=%s)\n' "$label" "$MS" "$N"
}

rss() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

start s5d "$BIN/s5d"
start orig "$VENV/bin/s5server"

run "ours -> s5d" "$BIN/s5client" s5d; a=$MS
run "s5client -> s5d" "$VENV/bin/s5client" s5d; b=$MS
run "s5client -> s5server" "$VENV/bin/s5client" orig; c=$MS

r1=$(rss "$s5d_pid"); r2=$(rss "$orig_pid")
printf 'bench-s5: %-28s %8s KiB\n' "idle RSS s5d" "$r1" "idle RSS s5server" "$r2"
awk -v a="$a" -v b="$b" -v c="$c" -v r1="$r1" -v r2="$r2" 'BEGIN {
  printf "bench-s5: ratio s5client->s5d / s5client->s5server (server cost)   %.2f\n", b / c
  printf "bench-s5: ratio ours->s5d / s5client->s5server (whole path)        %.2f\n", a / c
  printf "bench-s5: ratio RSS s5d / s5server                                 %.2f\n", r1 / r2
}'
