#!/bin/bash
# tests/systemd/s5d.sh: s5d under a real systemd (DESIGN.md, testing layer 3).
#
# Boots a throw-away systemd box with tests/systemd/box.sh (the repository mounted at the
# same path inside), installs the binaries and units with `make install`, enables
# s5d.socket, and then, twice:
#   1. loads a secret with `s5d put` on /run/s5d.sock (which starts s5d.service), fetches it
#      with the original s5client (s5 0.0.3 from PyPI, in target/s5-venv) and with ours, and
#      sees the service exit after success-max = 2 (added to /etc/keysock/s5d.toml), with the
#      socket stopped too;
#   2. the same with the secret in a systemd credential (LoadCredential=s5-secret:...).
# The box has its own network namespace (BOX_NET=1): port 13500 clashes with nothing.
#
# Needs root (box.sh). Prints "### step" lines and ends with "N passed, 0 failed"; on the
# first failure it prints the step, the reason and s5d's journal, and exits 1. The box is
# always stopped.
#
# Environment: CARGO (default cargo), BOX (default tests/systemd/box.sh).
set -euo pipefail

PROG=tests/systemd/s5d.sh
UNITS="s5d.socket s5d.service"
. "$(dirname "$0")/lib.sh"
VENV=$ROOT/target/s5-venv

# fetch_both SECRET CLIENTFILE: the original s5client and ours each get SECRET.
fetch_both() {
  local got
  got=$(box "$VENV/bin/s5client" --client-file "$2" --host 127.0.0.1 2>&1) || fail "s5client: $got"
  [ "$got" = "$1" ] || fail "s5client printed '$got', expected '$1'"
  got=$(box /usr/local/bin/s5client --client-file "$2" --host 127.0.0.1 2>&1) || fail "our s5client: $got"
  [ "$got" = "$1" ] || fail "our s5client printed '$got', expected '$1'"
}

step build
build
if [ ! -e "$VENV/.keysock-ok" ]; then
  rm -rf "$VENV"
  python3 -m venv "$VENV" && "$VENV/bin/pip" install --quiet --disable-pip-version-check s5==0.0.3 ||
    fail "python3 -m venv + pip install s5==0.0.3 (PyPI reachable?)"
  echo "s5==0.0.3" > "$VENV/.keysock-ok"
fi
ok "binaries and $VENV"

boot_and_install /usr/local/bin/s5d /usr/local/bin/s5client /usr/local/lib/systemd/system/s5d.service \
  /usr/local/lib/systemd/system/s5d.socket /usr/local/lib/systemd/user/s5d.socket

step enable-socket
out=$(box sh -c 'systemctl daemon-reload && systemctl enable --now s5d.socket' 2>&1) || fail "systemctl enable --now s5d.socket: $out"
wait_state s5d.socket active
s=$(box systemctl is-active s5d.service || true)
[ "$s" = inactive ] || fail "s5d.service is '$s' before any connection, expected inactive"
perm=$(box stat -c '%A %U' /run/s5d.sock 2>&1) || fail "/run/s5d.sock: $perm"
[ "$perm" = "srw------- root" ] || fail "/run/s5d.sock is '$perm', expected 'srw------- root'"
ok "s5d.socket listening, s5d.service inactive, /run/s5d.sock $perm"

step put
# The option goes into the unit's configuration file, not into a copy of ExecStart=.
box sh -c 'echo "success-max = 2" >> /etc/keysock/s5d.toml' || fail "editing /etc/keysock/s5d.toml"
SECRET1='sdbox pût secret'
out=$(box sh -c 'printf "%s\n" "$1" | s5d put --client-file /tmp/cf1.json' sh "$SECRET1" 2>&1) || fail "s5d put: $out"
wait_state s5d.service active
mode=$(box stat -c %a /tmp/cf1.json)
[ "$mode" = 600 ] || fail "/tmp/cf1.json has mode $mode"
status=$(box systemctl show -p StatusText --value s5d.service)
[[ $status == "serving a secret on port 13500"* ]] || fail "StatusText=$status"
ok "$out; StatusText=$status"

step fetch-put
fetch_both "$SECRET1" /tmp/cf1.json
ok "both s5clients got the secret"

step exit-after-success-max
wait_state s5d.service inactive
wait_state s5d.socket inactive
result=$(box systemctl show -p Result --value s5d.service)
[ "$result" = success ] || fail "s5d.service Result=$result"
journal_has s5d.service 'success-max reached (2 secrets served)'
grep -q 'secret-loaded source=put(uid=0' <<<"$J" || fail "no put line in the journal"
! grep -qF "pût" <<<"$J" || fail "the secret is in the journal"
ok "service exited (Result=$result), socket stopped, journal says why"

step credential
box sh -c 'mkdir -p /etc/keysock && umask 077 && printf "%s\n" "sdbox credential secret" > /etc/keysock/s5-secret' ||
  fail "writing /etc/keysock/s5-secret"
# The shipped unit as shipped: LoadCredential= under DynamicUser=. A box that delivers no
# credentials (its / not shared, see box.sh) fails here, with the reason, rather than being
# worked around.
creds=$'LoadCredential=s5-secret:/etc/keysock/s5-secret'
box systemd-run -q -P --wait -p DynamicUser=yes -p LoadCredential=s5-secret:/etc/keysock/s5-secret \
    sh -c 'test -r "$CREDENTIALS_DIRECTORY/s5-secret"' >/dev/null 2>&1 ||
  fail "systemd delivers no credentials to a DynamicUser= unit in this box (is / rshared? see box.sh)"
dropin s5d.service $'[Service]\n'"$creds"
out=$(box systemctl start s5d.socket 2>&1) || fail "systemctl start s5d.socket: $out"
wait_state s5d.socket active
out=$(box s5d token --client-file /tmp/cf2.json 2>&1) || fail "s5d token: $out"
journal_has s5d.service 'secret-loaded source=credential'
ok "$out"

step fetch-credential
fetch_both "sdbox credential secret" /tmp/cf2.json
wait_state s5d.service inactive
wait_state s5d.socket inactive
ok "both s5clients got it; service and socket stopped"

# --syslog: s5d's lines through /dev/log, the secret typed on standard input (no terminal).
box sh -c 'printf "syslog secret\n" > /tmp/s5-syslog-in' || fail "writing /tmp/s5-syslog-in"
syslog_step s5d 'listening http=tcp:127.0.0.1:13599' /tmp/s5-syslog-in \
  /usr/local/bin/s5d --syslog --foreground --secret-from prompt --bind-address 127.0.0.1 \
  --port-min 13599 --port-max 13599 --client-file /tmp/s5-syslog.json --logfile /tmp/s5-syslog.log

step user-units
# The user units as shipped (make install put them in /usr/local/lib/systemd/user) under the
# user manager of an ordinary user: the socket enabled, the first `s5d put` starts s5d, the
# user's s5client gets the secret from ~/.s5client.json, and s5d.service stops the socket
# when it exits.
box sh -euc 'useradd -m -s /bin/sh s5user' 2>&1 || fail "useradd s5user"
uid=$(box id -u s5user)
out=$(box systemctl start "user@$uid.service" 2>&1) || fail "systemctl start user@$uid.service: $out"
# as_user CMD...: CMD as s5user in the box, talking to its user manager.
as_user() { box runuser -u s5user -- env XDG_RUNTIME_DIR="/run/user/$uid" "$@"; }
# wait_user_state UNIT STATE: as wait_state, for a unit of s5user's manager.
wait_user_state() {
  local s=
  for _ in $(seq 1 100); do
    s=$(as_user systemctl --user is-active "$1" || true)
    [ "$s" = "$2" ] && return 0
    sleep 0.1
  done
  fail "user unit $1 is '$s', expected $2"
}
out=$(as_user systemctl --user enable --now s5d.socket 2>&1) || fail "systemctl --user enable --now s5d.socket: $out"
wait_user_state s5d.socket active
s=$(as_user systemctl --user is-active s5d.service || true)
[ "$s" = inactive ] || fail "the user's s5d.service is '$s' before any connection, expected inactive"
perm=$(box stat -c '%A %U' "/run/user/$uid/s5d.sock" 2>&1) || fail "/run/user/$uid/s5d.sock: $perm"
[ "$perm" = "srw------- s5user" ] || fail "/run/user/$uid/s5d.sock is '$perm', expected 'srw------- s5user'"
out=$(as_user sh -c 'printf "%s\n" "user unit secret" | s5d put' 2>&1) || fail "s5d put as s5user: $out"
wait_user_state s5d.service active
mode=$(box stat -c '%a %U' /home/s5user/.s5client.json 2>&1) || fail "no ~/.s5client.json: $mode"
[ "$mode" = "600 s5user" ] || fail "~/.s5client.json is '$mode', expected '600 s5user'"
pid=$(as_user systemctl --user show -p MainPID --value s5d.service)
owner=$(box stat -c %U "/proc/$pid") || fail "no process $pid"
[ "$owner" = s5user ] || fail "the user's s5d runs as $owner"
got=$(as_user s5client --host 127.0.0.1 2>&1) || fail "s5client as s5user: $got"
[ "$got" = "user unit secret" ] || fail "s5client printed '$got'"
wait_user_state s5d.service inactive
wait_user_state s5d.socket inactive
ok "$out; s5d as s5user (pid $pid), the secret fetched, service and socket stopped"

echo "$passed passed, 0 failed"
