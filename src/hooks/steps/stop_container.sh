# Stops a container step from inside its container: after stop_lib.sh (see there, and
# STOP_CONTAINER in ephemeral.rs).
g=$1
case "$g" in ''|*[!0-9]*) echo "arc-hook: invalid grace" >&2; exit 2;; esac
# `test -ef` is in dash, busybox and bash: every sh an image has.
# shellcheck disable=SC3013
# A container exec's parent (the runtime) is outside the container's namespaces; one that shares
# this mount namespace means no container isolates it, and "this namespace" would be the host's.
if [ -e "/proc/$PPID/ns/mnt" ] && [ "/proc/$PPID/ns/mnt" -ef /proc/$$/ns/mnt ]; then
  echo "arc-hook: not in a container of its own: refusing to stop by mount namespace" >&2; exit 2
fi
need_date
# shellcheck disable=SC3013,SC2086 # -ef as above; stat's fields split on purpose
members() {
  M=
  for f in /proc/[0-9]*/stat; do
    x=${f#/proc/}; x=${x%/stat}
    [ "$x" = "$$" ] && continue
    [ "/proc/$x/ns/mnt" -ef /proc/$$/ns/mnt ] || continue
    { read -r l <"$f"; } 2>/dev/null || continue
    set -- ${l##*) }
    [ "$1" = Z ] || [ "$2" = "$$" ] && continue
    M="$M $x"
  done
  M=${M# }
}
signal() { for x in $M; do kill -"$1" "$x" 2>/dev/null; done; }
mark() { :; }
terminate "$g"
