#!/bin/bash
# make run: skd socket-activated on loopback (in-memory store, a throw-away PAM service),
# a walk-through of the protocol printed step by step, then a clean stop.
set -euo pipefail
BIN=${1:-target/debug}
cd "$(dirname "$0")/.."
SERVICE=keysock-demo
if [ "$(id -u)" != 0 ]; then
  echo "make run: installing the throw-away PAM service /etc/pam.d/$SERVICE needs root" >&2
  exit 77
fi
command -v systemd-socket-activate >/dev/null || { echo "make run: systemd-socket-activate is missing (package systemd)" >&2; exit 69; }
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
B=http://127.0.0.1:$PORT
LOG=$(mktemp)
cleanup() {
  [ -n "${ACT:-}" ] && kill "$ACT" 2>/dev/null || true
  rm -rf /etc/pam.d/$SERVICE /usr/local/lib/$SERVICE "$LOG"
}
trap cleanup EXIT
tests/pam-setup.sh $SERVICE

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; printf '\n'; }

say "0. systemd-socket-activate holds 127.0.0.1:$PORT; skd starts on the first connection"
systemd-socket-activate -l 127.0.0.1:$PORT "$BIN/skd" -pam-app $SERVICE 2>"$LOG" &
ACT=$!
sleep 0.2
show curl -s "$B/version"

say "1. log in (PAM service $SERVICE, user alice); the password travels in a POST body"
R=$(curl -s --data 'realm=demo&user=alice&pwd=wonderland' "$B/auth_token")
printf '$ curl -s --data realm=demo&user=alice&pwd=... %s/auth_token\n%s\n' "$B" "$R"
T1=$(head -n1 <<<"$R")

say "2. validate the token"
show curl -s "$B/valid?realm=demo&token=$T1"

say "3. replace it: a new token, the old one is gone"
R=$(curl -s "$B/replace?realm=demo&token=$T1"); printf '%s\n' "$R"
T2=$(head -n1 <<<"$R")
show curl -s "$B/valid?realm=demo&token=$T1"

say "4. generate the user's 512-bit key, then read it back"
show curl -s "$B/gen_key?realm=demo&token=$T2"
show curl -s "$B/get_key?realm=demo&token=$T2"

say "5. revoke the token: it no longer validates"
show curl -s "$B/revoke?realm=demo&token=$T2"
show curl -s "$B/valid?realm=demo&token=$T2"

say "6. a wrong password is refused (403)"
show curl -s -o /dev/null -w '%{http_code}\n' --data 'realm=demo&user=alice&pwd=wrong' "$B/auth_token"

say "7. clean stop: SIGTERM, skd drains connections and exits"
kill -TERM "$ACT"; wait "$ACT" && echo "skd exited with status 0"; ACT=
say "skd's log (no token, no password in it)"
cat "$LOG"
