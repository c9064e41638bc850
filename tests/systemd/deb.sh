#!/bin/bash
# tests/systemd/deb.sh: the Debian package under a real systemd (DESIGN.md, testing layer 3).
#
# Builds the package with `make deb` (release build, lintian clean), boots a throw-away
# systemd box with tests/systemd/box.sh and, inside it:
#   1. installs the package with dpkg -i, and finds no keysock unit enabled, running or
#      listening (system units, and the user unit s5d.socket for every user), the conffiles
#      in place (/etc/pam.d/skd, /etc/keysock/*) and the key directories made by tmpfiles;
#   2. enables skd.socket and logs a Unix account in through the shipped /etc/pam.d/skd,
#      then checks the token with /valid;
#   3. first use of remod, iscepd and autoidd: each answers its first connection with what
#      the package ships, the keys and entropy it lacks made at first start and kept after;
#      every daemon's shipped configuration passes its --check, and a broken iscepd.toml
#      makes "systemctl reload iscepd" fail while the running iscepd keeps serving;
#   4. removes the package with skd.socket enabled and running: no unit file of the package is
#      left, nothing keeps running or listening; after a purge no enablement link is left.
#
# Needs root (box.sh) and the Debian packaging tools (scripts/install-deps.sh). Prints
# "### step" lines and ends with "N passed, 0 failed"; on the first failure it prints the
# step, the reason and skd's journal, and exits 1. The box is always stopped.
#
# Environment: BOX (default tests/systemd/box.sh), MAKE (default make).
set -euo pipefail

PROG=tests/systemd/deb.sh
UNITS="skd.socket skd-unix.socket skd.service autoidd-keygen.service autoidd.service iscepd.service"
. "$(dirname "$0")/lib.sh"

# Every TCP port a keysock socket unit listens on by default.
PORTS="4431 4440 8080 8989 13500"

# listening: the TCP ports of $PORTS something listens on inside the box.
listening() {
  local out p found=
  out=$(box ss -Hltn 2>&1) || fail "ss -ltn: $out"
  for p in $PORTS; do
    grep -qE "[:.]$p[[:space:]]" <<<"$out" && found="$found $p"
  done
  echo "${found# }"
}

step build
out=$("${MAKE:-make}" -C "$ROOT" --no-print-directory -s deb 2>&1) || fail "make deb: $out"
DEB=$(sed -n 's/^build-deb: \(target\/deb\/.*\.deb\)$/\1/p' <<<"$out" | tail -n1)
[ -n "$DEB" ] && [ -s "$ROOT/$DEB" ] || fail "make deb named no package: $out"
DEB=$ROOT/$DEB
ok "$(basename "$DEB"), lintian clean"

boot

step install
# A container image's policy-rc.d (Docker's exits 101) forbids every start and stop by the
# maintainer scripts, which would make "nothing starts" vacuous: the box is a real machine.
box rm -f /usr/sbin/policy-rc.d || fail "removing policy-rc.d in the box"
out=$(box env DEBIAN_FRONTEND=noninteractive dpkg -i "$DEB" 2>&1) || fail "dpkg -i: $out"
UNIT_FILES=$(box dpkg -L keysock | grep -E '/systemd/(system|user)/[^/]+\.(socket|service)$' || true)
[ -n "$UNIT_FILES" ] || fail "the package has no units"
SYSTEM_UNITS=$(grep '/systemd/system/' <<<"$UNIT_FILES" | xargs -n1 basename)
for u in skd.socket skd-unix.socket skd.service s5d.socket remod.socket autoidd.socket autoidd-keygen.service iscepd.socket; do
  grep -qx "$u" <<<"$SYSTEM_UNITS" || fail "$u is not in the package"
done
grep -q '/systemd/user/s5d.socket$' <<<"$UNIT_FILES" || fail "the user unit s5d.socket is not in the package"
# The package's own unit files, not copies of a `make install` on the host (/usr/local).
path=$(box systemctl show -p FragmentPath --value skd.service)
grep -qxF "$path" <<<"$UNIT_FILES" || fail "skd.service comes from $path, not from the package"
for f in /usr/sbin/skd /usr/bin/s5d /usr/bin/s5client /usr/bin/build-key-pair /usr/sbin/remod; do
  box test -x "$f" || fail "$f not installed"
done
box test ! -e /usr/bin/s5 || fail "/usr/bin/s5 is installed: Debian's s5 package owns it"
ok "$(wc -l <<<"$UNIT_FILES") units; binaries in /usr/bin and /usr/sbin"

step nothing-enabled
for u in $SYSTEM_UNITS; do
  e=$(box systemctl is-enabled "$u" 2>&1 || true)
  case $e in disabled | static) ;; *) fail "$u is '$e' after installation, expected disabled or static" ;; esac
  a=$(box systemctl is-active "$u" 2>&1 || true)
  [ "$a" = inactive ] || fail "$u is '$a' after installation, expected inactive"
done
# The user unit takes no fixed TCP port (every user of a node would want the same one).
l=$(box grep '^ListenStream=' /usr/lib/systemd/user/s5d.socket 2>&1 || true)
[ "$l" = 'ListenStream=%t/s5d.sock' ] || fail "the user s5d.socket listens on: $l"
e=$(box systemctl --global is-enabled s5d.socket 2>&1 || true)
[ "$e" = disabled ] || fail "the user unit s5d.socket is '$e' for every user, expected disabled"
l=$(listening)
[ -z "$l" ] || fail "something listens on port(s) $l after installation"
ok "$(wc -w <<<"$SYSTEM_UNITS") system units disabled or static and inactive; user s5d.socket disabled; ports $PORTS free"

step conffiles
conf=$(box dpkg-query -W -f='${Conffiles}\n' keysock)
CONFFILES="/etc/pam.d/skd /etc/keysock/iscepd.toml /etc/keysock/iscep-tokens.json /etc/keysock/skd.toml
  /etc/keysock/s5d.toml /etc/keysock/remod.toml /etc/keysock/autoidd.toml"
for f in $CONFFILES; do
  grep -q "^ $f " <<<"$conf" || fail "$f is not a conffile: $conf"
done
grep -q '@include common-auth' <<<"$(box cat /etc/pam.d/skd)" || fail "/etc/pam.d/skd is not the shipped stack"
m=$(box stat -c '%a %U' /etc/keysock/iscep-tokens.json)
[ "$m" = "600 root" ] || fail "/etc/keysock/iscep-tokens.json is '$m', expected '600 root'"
# The example enables no command.
! box grep -qE '^[[:space:]]*\[' /etc/keysock/iscepd.toml || fail "/etc/keysock/iscepd.toml declares a command"
for d in /etc/remod /etc/credstore; do
  m=$(box stat -c '%a %U' "$d" 2>&1) || fail "$d (tmpfiles.d) missing: $m"
  [ "$m" = "700 root" ] || fail "$d is '$m', expected '700 root'"
done
# Completions where each shell looks, for every program.
for p in skd s5d s5client tokenctl remod autoidd; do
  for f in /usr/share/bash-completion/completions/$p /usr/share/zsh/vendor-completions/_$p \
      /usr/share/fish/vendor_completions.d/$p.fish; do
    m=$(box stat -c '%a' "$f" 2>&1) || fail "no completion $f"
    [ "$m" = 644 ] || fail "$f is $m"
  done
done
out=$(box bash -c '. /usr/share/bash-completion/completions/skd && complete -p skd' 2>&1) || fail "bash completion of skd: $out"
ok "conffiles $(wc -w <<<"$CONFFILES"); /etc/remod, /etc/credstore 0700; bash, zsh and fish completions"

step skd-login
box sh -euc 'useradd -M -s /usr/sbin/nologin debuser && echo "debuser:P4ckaged!" | chpasswd' 2>&1 ||
  fail "a Unix account in the box"
out=$(box systemctl enable --now skd.socket 2>&1) || fail "systemctl enable --now skd.socket: $out"
wait_state skd.socket active
out=$(box curl -sS -m 10 -w '\n%{http_code}' 'http://127.0.0.1:4431/auth_token?realm=deb&user=debuser&pwd=P4ckaged!' 2>&1) ||
  fail "curl /auth_token: $out"
[ "${out##*$'\n'}" = 200 ] || fail "/auth_token: $out"
token=$(head -n1 <<<"$out")
[[ $token =~ ^[0-9a-f]{40}$ ]] || fail "/auth_token answered '$out'"
out=$(box curl -sS -m 10 "http://127.0.0.1:4431/valid?realm=deb&token=$token" 2>&1) || fail "curl /valid: $out"
[ "$(head -n1 <<<"$out")" = YES ] || fail "/valid answered '$out'"
sed -n 2p <<<"$out" | grep -qx debuser || fail "/valid answers for someone else: $out"
out=$(box curl -sS -m 10 -w '\n%{http_code}' 'http://127.0.0.1:4431/auth_token?realm=deb&user=debuser&pwd=wrong' 2>&1) || true
[ "${out##*$'\n'}" = 403 ] || fail "a wrong password got: $out"
ok "debuser through /etc/pam.d/skd: token ${token:0:8}... valid; wrong password 403"

step first-use
# remod and iscepd answer their first connection with what the package ships: remod makes
# its server key at first start (and keeps it), iscepd starts on the example configuration
# and the empty tokens file.
out=$(box systemctl enable --now remod.socket iscepd.socket 2>&1) || fail "systemctl enable --now remod.socket iscepd.socket: $out"
out=$(box curl -sS -m 10 -X POST --data '' -w '\n%{http_code}' http://127.0.0.1:8080/auth 2>&1) || fail "curl remod /auth: $out"
[ "$out" = $'Disconnected\n200' ] || fail "remod's first answer: $out"
mode=$(box stat -c '%a %U' /etc/remod/remo_serv_key.pem 2>&1) || fail "no /etc/remod/remo_serv_key.pem after the first start"
[ "$mode" = "600 root" ] || fail "server key is $mode"
box test -f /etc/remod/remo_serv.pem || fail "no public key /etc/remod/remo_serv.pem"
key1=$(box sha256sum /etc/remod/remo_serv_key.pem)
out=$(box systemctl restart remod.service 2>&1) || fail "systemctl restart remod.service: $out"
[ "$(box sha256sum /etc/remod/remo_serv_key.pem)" = "$key1" ] || fail "the server key was replaced at restart"
rc=0; out=$(box iscep --timeout 10 echo hi 2>&1) || rc=$?
[ $rc = 2 ] || fail "iscep echo against the shipped iscepd: exit $rc (expected 2, UNAUTHORIZED): $out"
s=$(box systemctl is-active iscepd.service || true)
[ "$s" = active ] || fail "iscepd.service is '$s' after its first connection"
# A reload with a broken configuration fails and leaves the running iscepd as it was.
pid=$(box systemctl show -p MainPID --value iscepd.service)
box cp /etc/keysock/iscepd.toml /tmp/iscepd.toml.good
box sh -c 'echo "no-such-option = 1" >> /etc/keysock/iscepd.toml'
rc=0; out=$(box systemctl reload iscepd.service 2>&1) || rc=$?
[ $rc != 0 ] || fail "systemctl reload iscepd succeeded with a broken iscepd.toml"
[ "$(box systemctl show -p MainPID --value iscepd.service)" = "$pid" ] || fail "iscepd was restarted by a failed reload"
journal_has iscepd.service 'unknown key "no-such-option"'
rc=0; out=$(box iscep --timeout 10 echo hi 2>&1) || rc=$?
[ $rc = 2 ] || fail "iscepd does not answer after the failed reload: exit $rc: $out"
box cp /tmp/iscepd.toml.good /etc/keysock/iscepd.toml
out=$(box systemctl reload iscepd.service 2>&1) || fail "reload with the shipped iscepd.toml: $out"
box systemctl disable --now remod.socket iscepd.socket remod.service iscepd.service >/dev/null 2>&1 || fail "disabling remod and iscepd"
ok "remod answered and made its key (0600, kept at restart); iscepd answered UNAUTHORIZED; a broken reload refused"

step autoidd-first-use
# Nothing made at installation: the key and entropy file come at the first start.
box test ! -e /etc/credstore/autoidd.key || fail "/etc/credstore/autoidd.key exists before the first start"
out=$(box systemctl enable --now autoidd.socket 2>&1) || fail "systemctl enable --now autoidd.socket: $out"
wait_state autoidd.socket active
# The first connection starts autoidd, which makes its key and entropy file and answers: a
# v2 challenge (200), signed with the new key.
out=$(box curl -sS -m 10 -X POST --data '' -w '\n%{http_code}' http://127.0.0.1:4440/v2/challenge 2>&1) ||
  fail "curl /v2/challenge: $out"
[ "${out##*$'\n'}" = 200 ] || fail "autoidd's first answer: $out"
# Then a client with the public key and the entropy file made at the first start: a secret
# autoidd does not have is "404" after the proof was checked; anything else is a failure.
fetch() {
  box autoid --url http://127.0.0.1:4440 --entropy /var/lib/autoidd/info2048.bin \
    --server-key /etc/credstore/autoidd.pub "$@"
}
rc=0; out=$(fetch no-such-secret 2>&1) || rc=$?
[ $rc = 1 ] && [[ $out == *404* ]] || fail "autoid with the files of the first start: exit $rc: $out"
m=$(box stat -c '%a %U' /etc/credstore/autoidd.key 2>&1) || fail "no /etc/credstore/autoidd.key after the first start"
[ "$m" = "600 root" ] || fail "/etc/credstore/autoidd.key is $m"
m=$(box stat -L -c '%a' /var/lib/autoidd/info2048.bin 2>&1) || fail "no entropy file after the first start"
[ "$m" = 600 ] || fail "the entropy file is $m"
sums=$(box sha256sum /etc/credstore/autoidd.key /var/lib/autoidd/info2048.bin)
out=$(box systemctl restart autoidd.service 2>&1) || fail "systemctl restart autoidd.service: $out"
[ "$(box sha256sum /etc/credstore/autoidd.key /var/lib/autoidd/info2048.bin)" = "$sums" ] ||
  fail "the key or the entropy file was replaced at restart"
# And it serves: a secret given as a credential in a drop-in, fetched with v2.
box sh -c 'umask 077; echo first-use-secret > /etc/credstore/fu-secret'
dropin autoidd.service $'[Service]\nLoadCredential=fu-secret:/etc/credstore/fu-secret'
box systemctl restart autoidd.service || fail "restart with the secret"
out=$(fetch fu-secret 2>&1) || fail "autoid fu-secret: $out"
[ "$out" = first-use-secret ] || fail "autoid printed '$out'"
box systemctl disable --now autoidd.socket autoidd.service >/dev/null 2>&1 || fail "disabling autoidd"
box sh -c 'rm -r /etc/systemd/system/autoidd.service.d && systemctl daemon-reload' || fail "removing the drop-in"
ok "first connection answered; key (600 root) and entropy made then, kept at restart; 404, then a secret served"

step readme
# README's "Using them" lines, verbatim, on the package as installed (all but the curl login,
# which needs an account's password: step skd-login does it): a service token from skd's
# store, an iscep token, and what it may run.
out=$(box sh -euc 'cd /root
systemctl enable --now skd.socket
tokenctl skd issue --db /var/lib/skd --realm myservice --user robot
systemctl enable --now iscepd.socket
tokenctl iscep add backup --tokens /etc/keysock/iscep-tokens.json > backup.token
iscep --token-file backup.token discover' 2>&1) || fail "README commands: $out"
box systemctl disable --now iscepd.socket iscepd.service >/dev/null 2>&1 || fail "disabling iscepd"
ok "$(tr '\n' ' ' <<<"$out")"

step check
# Each daemon's shipped configuration passes its --check (skd, s5d need nothing else).
out=$(box skd --check 2>&1) || fail "skd --check: $out"
grep -q 'file /etc/keysock/skd.toml' <<<"$out" || fail "skd --check read no file: $out"
out=$(box s5d --config /etc/keysock/s5d.toml --secret-from put --check 2>&1) || fail "s5d --check: $out"
out=$(box iscepd --check 2>&1) || fail "iscepd --check: $out"
out=$(box remod -k /etc/remod/remo_serv_key.pem --check 2>&1) || fail "remod --check: $out"
rc=0; out=$(box skd --config /etc/keysock/s5d.toml --check 2>&1) || rc=$?
[ $rc = 78 ] || fail "skd --check with s5d's file: exit $rc: $out"
ok "skd, s5d, iscepd, remod pass; a wrong file exits 78"

step remove
out=$(box env DEBIAN_FRONTEND=noninteractive dpkg -r keysock 2>&1) || fail "dpkg -r keysock: $out"
while read -r f; do
  box test ! -e "$f" || fail "$f left behind by dpkg -r"
done <<<"$UNIT_FILES"
box systemctl daemon-reload
for u in skd.socket skd-unix.socket skd.service; do
  a=$(box systemctl is-active "$u" 2>&1 || true)
  [ "$a" = inactive ] || fail "$u is '$a' after dpkg -r, expected inactive"
done
l=$(listening)
[ -z "$l" ] || fail "something still listens on port(s) $l after dpkg -r"
box test -e /etc/pam.d/skd || fail "dpkg -r removed the conffile /etc/pam.d/skd (only purge does)"
ok "no unit file left, skd stopped, nothing listening; conffiles kept until purge"

step purge
out=$(box env DEBIAN_FRONTEND=noninteractive dpkg -P keysock 2>&1) || fail "dpkg -P keysock: $out"
left=$(box find /etc/systemd -name 'skd*' -o -name 's5d*' -o -name 'remod*' -o -name 'autoidd*' -o -name 'iscepd*' 2>&1 || true)
[ -z "$left" ] || fail "left in /etc/systemd after purge: $left"
for f in $CONFFILES; do
  box test ! -e "$f" || fail "$f left after purge"
done
ok "no enablement link or conffile left"

echo "$passed passed, 0 failed"
