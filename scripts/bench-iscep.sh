#!/bin/bash
# make bench (iscepd): round trips per second with `iscep bench`, 1 and 16 concurrent
# connections, BENCH_SECONDS (default 5) each:
#   * ECHO through iscepd (with auth: a token in every packet, compared in constant time);
#   * SEND_CMD of a configured command running /bin/true (fork + exec + wait per request);
#   * the reference: the same ECHO frame through socat as a plain TCP echo server
#     ("TCP-LISTEN,fork PIPE", one process per connection), measured in the same run.
# Each iscepd figure is printed with its ratio to the reference at the same concurrency.
# Usage: scripts/bench-iscep.sh [BIN_DIR]   (default target/release)
set -euo pipefail
BIN=${1:-target/release}
cd "$(dirname "$0")/.."
DUR=${BENCH_SECONDS:-5}
PROG=bench-iscep

scripts/install-deps.sh bench
for b in iscepd iscep tokenctl; do
  [ -x "$BIN/$b" ] || { echo "$PROG: $BIN/$b not found (cargo build --release --bins)" >&2; exit 1; }
done

W=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }

cat > "$W/iscepd.toml" <<'EOF'
[commands.true]
exec = ["/bin/true"]
EOF
"$BIN/tokenctl" iscep add bench --tokens "$W/tokens.json" > "$W/token"

SP=$(port)
socat TCP-LISTEN:"$SP",bind=127.0.0.1,reuseaddr,fork PIPE & PIDS+=($!)
IP=$(port)
"$BIN/iscepd" --config "$W/iscepd.toml" --tokens "$W/tokens.json" --listen 127.0.0.1:"$IP" \
  --max-connections 256 2>"$W/iscepd.log" & PIDS+=($!)
wait_port "$SP" && wait_port "$IP" || { echo "$PROG: servers did not start" >&2; cat "$W/iscepd.log" >&2; exit 1; }

b() { "$BIN/iscep" --port "$1" --token-file "$W/token" bench --seconds "$DUR" --clients "$2" "${@:3}"; }

echo "iscepd benchmark: round trips/s, ${DUR} s per figure, $(nproc) cores; reference: socat TCP echo of the same ECHO frame"
printf '%-34s %10s %10s\n' "" "1 client" "16 clients"
declare -A REF
for c in 1 16; do REF[$c]=$(b "$SP" "$c"); done
printf '%-34s %10s %10s\n' "socat echo (reference)" "${REF[1]}" "${REF[16]}"
row() {
  local label=$1; shift
  local r1 r16
  r1=$(b "$IP" 1 "$@"); r16=$(b "$IP" 16 "$@")
  printf '%-34s %10s %10s   ratio %.2f / %.2f\n' "$label" "$r1" "$r16" \
    "$(awk -v a="$r1" -v b="${REF[1]}" 'BEGIN { print a / b }')" \
    "$(awk -v a="$r16" -v b="${REF[16]}" 'BEGIN { print a / b }')"
}
row "iscepd ECHO"
row "iscepd SEND_CMD /bin/true" true
if grep -q 'error' "$W/iscepd.log"; then
  echo "$PROG: iscepd logged errors:" >&2; grep 'error' "$W/iscepd.log" | head >&2; exit 1
fi
