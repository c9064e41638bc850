#!/bin/bash
# tests/systemd/iscepd.sh: iscepd under a real systemd (DESIGN.md, testing layer 3).
#
# Boots a throw-away systemd box with tests/systemd/box.sh (the repository mounted at the
# same path inside), installs the binaries and units with `make install`, writes
# /etc/keysock/iscepd.toml and a tokens file made by `tokenctl iscep add`, enables
# iscepd.socket and drives iscepd.service through socket activation with the `iscep` client:
# a configured command over TCP (run as the unit's transient user), UNAUTHORIZED without a
# token, a command that hangs (killed with what it started under setsid), READY and
# STATUS=, the command in `journalctl -u iscepd` (and no token there), a reload of the
# configuration, a reload for a rotated token, a clean stop.
# The box has its own network namespace (BOX_NET=1), so the shipped
# ListenStream=127.0.0.1:8989 cannot clash with anything on the host.
#
# Needs root (box.sh). Builds the binaries first (`cargo build --bins`). Prints "### step"
# lines and ends with "N passed, 0 failed"; on the first failure it prints the step, the
# reason and iscepd's journal, and exits 1. The box is always stopped.
#
# Environment: CARGO (default cargo), BOX (default tests/systemd/box.sh).
set -euo pipefail

PROG=tests/systemd/iscepd.sh
UNITS="iscepd.socket iscepd.service"
. "$(dirname "$0")/lib.sh"

# iscep ARGS...: the client inside the box with the service's token; sets RC, OUT, ERR.
iscep() {
  local o e
  o=$(mktemp) e=$(mktemp)
  RC=0
  box /usr/local/bin/iscep --timeout 10 "$@" >"$o" 2>"$e" || RC=$?
  OUT=$(cat "$o") ERR=$(cat "$e")
  rm -f "$o" "$e"
}

CONF=/etc/keysock/iscepd.toml
TOKENS=/etc/keysock/iscep-tokens.json
TF=/root/svc.token

step build
build
ok

t0=$(date +%s.%N)
boot_and_install /usr/local/sbin/iscepd /usr/local/bin/iscep /usr/local/bin/tokenctl \
  /usr/local/lib/systemd/system/iscepd.service /usr/local/lib/systemd/system/iscepd.socket

step configure
box sh -euc "
  mkdir -p /etc/keysock
  cat > $CONF <<'EOF'
[commands.greet]
exec = [\"/bin/sh\", \"-c\", \"printf '{\\\"got\\\": '; cat; printf ', \\\"uid\\\": %s}' \$(id -u)\"]
args = { name = \"str\", n = \"int\" }
log_args = true

[commands.hang]
exec = [\"/bin/sh\", \"-c\", \"setsid /bin/sleep 61.5 & exec /bin/sleep 60\"]
timeout = 1

[commands.later]
exec = [\"/bin/echo\", \"{}\"]
allow = [\"nobody-yet\"]
EOF
  tokenctl iscep add svc --tokens $TOKENS > $TF
  chmod 600 $TF
" 2>&1 || fail "writing $CONF and $TOKENS"
mode=$(box stat -c '%a' "$TOKENS")
[ "$mode" = 600 ] || fail "$TOKENS has mode $mode, expected 600"
TOKEN=$(box cat "$TF")
[[ $TOKEN =~ ^[0-9a-f]{512}$ ]] || fail "tokenctl printed no 512-hex token"
ok "1 owner, token ${TOKEN:0:8}..., $TOKENS mode $mode"

step enable-socket
out=$(box sh -c 'systemctl daemon-reload && systemctl enable --now iscepd.socket' 2>&1) || fail "systemctl enable --now iscepd.socket: $out"
s=$(box systemctl is-active iscepd.socket || true)
[ "$s" = active ] || fail "iscepd.socket is '$s'"
s=$(box systemctl is-active iscepd.service || true)
[ "$s" = inactive ] || fail "iscepd.service is '$s' before any connection, expected inactive"
ok "iscepd.socket listening, iscepd.service inactive"

step run-command
iscep --token-file "$TF" run greet name=world n=3
[ "$RC" = 0 ] || fail "iscep run greet: exit $RC: $ERR"
uid=$(sed -n 's/.*"uid":\([0-9]*\).*/\1/p' <<<"$OUT")
[ -n "$uid" ] && [ "$uid" != 0 ] || fail "unexpected answer (or ran as root): $OUT"
[[ $OUT == '{"got":{"n":3,"name":"world"},"uid":'*'}' ]] || fail "unexpected answer: $OUT"
s=$(box systemctl is-active iscepd.service || true)
[ "$s" = active ] || fail "iscepd.service is '$s' after the first connection"
ok "$OUT (a transient user, not root)"

step ready-status
props=$(box systemctl show -p Type -p SubState -p StatusText iscepd.service)
grep -qx 'Type=notify' <<<"$props" || fail "not Type=notify: $props"
grep -qx 'SubState=running' <<<"$props" || fail "READY=1 not reached: $props"
grep -qx 'StatusText=serving iscep: 3 commands, 1 token owners, plain TCP' <<<"$props" || fail "StatusText: $props"
ok "$(grep StatusText <<<"$props")"

step discover-and-errors
iscep --token-file "$TF" discover
[ "$RC" = 0 ] && [ "$OUT" = '{"greet":{"n":"int","name":"str"},"hang":{}}' ] || fail "discover: exit $RC: $OUT $ERR"
iscep run greet name=x n=1
[ "$RC" = 2 ] || fail "no token: exit $RC, expected 2 (UNAUTHORIZED): $OUT $ERR"
iscep --token-file "$TF" run later
[ "$RC" = 1 ] && [[ $ERR == *"command not found"* ]] || fail "a command for another owner: exit $RC: $ERR"
t=$(date +%s%N)
iscep --token-file "$TF" run hang
ms=$(( ($(date +%s%N) - t) / 1000000 ))
[ "$RC" = 1 ] || fail "hang: exit $RC, expected 1 (ERROR)"
[ $ms -lt 5000 ] || fail "hang answered after $ms ms"
# What hang started in a session of its own (setsid) is killed with it, in the sandbox too.
for _ in $(seq 50); do box pgrep -f 'sleep 61[.]5' >/dev/null || break; sleep 0.1; done
left=$(box pgrep -af 'sleep 61[.]5' || true)
[ -z "$left" ] || fail "hang's setsid'd child outlived it: $left"
ok "DISCOVER lists 2 of 3, UNAUTHORIZED=2, command not found=1, hang ERROR after $ms ms, nothing left of it"

step journal
journal_has iscepd.service 'command name="greet" owner=svc'
line=$(grep -m1 'command name="greet"' <<<"$J")
grep -q 'args=' <<<"$line" || fail "log_args = true but no args= in: $line"
journal_has iscepd.service 'command name="hang" owner=svc'
grep 'command name="hang"' <<<"$J" | grep -q 'timed out' || fail "no timeout in the line for hang"
grep -q 'request-error .*error=unauthorized' <<<"$J" || fail "no unauthorized request-error line"
grep -qF "${TOKEN:0:16}" <<<"$J" && fail "the token appears in the journal"
ok "$line"

step reload-config
box sh -c "sed -i 's/nobody-yet/svc/' $CONF && systemctl reload iscepd.service" 2>&1 || fail "systemctl reload"
journal_has iscepd.service 'reload what=config why=SIGHUP'
iscep --token-file "$TF" run later
[ "$RC" = 0 ] && [ "$OUT" = '{}' ] || fail "after reload: exit $RC: $OUT $ERR"
ok "'later' runs for svc after systemctl reload"

step new-token-reload
NEW=$(box tokenctl iscep rotate svc --tokens "$TOKENS") || fail "tokenctl iscep rotate"
box sh -c "printf '%s\n' '$NEW' > /root/new.token"
reloads=$(journal_count iscepd.service 'reload what=tokens why=SIGHUP owners=1')
out=$(box systemctl reload iscepd.service 2>&1) || fail "systemctl reload: $out"
journal_more iscepd.service 'reload what=tokens why=SIGHUP owners=1' "$reloads"
iscep --token-file /root/new.token echo hi
[ "$RC" = 0 ] && [ "$OUT" = '{"echo":"hi"}' ] || fail "new token: exit $RC: $OUT $ERR"
iscep --token-file "$TF" echo hi
[ "$RC" = 2 ] || fail "old token after rotate + restart: exit $RC, expected 2"
ok "after systemctl reload: rotated token accepted, old one UNAUTHORIZED"

step broken-config-reload
# ExecReload= checks the files first: a broken one fails the reload and the running iscepd
# keeps the configuration it has.
box sh -c "cp $CONF /root/conf.bak && echo 'this is [not toml' >> $CONF" || fail "breaking $CONF"
if out=$(box systemctl reload iscepd.service 2>&1); then fail "systemctl reload succeeded with a broken $CONF"; fi
s=$(box systemctl is-active iscepd.service || true)
[ "$s" = active ] || fail "iscepd.service is '$s' after a refused reload"
iscep --token-file /root/new.token echo hi
[ "$RC" = 0 ] && [ "$OUT" = '{"echo":"hi"}' ] || fail "after a refused reload: exit $RC: $OUT $ERR"
box cp /root/conf.bak "$CONF" || fail "restoring $CONF"
ok "reload refused ($(tail -n1 <<<"$out")), iscepd still serving"

step stop
out=$(box systemctl stop iscepd.socket iscepd.service 2>&1) || fail "systemctl stop: $out"
for u in iscepd.service iscepd.socket; do
  s=$(box systemctl is-active "$u" || true)
  [ "$s" = inactive ] || fail "$u is '$s' after stop"
done
r=$(box systemctl show -p Result --value iscepd.service)
[ "$r" = success ] || fail "iscepd.service Result=$r after stop"
journal_has iscepd.service 'stopped reason=SIGTERM'
ok "inactive, Result=success"

# --syslog: iscepd's lines through /dev/log, on another port, the units stopped.
syslog_step iscepd 'listening 127.0.0.1:8999=tcp:127.0.0.1:8999' /dev/null \
  /usr/local/sbin/iscepd --syslog --config "$CONF" --tokens "$TOKENS" --listen 127.0.0.1:8999

t1=$(date +%s.%N)
echo "(box up $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s)"
echo "$passed passed, 0 failed"
