#!/bin/bash
# make bench (skd): wrk against /valid with a current token, 2 threads, 64 connections, 10 s,
# as a ratio to nginx answering a fixed "YES" body in the same run; p99 latency; idle RSS;
# cold start (connect to first byte when skd has to be started by socket activation). Stores:
# memory, SQLite, PostgreSQL (a throw-away cluster); login throughput per store; the time from
# a revocation on one skd to NO on another sharing the PostgreSQL database.
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
# A throw-away PostgreSQL cluster (as the tests make one): initdb as nobody in a directory of
# its own, Unix socket only, default durability (fsync on), stopped on exit.
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
PGD=$(mktemp -d)
RUNAS=()
if [ "$(id -u)" = 0 ]; then chown nobody: "$PGD"; RUNAS=(runuser -u nobody --); fi
# The login benchmark's PAM service accepts every password: removed on exit.
PAMB=keysock-bench-$$
cleanup_pg() {
  "${RUNAS[@]}" "$PGBIN/pg_ctl" -D "$PGD/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$PGD"; rm -f "/etc/pam.d/$PAMB"
}
trap 'cleanup_pg; cleanup' EXIT
"${RUNAS[@]}" "$PGBIN/initdb" -D "$PGD/data" -U postgres -E UTF8 --locale=C.UTF-8 --auth=trust >/dev/null
"${RUNAS[@]}" "$PGBIN/pg_ctl" -D "$PGD/data" -l "$PGD/log" -o "-k $PGD -c listen_addresses=''" -w start >/dev/null
pgdb() { "${RUNAS[@]}" "$PGBIN/psql" -XAtq -h "$PGD" -U postgres -d postgres -c "$1" >/dev/null; }
pgdb "CREATE DATABASE valid"; pgdb "CREATE DATABASE login"; pgdb "CREATE DATABASE revoke"
pgurl() { echo "postgresql:///$1?host=$PGD&user=postgres&sslmode=disable"; }

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
bench_skd "skd /valid (postgresql)" --store "$(pgurl valid)"

# Logins: PAM that accepts at once (pam_permit), so the cost is skd's and its store's (one
# transaction per login); wrk -t2 -c16 (16 PAM conversations at most, the default).
printf 'auth required pam_permit.so\naccount required pam_permit.so\n' > "/etc/pam.d/$PAMB"
bench_login() {   # $1 = label, rest = store args
  local label=$1; shift
  local P; P=$(port)
  "$BIN/skd" --listen 127.0.0.1:$P -pam-app "$PAMB" --login-failures 100000000 "$@" 2>"$W/skd.log" & local pid=$!; PIDS+=($pid)
  wait_port "$P"
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$P/auth_token?realm=bench&user=u0&pwd=p")" = 200 ] || { echo "bench: login failed: $(cat "$W/skd.log")" >&2; exit 1; }
  wrk -t2 -c16 -d"${DUR}s" --latency "http://127.0.0.1:$P/auth_token?realm=bench&user=u1&pwd=p" > "$W/wrk.out"
  kill $pid; wait $pid 2>/dev/null || true
  awk -v l="$label" '/Requests\/sec/ {rps=$2} /Non-2xx/ {bad=$NF} /^ +99%/ {p99=$2} END {printf "%-22s %9.0f logins/s  p99 %8s  non-200 %s\n", l, rps, p99, bad+0}' "$W/wrk.out"
}
bench_login "login (memory)"
bench_login "login (sqlite)" -d "$W/lstore"
bench_login "login (postgresql)" --store "$(pgurl login)"

# Several hosts: a revocation through one skd, then /valid on another (its cache warm) until
# NO; 100 times, from the revocation's answer to the first NO.
PA=$(port); PB=$(port)
"$BIN/skd" --listen 127.0.0.1:$PA --allow-stored-token --store "$(pgurl revoke)" 2>/dev/null & PIDS+=($!)
"$BIN/skd" --listen 127.0.0.1:$PB --allow-stored-token --store "$(pgurl revoke)" 2>/dev/null & PIDS+=($!)
wait_port "$PA"; wait_port "$PB"
python3 - "$PA" "$PB" <<'PY'
import socket, statistics, sys, time
a, b = int(sys.argv[1]), int(sys.argv[2])
def get(port, path):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    return data.split(b"\r\n\r\n", 1)[1]
lat = []
for i in range(100):
    tok = "revbench%032d" % i
    get(a, f"/stored_token?realm=bench&user=u{i}&token={tok}")
    for _ in range(3):
        assert get(b, f"/valid?realm=bench&token={tok}").startswith(b"YES")
    assert get(a, f"/revoke?realm=bench&token={tok}") == b"OK\n"
    t0 = time.monotonic()
    while not get(b, f"/valid?realm=bench&token={tok}").startswith(b"NO"):
        assert time.monotonic() - t0 < 5, "revocation not seen within 5 s"
    lat.append((time.monotonic() - t0) * 1000)
print("revocation on one skd -> NO on another (postgresql): median %.1f ms, worst %.1f ms of %d"
      % (statistics.median(lat), max(lat), len(lat)))
PY

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
