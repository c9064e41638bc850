#!/bin/bash
# tests/systemd/run.sh: skd under a real systemd (DESIGN.md, testing layer 3).
#
# Boots a throw-away systemd box with tests/systemd/box.sh (the repository mounted at
# the same path inside), installs skd there with `make install`, enables skd.socket and
# drives skd.service through socket activation: first connection, READY and STATUS=,
# journal, PAM logins through the shipped /etc/pam.d/skd (pam_unix), /stored_token on the Unix socket and its
# refusal on TCP, tokens surviving a restart, and a clean stop. The box has its own network
# namespace (BOX_NET=1), so the shipped ListenStream=127.0.0.1:4431 cannot clash with
# anything on the host; every request is made from inside the box.
#
# Needs root (box.sh). Builds the binaries first (`cargo build --bins`, a no-op when up to
# date). Prints "### step" lines and ends with "N passed, 0 failed"; on the first failure it
# prints the step, the reason and skd's journal, and exits 1. The box is always stopped.
#
# Environment: CARGO (default cargo), BOX (default tests/systemd/box.sh).
set -euo pipefail

PROG=tests/systemd/run.sh
UNITS="skd.socket skd-unix.socket skd.service"
. "$(dirname "$0")/lib.sh"

# http URL [CURL-ARGS...]: one request from inside the box; sets CODE, BODY (trailing newlines
# dropped) and LINE1.
http() {
  local url=$1 out rc=0; shift
  out=$(box curl -sS -m 5 -w '\n%{http_code}' "$@" "$url" 2>&1) || rc=$?
  [ $rc = 0 ] || fail "curl $* $url: exit $rc: $out"
  CODE=${out##*$'\n'}
  BODY=${out%$'\n'*}
  while [[ $BODY == *$'\n' ]]; do BODY=${BODY%$'\n'}; done
  LINE1=${BODY%%$'\n'*}
}
expect_code() { [ "$CODE" = "$1" ] || fail "expected HTTP $1, got $CODE; body: $BODY"; }
is_token() { [[ $1 =~ ^[0-9a-f]{40}$ ]]; }

TCP=http://127.0.0.1:4431
SOCK=/run/skd/skd.sock
REALM=rcloud               # every realm logs in through the shipped /etc/pam.d/skd
UREALM=rcloud-web          # a second realm: a second token for the same user

step build
build
ok

boot_and_install /usr/local/sbin/skd /usr/local/lib/systemd/system/skd.service \
  /usr/local/lib/systemd/system/skd.socket /usr/local/lib/systemd/system/skd-unix.socket \
  /etc/pam.d/skd
exec_start=$(box systemctl cat skd.service 2>/dev/null | grep '^ExecStart=' || true)
[[ $exec_start == ExecStart=/usr/local/sbin/skd\ * ]] || fail "unexpected $exec_start"

step pam-setup
# Two Unix accounts: the shipped PAM service (common-auth, pam_unix) checks them against
# /etc/shadow, which the sandboxed skd reads through SupplementaryGroups=shadow.
box sh -euc '
  useradd -M -s /usr/sbin/nologin sksuser
  echo "sksuser:Secr3t!" | chpasswd
  useradd -M -s /usr/sbin/nologin alice
  echo "alice:wonderland" | chpasswd
' 2>&1 || fail "Unix accounts in the box"
grep -q '@include common-auth' <<<"$(box cat /etc/pam.d/skd)" || fail "/etc/pam.d/skd is not the shipped stack"
ok "accounts sksuser and alice; /etc/pam.d/skd installed"

step enable-socket
out=$(box sh -c 'systemctl daemon-reload && systemctl enable --now skd.socket' 2>&1) || fail "systemctl enable --now skd.socket: $out"
for u in skd.socket skd-unix.socket; do
  s=$(box systemctl is-active "$u" || true)
  [ "$s" = active ] || fail "$u is '$s', expected active"
  s=$(box systemctl is-enabled "$u" || true)
  [ "$s" = enabled ] || fail "$u is '$s', expected enabled (skd.socket has Also=skd-unix.socket)"
done
s=$(box systemctl is-active skd.service || true)
[ "$s" = inactive ] || fail "skd.service is '$s' before any connection, expected inactive"
perm=$(box stat -c '%A %U:%G' "$SOCK" 2>&1) || fail "$SOCK: $perm"
[ "$perm" = "srw-rw---- root:root" ] || fail "$SOCK is '$perm', expected 'srw-rw---- root:root'"
ok "both sockets listening, skd.service inactive, $SOCK $perm"

step first-connection
http "$TCP/version"
expect_code 200
[ "$BODY" = 1.5 ] || fail "/version answered '$BODY', expected 1.5"
s=$(box systemctl is-active skd.service || true)
[ "$s" = active ] || fail "skd.service is '$s' after the first connection, expected active"
ok "/version = 1.5, skd.service active"

step ready-status
props=$(box systemctl show -p Type -p ActiveState -p SubState -p StatusText skd.service)
grep -qx 'Type=notify' <<<"$props" || fail "not Type=notify: $props"
grep -qx 'SubState=running' <<<"$props" || fail "READY=1 not reached: $props"
status=$(sed -n 's/^StatusText=//p' <<<"$props")
[ -n "$status" ] || fail "StatusText is empty: $props"
ok "StatusText=$status"

step journal
# journald may take a moment to read skd's stream.
for _ in $(seq 1 50); do
  j=$(box journalctl --no-pager -o cat -u skd.service 2>&1 || true)
  grep -q 'starting version=' <<<"$j" && grep -q '^listening ' <<<"$j" && break
  sleep 0.1
done
grep -q 'starting version=' <<<"$j" || fail "no 'starting version=' line in journalctl -u skd"
listening=$(grep -m1 '^listening ' <<<"$j") || fail "no 'listening' line in journalctl -u skd"
# FileDescriptorName= of each socket unit reaches skd as the listener's name.
grep -q 'http=tcp:127.0.0.1:4431' <<<"$listening" || fail "TCP listener not named http: $listening"
grep -q "unix=unix:$SOCK" <<<"$listening" || fail "Unix listener not named unix: $listening"
ok "$(grep -m1 'starting version=' <<<"$j"); $listening"

step pam-login
http "$TCP/auth_token?realm=$REALM&user=alice&pwd=wonderland"
expect_code 200
T_ALICE=$LINE1
is_token "$T_ALICE" || fail "/auth_token answered '$BODY', expected a 40-hex token first"
[[ $BODY == "$T_ALICE"$'\nalice\nauth/pam\nuid='* ]] || fail "unexpected /auth_token body: $BODY"
http "$TCP/auth_token?realm=$REALM&user=alice&pwd=WRONG"
expect_code 403
# A realm named after another PAM service (chsh's stack starts with pam_rootok) still
# logs in through skd's own service.
http "$TCP/auth_token?realm=chsh&user=root&pwd=anything"
expect_code 403
journal_has skd.service 'result=failed reason="Authentication failure"'
ok "alice via /etc/pam.d/skd: token ${T_ALICE:0:8}..., wrong password 403, realm=chsh 403"

step pam-unix-login
http "$TCP/auth_token?realm=$UREALM&user=sksuser&pwd=Secr3t!"
expect_code 200
T_UNIX=$LINE1
is_token "$T_UNIX" || fail "/auth_token answered '$BODY', expected a 40-hex token first"
grep -q '^uid=[0-9]' <<<"$BODY" || fail "no uid= line for a real account: $BODY"
ok "sksuser in a second realm (/etc/shadow through SupplementaryGroups=shadow): token ${T_UNIX:0:8}..."

step stored-token-unix
T_STORED=$(od -An -tx1 -N20 /dev/urandom | tr -d ' \n')
http "http://localhost/stored_token?realm=$REALM&user=carol&token=$T_STORED" --unix-socket "$SOCK"
expect_code 200
[ "$BODY" = "$T_STORED"$'\ncarol\nstored' ] || fail "unexpected /stored_token body: $BODY"
ok "carol's token ${T_STORED:0:8}... stored through $SOCK"

step restart
pid_before=$(box systemctl show -p MainPID --value skd.service)
out=$(box systemctl restart skd.service 2>&1) || fail "systemctl restart skd.service: $out"
pid_after=$(box systemctl show -p MainPID --value skd.service)
[ "$pid_after" != 0 ] && [ "$pid_after" != "$pid_before" ] || fail "MainPID $pid_before -> $pid_after: not restarted"
for t in "$REALM:$T_ALICE:alice" "$UREALM:$T_UNIX:sksuser" "$REALM:$T_STORED:carol"; do
  IFS=: read -r realm tok user <<<"$t"
  http "$TCP/valid?realm=$realm&token=$tok"
  expect_code 200
  [ "$LINE1" = YES ] || fail "$user's token ${tok:0:8}... no longer valid after the restart: $BODY"
  sed -n 2p <<<"$BODY" | grep -qx "$user" || fail "$user's token answers for someone else: $BODY"
done
ok "MainPID $pid_before -> $pid_after; all 3 tokens answer YES"

step stored-token-tcp-refused
http "$TCP/stored_token?realm=$REALM&user=mallory&token=0123456789abcdef0123456789abcdef01234567"
expect_code 403
http "$TCP/valid?realm=$REALM&token=0123456789abcdef0123456789abcdef01234567"
[ "$LINE1" = NO ] || fail "the refused token was stored anyway: $BODY"
ok "/stored_token over TCP: 403, nothing stored"

step stop
stops=$(journal_count skd.service 'stopped reason=SIGTERM')
out=$(box systemctl stop skd.socket skd.service 2>&1) || fail "systemctl stop skd.socket skd.service: $out"
for u in skd.service skd.socket skd-unix.socket; do
  s=$(box systemctl is-active "$u" || true)
  [ "$s" = inactive ] || fail "$u is '$s' after stop, expected inactive (skd-unix.socket is PartOf=skd.socket)"
done
box test ! -e "$SOCK" || fail "$SOCK left behind (RemoveOnStop=yes)"
r=$(box systemctl show -p Result --value skd.service)
[ "$r" = success ] || fail "skd.service Result=$r after stop"
journal_more skd.service 'stopped reason=SIGTERM' "$stops"
ok "all inactive, socket file removed, Result=success"

# --syslog: skd's lines through /dev/log (journald's syslog socket in the box).
syslog_step skd 'listening 127.0.0.1:4499=tcp:127.0.0.1:4499' /dev/null \
  /usr/local/sbin/skd --syslog --listen 127.0.0.1:4499

echo "$passed passed, 0 failed"
