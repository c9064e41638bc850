#!/bin/sh
# Installs the throw-away PAM service "keysock-test" (spec sks.md §6.6, the pam_exec recipe):
# one file in /etc/pam.d and a private users file; no change to passwd or shadow. Idempotent.
# Needs root. Users: alice/wonderland (no Unix account), nobody/nopass (uid 65534, exercises
# the uid=/gid= lines), c1..c8/pw1..pw8 for the concurrency test,
# slow/slowpw whose check takes a second, victim/victimpw for the throttle tests. Every call
# appends "USER RHOST SERVICE" to $DIR/calls (when the caller may write it), so a test can
# count what reached PAM. A wrong password ends in pam_deny: PAM says "Authentication
# failure", as pam_unix would, not pam_exec's "System error".
set -eu
SERVICE=${1:-keysock-test}
DIR=/usr/local/lib/$SERVICE
if [ "$(id -u)" != 0 ]; then
  [ -f /etc/pam.d/"$SERVICE" ] && exit 0
  echo "pam-setup: /etc/pam.d/$SERVICE is missing and only root can install it" >&2
  exit 1
fi
mkdir -p "$DIR"
cat > "$DIR/pam-check" <<EOT
#!/bin/sh
# pam_exec helper: user in \$PAM_USER, password on stdin (no newline).
IFS= read -r pw || true
printf '%s %s %s\n' "\$PAM_USER" "\${PAM_RHOST:--}" "\$PAM_SERVICE" >> $DIR/calls 2>/dev/null || true
[ "\$PAM_USER" = slow ] && sleep 1   # a login that is still in flight a second later
grep -qxF -- "\$PAM_USER:\$pw" $DIR/users
EOT
chmod 755 "$DIR/pam-check"
{ printf 'alice:wonderland\nnobody:nopass\n'; printf 'slow:slowpw\nvictim:victimpw\n'; for i in 1 2 3 4 5 6 7 8; do printf 'c%s:pw%s\n' "$i" "$i"; done; } > "$DIR/users.new"
chmod 644 "$DIR/users.new"   # read by the daemon under test, whatever user it runs as
mv "$DIR/users.new" "$DIR/users"
touch "$DIR/calls"
chmod 666 "$DIR/calls"   # appended to by the daemon under test, whatever user it runs as
cat > /etc/pam.d/"$SERVICE".new <<EOT
auth    [success=1 default=ignore] pam_exec.so type=auth expose_authtok quiet $DIR/pam-check
auth    requisite pam_deny.so
auth    required pam_permit.so
account required pam_permit.so
EOT
mv /etc/pam.d/"$SERVICE".new /etc/pam.d/"$SERVICE"
