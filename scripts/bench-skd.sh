#!/bin/bash
# make bench (skd): wrk against /valid with a current token, 2 threads, 64 connections, 10 s,
# as a ratio to nginx answering a fixed "YES" body in the same run; p99 latency; idle RSS;
# cold start (connect to first byte when skd has to be started by socket activation).
set -euo pipefail
BIN=${1:-target/release}
cd "$(dirname "$0")/.."
scripts/install-deps.sh bench
DUR=${BENCH_SECONDS:-10}
W=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0; sleep 0.05; done; return 1; }
rss_kib() { awk '/^VmRSS/ {print $2}' /proc/"$1"/status; }
# Private memory: RSS less the shared library pages other processes map too.
anon_kib() { awk '/^Anonymous/ {print $2}' /proc/"$1"/smaps_rollup; }
# wrk URL -> "rps p99_ms"
load() {
  wrk -t2 -c64 -d"${DUR}s" --latency "$1" > "$W/wrk.out"
  awk '/Requests\/sec/ {rps=$2} /^ +99%/ {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; p99=v} END {printf "%.0f %.2f\n", rps, p99}' "$W/wrk.out"
}

# Reference: nginx, 2 workers (one per core), a fixed YES body.
NP=$(port)
mkdir -p "$W/nginx"
cat > "$W/nginx/nginx.conf" <<EOT
worker_processes 2;
pid $W/nginx/nginx.pid;
error_log $W/nginx/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $W/nginx; proxy_temp_path $W/nginx; fastcgi_temp_path $W/nginx; uwsgi_temp_path $W/nginx; scgi_temp_path $W/nginx;
  server { listen 127.0.0.1:$NP; location / { default_type text/plain; return 200 "YES\n"; } }
}
EOT
nginx -c "$W/nginx/nginx.conf" -g 'daemon off;' & PIDS+=($!)
wait_port "$NP"
read -r N_RPS N_P99 < <(load "http://127.0.0.1:$NP/valid")

bench_skd() {   # $1 = label, rest = extra skd args
  local label=$1; shift
  local P; P=$(port)
  "$BIN/skd" --listen 127.0.0.1:$P --allow-stored-token --max-connections 1024 "$@" 2>"$W/skd.log" & local pid=$!; PIDS+=($pid)
  wait_port "$P"
  sleep 0.5
  local idle anon; idle=$(rss_kib $pid); anon=$(anon_kib $pid)
  curl -s "http://127.0.0.1:$P/stored_token?realm=bench&user=u&token=benchtoken0123456789abcdef0123456789abcd" >/dev/null
  [ "$(curl -s "http://127.0.0.1:$P/valid?realm=bench&token=benchtoken0123456789abcdef0123456789abcd" | head -n1)" = YES ] || { echo "bench: token not valid" >&2; exit 1; }
  read -r rps p99 < <(load "http://127.0.0.1:$P/valid?realm=bench&token=benchtoken0123456789abcdef0123456789abcd")
  local loaded; loaded=$(rss_kib $pid)
  kill $pid; wait $pid 2>/dev/null || true
  printf '%-22s %9s req/s  ratio %.2f  p99 %6s ms  idle RSS %4.1f MiB (anonymous %4.1f)  after load %4.1f MiB\n' \
    "$label" "$rps" "$(echo "$rps $N_RPS" | awk '{print $1/$2}')" "$p99" "$(echo "$idle" | awk '{print $1/1024}')" \
    "$(echo "$anon" | awk '{print $1/1024}')" "$(echo "$loaded" | awk '{print $1/1024}')"
}

echo "skd benchmark: wrk -t2 -c64 -d${DUR}s, $(nproc) cores"
printf '%-22s %9s req/s  ratio 1.00  p99 %6s ms\n' "nginx fixed YES" "$N_RPS" "$N_P99"
bench_skd "skd /valid (memory)"
bench_skd "skd /valid (sqlite)" -d "$W/store"

# Cost that does not grow with the store: the same request against stores of 1,000 and of
# 1,000,000 other tokens (made in one transaction by sqlite3 in skd's own schema).
big_store() {   # $1 = directory, $2 = tokens
  local P; P=$(port)
  "$BIN/skd" -d "$1" --listen 127.0.0.1:$P 2>/dev/null & local pid=$!
  wait_port "$P"; kill $pid; wait $pid 2>/dev/null || true
  local r; r=$(printf bench | sha1sum | cut -d' ' -f1)
  sqlite3 "$1/skd.sqlite" "BEGIN;
    WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $2)
    INSERT INTO kv (k, v, expires)
      SELECT 't:$r:' || printf('%040x', i), 'user' || i || char(10) || 'stored' || char(10), NULL FROM n;
    WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $2)
    INSERT INTO kv (k, v, expires) SELECT 'ut:$r:user' || i, printf('%040x', i), NULL FROM n;
    COMMIT;"
}
big_store "$W/small" 1000
bench_skd "skd /valid (1k tokens)" -d "$W/small"
t0=$(date +%s.%N); big_store "$W/big" 1000000; t1=$(date +%s.%N)
printf 'store of 1,000,000 tokens made in %.1f s\n' "$(echo "$t0 $t1" | awk '{print $2 - $1}')"
bench_skd "skd /valid (1M tokens)" -d "$W/big"
# Cold start on the big store.
CB=()
for _ in 1 2 3 4 5; do
  P=$(port)
  systemd-socket-activate -l 127.0.0.1:$P "$BIN/skd" -d "$W/big" 2>/dev/null & pid=$!
  for _ in $(seq 100); do ss -ltn | grep -q ":$P " && break; sleep 0.02; done
  CB+=("$(curl -s -o /dev/null -w '%{time_starttransfer}' "http://127.0.0.1:$P/valid?realm=bench&token=$(printf '%040x' 77)" | awk '{printf "%.1f", $1*1000}')")
  kill $pid 2>/dev/null; wait $pid 2>/dev/null || true
done
printf 'cold start on the 1M-token store: median %s ms of [%s]\n' \
  "$(printf '%s\n' "${CB[@]}" | sort -n | sed -n 3p)" "${CB[*]}"

# Cold start: systemd-socket-activate holds the socket; the first request execs skd.
CS=()
for _ in 1 2 3 4 5 6 7; do
  P=$(port)
  systemd-socket-activate -l 127.0.0.1:$P "$BIN/skd" 2>/dev/null & pid=$!
  for _ in $(seq 100); do ss -ltn | grep -q ":$P " && break; sleep 0.02; done
  CS+=("$(curl -s -o /dev/null -w '%{time_starttransfer}' "http://127.0.0.1:$P/version" | awk '{printf "%.1f", $1*1000}')")
  kill $pid 2>/dev/null; wait $pid 2>/dev/null || true
done
printf 'cold start (connect to first byte, skd exec on demand): median %s ms of [%s]\n' \
  "$(printf '%s\n' "${CS[@]}" | sort -n | sed -n 4p)" "${CS[*]}"
