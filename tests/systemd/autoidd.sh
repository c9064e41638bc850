#!/bin/bash
# tests/systemd/autoidd.sh: autoidd under a real systemd (DESIGN.md, testing layer 3).
#
# Boots a throw-away systemd box with tests/systemd/box.sh (the repository mounted at the
# same path inside), installs the binaries and units with `make install`, puts a key pair
# (build-key-pair --type rsa) in /etc/credstore, an entropy file (autoidd gen-entropy) in
# /var/lib/autoidd, written by root as an administrator would, and
# one secret behind LoadCredential= in a drop-in, enables autoidd.socket, and then:
#   1. autoid (v2) and autoid --v1 get the secret on 127.0.0.1:4440, which starts
#      autoidd.service (Type=notify: StatusText set); the spec-described original client
#      (tests/autoid/crypto_client.py) too, from target/autoid-venv (made by the cargo tests);
#   2. a wrong entropy file is refused (exit 1), and the journal has the refusal but no secret;
#   3. rotation: a new entropy file in /var/lib/autoidd and a service restart; the old file is
#      refused, the new one served;
#   4. the units stop cleanly.
# The box has its own network namespace (BOX_NET=1): port 4440 clashes with nothing.
#
# Needs root (box.sh). Prints "### step" lines and ends with "N passed, 0 failed"; on the
# first failure it prints the step, the reason and autoidd's journal, and exits 1.
#
# Environment: CARGO (default cargo), BOX (default tests/systemd/box.sh).
set -euo pipefail

PROG=tests/systemd/autoidd.sh
UNITS="autoidd.socket autoidd.service"
. "$(dirname "$0")/lib.sh"
SECRET='sdbox-akid,sdbox-s3cr3t ✓'
URL=http://127.0.0.1:4440

step build
build
ok

boot_and_install /usr/local/sbin/autoidd /usr/local/bin/autoid \
  /usr/local/lib/systemd/system/autoidd.service /usr/local/lib/systemd/system/autoidd.socket

step keys
out=$(box sh -c '
  set -e
  mkdir -p /etc/credstore /etc/autoidd/secrets /tmp/c
  chmod 700 /etc/credstore /etc/autoidd/secrets
  "$1/target/debug/build-key-pair" --type rsa autoid /tmp/c </dev/null
  install -m 600 /tmp/c/autoid_key.pem /etc/credstore/autoidd.key
  mkdir -p /var/lib/private && chmod 700 /var/lib/private
  mkdir -p /var/lib/private/autoidd && ln -sfn private/autoidd /var/lib/autoidd
  autoidd gen-entropy /var/lib/autoidd/info2048.bin
  cp /var/lib/autoidd/info2048.bin /tmp/c/info2048.bin
  cp /tmp/c/autoid.pub /tmp/c/public.pem
  (umask 077; printf "%s\n" "$2" > /etc/autoidd/secrets/test-secret)
' sh "$ROOT" "$SECRET" 2>&1) || fail "setting up keys: $out"
creds=$'LoadCredential=test-secret:/etc/autoidd/secrets/test-secret'
# The shipped unit as shipped: LoadCredential= under DynamicUser=. A box that delivers no
# credentials (its / not shared, see box.sh) fails here, with the reason, rather than being
# worked around.
box systemd-run -q -P --wait -p DynamicUser=yes -p LoadCredential=autoidd.key:/etc/credstore/autoidd.key \
    sh -c 'test -r "$CREDENTIALS_DIRECTORY/autoidd.key"' >/dev/null 2>&1 ||
  fail "systemd delivers no credentials to a DynamicUser= unit in this box (is / rshared? see box.sh)"
dropin autoidd.service $'[Service]\n'"$creds"
ok "key pair, entropy file, secret test-secret"

step enable-socket
out=$(box systemctl enable --now autoidd.socket 2>&1) || fail "systemctl enable --now autoidd.socket: $out"
wait_state autoidd.socket active
s=$(box systemctl is-active autoidd.service || true)
[ "$s" = inactive ] || fail "autoidd.service is '$s' before any connection, expected inactive"
ok "autoidd.socket listening, autoidd.service inactive"

# fetch ENTROPY [--v1]: autoid's output.
fetch() {
  local e=$1
  shift
  box autoid --url "$URL" --entropy "$e" --server-key /tmp/c/autoid.pub "$@" test-secret
}

step fetch-v2-v1
got=$(fetch /tmp/c/info2048.bin 2>&1) || fail "autoid: $got"
[ "$got" = "$SECRET" ] || fail "autoid printed '$got'"
got=$(fetch /tmp/c/info2048.bin --v1 2>&1) || fail "autoid --v1: $got"
[ "$got" = "$SECRET" ] || fail "autoid --v1 printed '$got'"
wait_state autoidd.service active
status=$(box systemctl show -p StatusText --value autoidd.service)
[[ $status == "serving auto-id v1 and v2, secrets in "*/autoidd* ]] || fail "StatusText=$status"
ok "StatusText=$status"

VENV=$ROOT/target/autoid-venv
step original-client
# The virtual environment is made by `cargo test --test main autoid_python::`, which make check runs
# first: without it this step fails rather than passing untested.
[ -x "$VENV/bin/python" ] || fail "$VENV is missing: run cargo test --test main autoid_python:: first"
got=$(box sh -c 'cd /tmp/c && "$1/bin/python" "$2/tests/autoid/crypto_client.py" "$3/Stage/verify" secretsmanager,test-secret' \
  sh "$VENV" "$ROOT" "$URL" 2>&1) || fail "crypto_client.py: $got"
[ "$got" = "$SECRET" ] || fail "crypto_client.py printed '$got'"
ok

step wrong-entropy
box autoidd gen-entropy /tmp/other.bin 2>/dev/null || fail "gen-entropy"
if got=$(fetch /tmp/other.bin 2>&1); then fail "a wrong entropy file was served: $got"; fi
[[ $got == *"403: proof refused"* ]] || fail "autoid said '$got'"
journal_has autoidd.service 'proof mismatch (wrong entropy file)'
journal_has autoidd.service 'served version=2 secret=test-secret'
! grep -qF 's3cr3t' <<<"$J" || fail "the secret is in the journal"
ok "$got"

step rotation
box sh -c 'autoidd gen-entropy /tmp/new.bin && install -m 600 /tmp/new.bin /var/lib/autoidd/info2048.bin && systemctl restart autoidd.service' 2>/dev/null ||
  fail "rotating the entropy file"
if got=$(fetch /tmp/c/info2048.bin 2>&1); then fail "the old entropy file was served after rotation: $got"; fi
if got=$(fetch /tmp/c/info2048.bin --v1 2>&1); then fail "the old entropy file was served after rotation (v1): $got"; fi
got=$(fetch /tmp/new.bin 2>&1) || fail "new entropy file: $got"
[ "$got" = "$SECRET" ] || fail "autoid printed '$got'"
ok "old file refused, new file served"

step stop
stops=$(journal_count autoidd.service 'stopped reason=SIGTERM')
box systemctl stop autoidd.socket autoidd.service || fail "systemctl stop"
wait_state autoidd.service inactive
result=$(box systemctl show -p Result --value autoidd.service)
[ "$result" = success ] || fail "autoidd.service Result=$result"
journal_more autoidd.service 'stopped reason=SIGTERM' "$stops"
ok "Result=$result"

# --syslog: autoidd's lines through /dev/log, on another port, the units stopped.
syslog_step autoidd 'listening 127.0.0.1:4499=tcp:127.0.0.1:4499' /dev/null \
  /usr/local/sbin/autoidd --syslog --key /etc/credstore/autoidd.key --entropy /var/lib/autoidd/info2048.bin \
  --secrets /etc/autoidd/secrets --listen 127.0.0.1:4499

echo "$passed passed, 0 failed"
