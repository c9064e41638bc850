#!/bin/bash
# tests/systemd/remod.sh: remod under a real systemd (DESIGN.md, testing layer 3).
#
# Boots a throw-away systemd box with tests/systemd/box.sh, installs the binaries and
# units with `make install`, makes the server key with build-key-pair, a Unix account and a
# remote user mapped to it with add-user, enables remod.socket and drives remod.service
# through socket activation with remo: `exec id -un` shows the mapped account, a file put
# into its home belongs to it, READY and STATUS=, the login in `journalctl -u remod`, a clean
# stop. The box has its own network namespace, so port 8080 cannot clash with the host.
#
# Needs root. Prints "### step" lines and ends with "N passed, 0 failed"; on the first
# failure it prints the step, the reason and remod's journal, and exits 1.
#
# Environment: CARGO (default cargo), BOX (default tests/systemd/box.sh).
set -euo pipefail

PROG=tests/systemd/remod.sh
UNITS="remod.socket remod.service"
. "$(dirname "$0")/lib.sh"

# remo ARGS...: the client inside the box as alice; sets RC, OUT, ERR.
remo() {
  local o e
  o=$(mktemp) e=$(mktemp)
  RC=0
  box /usr/local/bin/remo 127.0.0.1 8080 -s /etc/remod/remo_serv.pem -u alice \
    -k /root/alice_key.pem --password-file /root/pw "$@" >"$o" 2>"$e" || RC=$?
  OUT=$(cat "$o") ERR=$(cat "$e")
  rm -f "$o" "$e"
}

step build
build
ok

boot_and_install /usr/local/sbin/remod /usr/local/sbin/add-user /usr/local/bin/remo \
  /usr/local/bin/build-key-pair /usr/local/lib/systemd/system/remod.service \
  /usr/local/lib/systemd/system/remod.socket

step configure
box sh -euc '
  id remoalice >/dev/null 2>&1 || useradd -m -s /bin/sh remoalice
  mkdir -p -m 0700 /etc/remod /var/lib/remod
  echo "" | build-key-pair remo_serv /etc/remod
  echo foo > /root/pw
  echo foo | build-key-pair alice /root
  add-user -b /var/lib/remod/users_db alice /root/alice.pem --unix-user remoalice
' 2>&1 || fail "keys, account and user database"
mode=$(box stat -c '%a' /etc/remod/remo_serv_key.pem)
[ "$mode" = 600 ] || fail "server key has mode $mode"
ok "server key mode $mode, alice -> remoalice"

step enable-socket
out=$(box sh -c 'systemctl daemon-reload && systemctl enable --now remod.socket' 2>&1) || fail "systemctl enable --now remod.socket: $out"
wait_state remod.socket active
s=$(box systemctl is-active remod.service || true)
[ "$s" = inactive ] || fail "remod.service is '$s' before any connection"
ok "remod.socket listening, remod.service inactive"

step exec-as-mapped-user
remo exec id -un
[ "$RC" = 0 ] && [ "$OUT" = remoalice ] || fail "exec id -un: exit $RC: $OUT $ERR"
who=$OUT
remo exec sh -c 'exit 7'
[ "$RC" = 7 ] || fail "exit status: $RC"
ok "id -un = $who, remote exit status 7 passed through"

step transfer
box sh -c 'head -c 300000 /dev/urandom > /root/blob'
remo put /home/remoalice/blob /root/blob
[ "$RC" = 0 ] || fail "put: exit $RC: $ERR"
owner=$(box stat -c '%U' /home/remoalice/blob)
[ "$owner" = remoalice ] || fail "the uploaded file belongs to $owner"
remo get /home/remoalice/blob /root/back
[ "$RC" = 0 ] || fail "get: exit $RC: $ERR"
box cmp /root/blob /root/back || fail "get returned other bytes"
remo get /etc/remod/remo_serv_key.pem /root/stolen
[ "$RC" != 0 ] || fail "remoalice could read the server key"
grep -q 'HTTP Error 403' <<<"$ERR" || fail "reading the server key: not refused by remod (403): $ERR"
ok "put as remoalice, get intact, the server key unreadable ($ERR)"

step privilege-separation
# The shipped sysusers.d entry made _remod (make install runs systemd-sysusers).
uid=$(box id -u _remod) || fail "no user _remod after make install"
mon=$(box systemctl show -p MainPID --value remod.service)
net=$(box pgrep -P "$mon" -x remod-net) || fail "no network process (remod-net) under the monitor $mon"
st=$(box cat /proc/$net/status)
grep -qP "^Uid:\t$uid\t$uid\t$uid\t$uid$" <<<"$st" || fail "network process not running as _remod ($uid): $(grep Uid <<<"$st")"
grep -qx 'CapEff:	0000000000000000' <<<"$st" || fail "network process has capabilities: $(grep Cap <<<"$st")"
grep -qx 'NoNewPrivs:	1' <<<"$st" || fail "network process without no_new_privs"
# Landlock where the kernel has it (landlock_create_ruleset's ABI version query, 444 on
# every architecture).
abi=$(python3 -c 'import ctypes; print(ctypes.CDLL(None).syscall(444, None, 0, 1))')
n=$(journal_count remod.service 'network-process-unconfined')
if [ "$abi" -ge 1 ]; then
  [ "$n" = 0 ] || fail "network process not confined (Landlock ABI $abi): $(box journalctl -u remod.service -g unconfined --no-pager)"
  ll="Landlock ABI $abi"
else
  ll="no Landlock in this kernel"
fi
box kill -KILL "$net"
remo exec echo again
[ "$RC" = 0 ] && [ "$OUT" = again ] || fail "after the network process was killed: exit $RC: $OUT $ERR"
[ "$(box systemctl show -p MainPID --value remod.service)" = "$mon" ] || fail "the monitor did not survive"
ok "remod-net pid $net as _remod ($uid), CapEff 0, NoNewPrivs 1, $ll; killed, started again"

step ready-status
props=$(box systemctl show -p Type -p SubState -p StatusText remod.service)
grep -qx 'Type=notify' <<<"$props" || fail "not Type=notify: $props"
grep -qx 'SubState=running' <<<"$props" || fail "READY=1 not reached: $props"
grep -q '^StatusText=serving remo_serv 0.6.0 protocol' <<<"$props" || fail "StatusText: $props"
ok "$(grep StatusText <<<"$props")"

step journal
journal_has remod.service 'login user=alice unix_user=remoalice'
journal_has remod.service 'cmd user=alice unix_user=remoalice program="id"'
ok "$(grep -m1 'login user=alice' <<<"$J")"

step stop
stops=$(journal_count remod.service 'stopped reason=SIGTERM')
out=$(box systemctl stop remod.socket remod.service 2>&1) || fail "systemctl stop: $out"
for u in remod.service remod.socket; do
  s=$(box systemctl is-active "$u" || true)
  [ "$s" = inactive ] || fail "$u is '$s' after stop"
done
journal_more remod.service 'stopped reason=SIGTERM' "$stops"
ok "inactive"

# --syslog: remod's lines through /dev/log, on another port, the units stopped.
syslog_step remod 'listening 127.0.0.1:8499=tcp:127.0.0.1:8499' /dev/null \
  /usr/local/sbin/remod --syslog -k /etc/remod/remo_serv_key.pem \
  -u SqliteUserService:/var/lib/remod/users_db.sqlite --listen 127.0.0.1:8499

echo "$passed passed, 0 failed"
