#!/bin/bash
# bench-remod.sh [BINDIR]: remod against OpenSSH, measured in the same run on loopback.
#
#   * login plus one command: `remo ... exec true` (a fresh process, login, one /cmd), against
#     a fresh `ssh HOST true` (key exchange, public-key authentication, one command);
#   * command round trips per second on one session: N `exec true` lines piped into one remo
#     (one login), against N `ssh -S CONTROL HOST true` over one multiplexed connection.
#
# Each result is printed with its ratio remod/OpenSSH (time ratio: below 1 = remod faster;
# rate ratio: above 1 = remod faster). OpenSSH is Debian's openssh-server, started on a free
# loopback port with a throw-away host key and an authorized key in a scratch directory; it
# is installed by scripts/install-deps.sh when missing (root only). BINDIR holds remod, remo, add-user and
# build-key-pair (default target/release). N: env N (default 200), M fresh logins (default 30).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$(readlink -f "${1:-$ROOT/target/release}")
N=${N:-200}
M=${M:-30}

die() { echo "bench-remod: $*" >&2; exit 1; }
for b in remod remo add-user build-key-pair; do
  [ -x "$BIN/$b" ] || die "$BIN/$b not built (cargo build --release --bins)"
done
"$ROOT/scripts/install-deps.sh" bench || die "missing packages (scripts/install-deps.sh bench)"
SSHD=$(command -v sshd || echo /usr/sbin/sshd)

tmp=$(mktemp -d "${TMPDIR:-/tmp}/bench-remod.XXXXXX")
chmod 0755 "$tmp"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  ssh -S "$tmp/ctl" -O exit x >/dev/null 2>&1 || true
  if [ "${made_user:-0}" = 1 ]; then userdel keysock-bench 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

# The user both sides run `true` as. As root, a throw-away account with /bin/sh as its
# shell: sshd runs commands through the login shell, and bash started by sshd reads
# ~/.bashrc (root's may be slow to run), which would make the reference look worse than it is.
me=$(id -un)
if [ "$(id -u)" = 0 ]; then
  me=keysock-bench
  if ! id "$me" >/dev/null 2>&1; then
    useradd -M -d "$tmp" -s /bin/sh -p '*' "$me" || die "useradd $me failed"
    made_user=1
  fi
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# ms A B COUNT: mean milliseconds per item between two date +%s%N stamps.
ms() { awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN { printf "%.2f", (b - a) / n / 1e6 }'; }

# --- remod ---
cd "$tmp"
echo "" | "$BIN/build-key-pair" remo_serv >/dev/null
echo "" | "$BIN/build-key-pair" bench >/dev/null
"$BIN/add-user" -b users_db bench bench.pem --unix-user "$me"
rport=$(free_port)
"$BIN/remod" --listen "127.0.0.1:$rport" -k remo_serv_key.pem -u SqliteUserService:users_db.sqlite \
  --login-failures 0 2>"$tmp/remod.log" &
pids+=($!)
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$rport") 2>/dev/null && break; sleep 0.05; done
REMO=("$BIN/remo" 127.0.0.1 "$rport" -s remo_serv.pem -u bench -k bench_key.pem)
"${REMO[@]}" exec true || die "remo exec true failed: $(cat "$tmp/remod.log")"

# --- OpenSSH ---
mkdir -p "$tmp/ssh" && chmod 0700 "$tmp/ssh"
ssh-keygen -q -t ed25519 -N "" -f "$tmp/ssh/host" </dev/null
ssh-keygen -q -t ed25519 -N "" -f "$tmp/ssh/id" </dev/null
cp "$tmp/ssh/id.pub" "$tmp/authorized_keys" && chmod 0644 "$tmp/authorized_keys"
sport=$(free_port)
mkdir -p /run/sshd 2>/dev/null || true
cat > "$tmp/ssh/sshd_config" <<CONF
Port $sport
ListenAddress 127.0.0.1
HostKey $tmp/ssh/host
AuthorizedKeysFile $tmp/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile $tmp/ssh/sshd.pid
CONF
"$SSHD" -D -e -f "$tmp/ssh/sshd_config" 2>"$tmp/ssh/sshd.log" &
pids+=($!)
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$sport") 2>/dev/null && break; sleep 0.05; done
SSH=(ssh -q -F /dev/null -p "$sport" -i "$tmp/ssh/id" -o IdentitiesOnly=yes -o BatchMode=yes
  -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR "$me@127.0.0.1")
"${SSH[@]}" true || die "ssh true failed: $(cat "$tmp/ssh/sshd.log")"

# 1. Fresh login + one command.
t0=$(date +%s%N)
for _ in $(seq 1 "$M"); do "${REMO[@]}" exec true || die "remo exec failed"; done
t1=$(date +%s%N)
a=$(ms "$t0" "$t1" "$M")
t0=$(date +%s%N)
for _ in $(seq 1 "$M"); do "${SSH[@]}" true || die "ssh failed"; done
t1=$(date +%s%N)
b=$(ms "$t0" "$t1" "$M")
printf 'bench-remod: %-44s %8s ms (M=%s)\n' "login + exec true, remo -> remod" "$a" "$M"
printf 'bench-remod: %-44s %8s ms (M=%s)\n' "fresh ssh HOST true" "$b" "$M"

# 2. Round trips on one session / one multiplexed connection.
script=$(printf 'exec true\n%.0s' $(seq 1 "$N"))
t0=$(date +%s%N)
printf '%s\n' "$script" | "${REMO[@]}" >/dev/null || die "remo loop failed"
t1=$(date +%s%N)
# Minus one login (measured above as login + one command).
rr=$(awk -v a="$t0" -v b="$t1" -v l="$a" -v n="$N" 'BEGIN { t = (b - a) / 1e6 - l; if (t <= 0) t = 0.001; printf "%.0f", (n - 1) / t * 1000 }')
"${SSH[@]}" -o ControlMaster=yes -o ControlPath="$tmp/ctl" -o ControlPersist=60 -fN
t0=$(date +%s%N)
for _ in $(seq 1 "$N"); do "${SSH[@]}" -o ControlPath="$tmp/ctl" true || die "ssh mux failed"; done
t1=$(date +%s%N)
sr=$(awk -v a="$t0" -v b="$t1" -v n="$N" 'BEGIN { printf "%.0f", n / ((b - a) / 1e9) }')
printf 'bench-remod: %-44s %8s /s (N=%s)\n' "exec true on one remo session" "$rr" "$N"
printf 'bench-remod: %-44s %8s /s (N=%s)\n' "ssh true over one multiplexed connection" "$sr" "$N"
awk -v a="$a" -v b="$b" -v r="$rr" -v s="$sr" 'BEGIN {
  printf "bench-remod: ratio login+cmd time remod/ssh      %.2f (below 1: remod faster)\n", a / b
  printf "bench-remod: ratio cmd rate remod/ssh-multiplex  %.2f (above 1: remod faster)\n", r / s
}'
