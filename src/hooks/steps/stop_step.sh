# Stops a detached script step: after stop_lib.sh (see there, and STOP in detached.rs).
d=$1 g=$2
case "$g" in ''|*[!0-9]*) echo "arc-hook: invalid grace" >&2; exit 2;; esac
if mkdir -p -- "${d%/*}" 2>/dev/null && mkdir -- "$d" 2>/dev/null; then
  echo cancelled >"$d/status"; echo not-started; exit 0
fi
if [ ! -d "$d" ] || [ -L "$d" ]; then echo "arc-hook: the step's directory $d is missing or replaced" >&2; exit 2; fi
need_date
p='' i=0
while :; do
  p=$(head -c 12 "$d/pid" 2>/dev/null)
  case "$p" in ''|*[!0-9]*) ;; *) break;; esac
  i=$((i+1)); [ "$i" -gt "$(ticks 3)" ] && { echo gone; exit 0; }
  nap
done
case "$p" in 0|1) echo "arc-hook: the step's pid file names pid $p" >&2; exit 2;; esac
# With setsid (the usual case) the step's processes are its session: one pass finds them. Without
# it, descendants are followed by parent pid, pass after pass while new ones turn up.
# /proc/PID/stat's fields after the command name, split on purpose (numbers and a state letter).
S=
# shellcheck disable=SC2086
{ read -r l <"/proc/$p/stat"; } 2>/dev/null && set -- ${l##*) } && [ "$3" = "$p" ] && S=1
members() {
  A=" $p " M=" " grown=1 pass=0
  while [ -n "$grown" ] && [ "$pass" -lt 4 ]; do
    grown='' pass=$((pass+1))
    for f in /proc/[0-9]*/stat; do
      x=${f#/proc/}; x=${x%/stat}
      [ "$x" = "$$" ] && continue
      case "$M" in *" $x "*) continue;; esac
      { read -r l <"$f"; } 2>/dev/null || continue
      # shellcheck disable=SC2086
      set -- ${l##*) }
      [ "$1" = Z ] && continue
      case "$A" in *" $x "*|*" $2 "*) ;; *) [ "$3" = "$p" ] || [ "$4" = "$p" ] || continue;; esac
      M="$M$x " A="$A$x "; [ -z "$S" ] && grown=1
    done
  done
  M=${M# }; M=${M% }
}
signal() { kill -"$1" -"$p" 2>/dev/null; for x in $M; do kill -"$1" "$x" 2>/dev/null; done; }
mark() { [ -f "$d/status" ] || { echo cancelled >"$d/status.new" && mv -f "$d/status.new" "$d/status"; }; }
: >"$d/cancelling"
terminate "$g"
