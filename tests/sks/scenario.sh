#!/bin/bash
# The spec's scenario script (shared/specs/sks.md §6.1), unchanged.
B=${1:-http://127.0.0.1:14431}; R=${2:-sks-test}; U=${3:-alice}; P=${4:-wonderland}; U2=${5:-nobody}; P2=${6:-nopass}
BODY=$(mktemp)
step(){ local label=$1 path=$2 body; shift 2; : > "$BODY"
  body=$(curl -s -m 3 -o "$BODY" -w '%{http_code}' "$@" "$B$path"; echo " rc=$?")
  echo "### $label"; echo "status=${body}"; cat -A "$BODY"; echo "<EOF>"; }
tok(){ head -n1 "$BODY"; }
step version "/version"
step valid-no-realm "/valid?token=x"
step valid-unknown "/valid?realm=$R&token=0000000000000000000000000000000000000000"
step auth-bad-pwd "/auth_token?realm=$R&user=$U&pwd=WRONG"
step auth-ok-1 "/auth_token?realm=$R&user=$U&pwd=$P"; T1=$(tok)
step valid-T1 "/valid?realm=$R&token=$T1"
step valid-T1-other-realm "/valid?realm=$R-x&token=$T1"
step auth-ok-2 "/auth_token?realm=$R&user=$U&pwd=$P"; T2=$(tok)
step valid-T1-superseded "/valid?realm=$R&token=$T1"
step valid-T2 "/valid?realm=$R&token=$T2"
step replace-T1-superseded "/replace?realm=$R&token=$T1"
step replace-T2 "/replace?realm=$R&token=$T2"; T3=$(tok)
step valid-T2-replaced "/valid?realm=$R&token=$T2"
step valid-T3 "/valid?realm=$R&token=$T3"
step get_key-T3-absent "/get_key?realm=$R&token=$T3"
step gen_key-T3 "/gen_key?realm=$R&token=$T3"
step get_key-T3 "/get_key?realm=$R&token=$T3"
step get_key-T1 "/get_key?realm=$R&token=$T1"
step revoke-T1-superseded "/revoke?realm=$R&token=$T1"
step valid-T1-after-revoke "/valid?realm=$R&token=$T1"
step revoke-T1-again "/revoke?realm=$R&token=$T1"
step revoke-T3 "/revoke?realm=$R&token=$T3"
step valid-T3-after-revoke "/valid?realm=$R&token=$T3"
step replace-T3-revoked "/replace?realm=$R&token=$T3"
step unknown-path "/nope?realm=$R"
step unknown-module "/auth_token?realm=$R&user=$U&pwd=$P&module=nosuchmodule"
step auth-uid-user "/auth_token?realm=$R&user=$U2&pwd=$P2"; T4=$(tok)
step valid-uid-user "/valid?realm=$R&token=$T4"
step replace-uid-user "/replace?realm=$R&token=$T4"
step pam_token-legacy "/pam_token?realm=$R&user=$U&pwd=$P"
step post-valid "/valid?realm=$R&token=x" -X POST
step post-version "/version" -X POST
step head-valid "/valid?realm=$R&token=x" -I
step auth-missing-pwd "/auth_token?realm=$R&user=$U"
step auth-missing-user "/auth_token?realm=$R&pwd=$P"
step stored-ok "/stored_token?realm=$R&user=carol&token=abc"
step valid-stored "/valid?realm=$R&token=abc"
step stored-missing-token "/stored_token?realm=$R&user=carol"
step plus-decoding "/valid?realm=$R&token=a+b%20c"
step dup-param-last-wins "/valid?realm=$R&token=zzz&token=abc"
step empty-realm "/valid?realm=&token=abc"
step bad-escape "/valid?realm=$R&token=%zz"
rm -f "$BODY"
