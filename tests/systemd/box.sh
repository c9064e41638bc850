#!/bin/bash
# tests/systemd/box.sh: keysock's real-systemd test harness (DESIGN.md, testing layer 3).
#
# Boots the host's own systemd as PID 1 of new pid, mount, uts, ipc and cgroup namespaces
# (and, with BOX_NET=1, a network namespace holding only lo), on an overlay of the host's
# root whose upper layer is a tmpfs: whatever a test installs or breaks inside is gone when
# the box stops. /sys and /proc/sys are read-only, the console is a file, /dev/kmsg is
# /dev/null, and /etc/systemd/system starts empty, so only the distribution's vendor
# presets run (no getty, no timers of the host image).
#
#   box.sh start DIR [MOUNT]   boot; DIR holds the box's state; MOUNT (a host directory, for
#                              instance the repository) appears read-write at the same path
#                              inside. Prints the host pid of the box's PID 1.
#   box.sh exec DIR CMD...     run CMD inside, with a clean environment
#   box.sh stop DIR            power off, kill what is left, remove DIR and the cgroup
#
# Needs root, util-linux (unshare, nsenter) and systemd.
set -euo pipefail
me=$(readlink -f "$0")
usage() { echo "usage: box.sh start DIR [MOUNT] | exec DIR CMD... | stop DIR" >&2; exit 64; }
[ $# -ge 2 ] || usage
verb=$1 dir=$(readlink -m "$2"); shift 2

# The box gets a cgroup subtree of its own, which becomes the root of its cgroup namespace.
# On a pure cgroup v2 host that is under /sys/fs/cgroup; on a hybrid one, under unified/.
cgroot=/sys/fs/cgroup
[ "$(stat -fc %T "$cgroot")" = cgroup2fs ] || cgroot=/sys/fs/cgroup/unified
net_flag() { [ "${BOX_NET:-0}" = 1 ] && echo "$1" || true; }

case $verb in
start)
  mount_dir=${1:-}
  mkdir -p "$dir"
  cg=keysock-box-$(basename "$dir")-$$
  echo "$cg" > "$dir/cgroup"
  mkdir -p "$cgroot/$cg/init"
  # shellcheck disable=SC2046
  setsid unshare --pid --fork --mount --uts --ipc --propagation private $(net_flag --net) \
    "$me" _enter-cgroup "$dir" "$cgroot/$cg/init" "$mount_dir" </dev/null >"$dir/boot.log" 2>&1 &
  echo $! > "$dir/unshare.pid"
  # PID 1 of the box is unshare's child, once it has exec'd systemd.
  init=
  for _ in $(seq 1 200); do
    c=$(cat /proc/"$(cat "$dir/unshare.pid")"/task/*/children 2>/dev/null | awk '{print $1}')
    if [ -n "$c" ] && [ "$(cat /proc/"$c"/comm 2>/dev/null)" = systemd ]; then init=$c; break; fi
    sleep 0.05
  done
  [ -n "$init" ] || { echo "box.sh: systemd did not start" >&2; cat "$dir/boot.log" >&2; exit 1; }
  echo "$init" > "$dir/init.pid"
  state=
  for _ in $(seq 1 600); do    # up to 60 s for the boot to finish
    state=$("$me" exec "$dir" systemctl is-system-running 2>/dev/null || true)
    case $state in running | degraded) break ;; esac
    sleep 0.1
  done
  echo "box.sh: init=$init state=${state:-unknown}" >&2
  echo "$init"
  ;;

_enter-cgroup)   # PID 1 of the new pid namespace, still on the host's root; $1 = its cgroup
  echo $$ > "$1/cgroup.procs"
  exec unshare --cgroup "$me" _boot "$dir" "${2:-}"
  ;;

_boot)           # still PID 1, now in its own cgroup namespace: build the root, exec systemd
  mount_dir=${1:-}
  mount -t tmpfs -o mode=0755 keysock-box "$dir"   # private to this mount namespace
  mkdir -p "$dir/upper" "$dir/work" "$dir/root"
  r=$dir/root
  mount -t overlay overlay -o "lowerdir=/,upperdir=$dir/upper,workdir=$dir/work" "$r"
  mount -t proc proc "$r/proc"
  for p in sys sysrq-trigger; do   # no sysctl or SysRq reaching the host
    [ -e "$r/proc/$p" ] || continue
    mount --bind "$r/proc/$p" "$r/proc/$p"
    mount -o remount,bind,ro "$r/proc/$p"
  done
  mount --bind /sys "$r/sys"
  mount -o remount,bind,ro "$r/sys"
  mount -t cgroup2 cgroup2 "$r/sys/fs/cgroup"     # only our subtree, through the namespace
  mount --rbind /dev "$r/dev"
  mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$r/dev/shm"
  : > "$r/var/log/box-console.log"
  mount --bind "$r/var/log/box-console.log" "$r/dev/console"
  mount --bind /dev/null "$r/dev/kmsg"
  if [ -n "$mount_dir" ]; then mkdir -p "$r$mount_dir"; mount --bind "$mount_dir" "$r$mount_dir"; fi
  mount -t tmpfs -o mode=0755 tmpfs "$r/etc/systemd/system"
  for u in console-getty.service systemd-modules-load.service; do
    ln -s /dev/null "$r/etc/systemd/system/$u"
  done
  mkdir -p "$r/etc/systemd/journald.conf.d"
  printf '[Journal]\nStorage=volatile\nReadKMsg=no\n' > "$r/etc/systemd/journald.conf.d/box.conf"
  cd "$r"
  mkdir -p .host
  pivot_root . .host
  umount -l /.host
  rmdir /.host
  cd /
  # systemd in a container leaves / private; its credential helper (LoadCredential=,
  # DynamicUser=) mounts in a child namespace and needs those mounts to reach PID 1.
  mount --make-rshared /
  exec env -i container=keysock-box TERM=dumb /lib/systemd/systemd --log-level=info --show-status=no
  ;;

exec)
  [ $# -ge 1 ] || usage
  init=$(cat "$dir/init.pid")
  # shellcheck disable=SC2046
  exec nsenter --target "$init" --mount --uts --ipc --pid --cgroup $(net_flag --net) \
    env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    TERM=dumb SYSTEMD_PAGER= LANG=C.UTF-8 "$@"
  ;;

stop)
  init=$(cat "$dir/init.pid" 2>/dev/null || true)
  outer=$(cat "$dir/unshare.pid" 2>/dev/null || true)
  if [ -n "$init" ] && kill -0 "$init" 2>/dev/null; then
    kill -s RTMIN+4 "$init" 2>/dev/null || true    # systemd's "poweroff" signal
    for _ in $(seq 1 100); do kill -0 "$init" 2>/dev/null || break; sleep 0.05; done
    # Killing PID 1 kills every process of its pid namespace.
    if kill -0 "$init" 2>/dev/null; then kill -KILL "$init" 2>/dev/null || true; fi
  fi
  if [ -n "$outer" ]; then
    for _ in $(seq 1 100); do kill -0 "$outer" 2>/dev/null || break; sleep 0.05; done
  fi
  if [ -f "$dir/cgroup" ]; then
    cg=$cgroot/$(cat "$dir/cgroup")
    [ -d "$cg" ] && find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    if [ -d "$cg" ]; then echo "box.sh: cgroup $cg left behind" >&2; fi
  fi
  rm -rf "$dir"
  ;;
*) usage ;;
esac
