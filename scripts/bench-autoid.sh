#!/bin/bash
# bench-autoid.sh [BINDIR]: autoidd verifications per second, against references measured in
# the same run.
#
#   * v1 and v2 fetches per second with 1 and 16 concurrent clients (`autoid --repeat`, each
#     fetch a new connection; v2 two requests on it), autoidd on a loopback port;
#   * references: the same RSA-2048 OAEP decryption alone through `openssl pkeyutl` (one
#     process per decryption: the floor a shell-script server would have), and OpenSSL's own
#     RSA-2048 private-key operations per second (`openssl speed`, one process per core: the
#     ceiling, since every verification costs one such operation).
# Client and server share the machine's cores, so the 16-client rates include the clients'
# own work (v2: X25519 and OAEP encryption per fetch).
#
# BINDIR holds autoidd, autoid and build-key-pair (default target/release). N: env N
# (fetches per run, default 400).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$(readlink -f "${1:-$ROOT/target/release}")
N=${N:-400}
PROG=bench-autoid

die() { echo "$PROG: $*" >&2; exit 1; }
for b in autoidd autoid; do [ -x "$BIN/$b" ] || die "$BIN/$b not built (cargo build --release --bins)"; done
command -v openssl >/dev/null || die "openssl not found"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/bench-autoid.XXXXXX")
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

if [ -x "$BIN/build-key-pair" ]; then
  "$BIN/build-key-pair" --type rsa autoid "$tmp" </dev/null >/dev/null 2>&1 || die "build-key-pair failed"
else
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$tmp/autoid_key.pem" 2>/dev/null
  openssl pkey -in "$tmp/autoid_key.pem" -pubout -out "$tmp/autoid.pem"
fi
pub=$tmp/autoid.pem
"$BIN/autoidd" gen-entropy "$tmp/info2048.bin" 2>/dev/null || die "gen-entropy failed"
mkdir -m 700 "$tmp/secrets"
(umask 077; echo "bench-secret" > "$tmp/secrets/bench")

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$BIN/autoidd" --listen "127.0.0.1:$port" --key "$tmp/autoid_key.pem" --entropy "$tmp/info2048.bin" \
  --secrets "$tmp/secrets" --failures 0 --challenge-rate 0 --max-connections 1024 2>"$tmp/autoidd.log" &
pid=$!
for _ in $(seq 1 100); do
  out=$("$BIN/autoid" --url "http://127.0.0.1:$port" --entropy "$tmp/info2048.bin" --server-key "$pub" bench 2>/dev/null) && break
  sleep 0.05
done
[ "${out:-}" = bench-secret ] || die "autoidd did not serve: $(cat "$tmp/autoidd.log")"

# rate VERSION CLIENTS: fetches per second; sets R.
rate() {
  local flag=() line
  [ "$1" = v1 ] && flag=(--v1)
  line=$("$BIN/autoid" --url "http://127.0.0.1:$port" --entropy "$tmp/info2048.bin" --server-key "$pub" \
    "${flag[@]}" --repeat "$N" --concurrency "$2" bench 2>&1) || die "$1 x$2: $line"
  R=$(sed -E 's/.*: ([0-9.]+) per second$/\1/' <<<"$line")
}

# References.
openssl pkey -in "$tmp/autoid_key.pem" -out "$tmp/plain_key.pem"
printf '0123456789abcdef' >"$tmp/pass"
openssl pkeyutl -encrypt -pubin -inkey "$pub" -pkeyopt rsa_padding_mode:oaep -in "$tmp/pass" -out "$tmp/ct"
M=$(( N / 4 < 50 ? 50 : N / 4 ))
t0=$(date +%s%N)
for _ in $(seq 1 "$M"); do
  openssl pkeyutl -decrypt -inkey "$tmp/plain_key.pem" -pkeyopt rsa_padding_mode:oaep -in "$tmp/ct" >/dev/null
done
t1=$(date +%s%N)
PKEYUTL=$(awk -v a="$t0" -v b="$t1" -v n="$M" 'BEGIN { printf "%.1f", n / ((b - a) / 1e9) }')
cores=$(nproc)
# speed [OPTIONS]: RSA-2048 private-key operations (sign/s column) per second.
speed() {
  openssl speed -seconds 2 "$@" rsa2048 2>/dev/null |
    awk '/^rsa +2048 bits/ { print $(NF-1) } /^rsa2048/ { print $(NF-1) }' | tail -1
}
SPEED1=$(speed)
SPEED=$(speed -multi "$cores")
[ -n "$SPEED1" ] || SPEED1=0
[ -n "$SPEED" ] || SPEED=0

printf '%s: reference  openssl pkeyutl OAEP decrypt, 1 process each   %10s /s\n' "$PROG" "$PKEYUTL"
printf '%s: reference  openssl speed rsa2048 private ops, 1 core      %10s /s\n' "$PROG" "$SPEED1"
printf '%s: reference  openssl speed rsa2048 private ops, %s cores     %10s /s\n' "$PROG" "$cores" "$SPEED"
for v in v1 v2; do
  for c in 1 16; do
    rate "$v" "$c"
    # 1 client: one request at a time, so one core's RSA rate is the ceiling; 16: all cores'.
    ref=$SPEED
    [ "$c" = 1 ] && ref=$SPEED1
    printf '%s: autoidd %s %2s clients %34s /s   x%s pkeyutl   %s of openssl speed (%s)\n' "$PROG" "$v" "$c" "$R" \
      "$(awk -v a="$R" -v b="$PKEYUTL" 'BEGIN { printf "%.1f", a / b }')" \
      "$(awk -v a="$R" -v b="$ref" 'BEGIN { if (b > 0) printf "%.0f%%", 100 * a / b; else print "n/a" }')" \
      "$([ "$c" = 1 ] && echo "1 core" || echo "$cores cores")"
  done
done
grep -q 'panicked' "$tmp/autoidd.log" && die "autoidd panicked: $(cat "$tmp/autoidd.log")"
echo "$PROG: done (N=$N)"
