# shellcheck shell=sh
# The step follower every exec of a detached script step runs:
#   sh -c "<exit codes><this file>" arc-hook-step DIR SCRIPT LOG_OFFSET
# src/hooks/steps/detached.rs says what it does (FOLLOW) and prepends the follower's exit codes,
# defined there once: EXIT_LOST, EXIT_USAGE, EXIT_NOT_STARTED, EXIT_CANCELLED.
: "${EXIT_LOST:?}" "${EXIT_USAGE:?}" "${EXIT_NOT_STARTED:?}" "${EXIT_CANCELLED:?}"
d=$1 s=$2 o=$3
case "$o" in ''|*[!0-9]*) echo "arc-hook: invalid log offset" >&2; exit "$EXIT_USAGE";; esac
reg() { [ -f "$1" ] && [ ! -L "$1" ]; }
size() { if reg "$1"; then wc -c <"$1" | tr -d ' '; else echo 0; fi; }
if mkdir -p -- "${d%/*}" 2>/dev/null && mkdir -- "$d" 2>/dev/null; then
  for x in "${d%/*}"/*; do [ "$x" != "$d" ] && [ -f "$x/status" ] && rm -rf -- "$x"; done
  if [ -f "$s" ]; then
    : >"$d/log"
    S=; command -v setsid >/dev/null 2>&1 && S=setsid
    # The inner program expands its own $1 and $2 (hence the single quotes).
    # shellcheck disable=SC2016
    $S sh -c 'echo $$ >"$1/pid"; sh "$2" >>"$1/log" 2>&1 </dev/null; c=$?; echo $c >"$1/status.new"; mv -f "$1/status.new" "$1/status"' arc-hook-step "$d" "$s" </dev/null >/dev/null 2>&1 &
    echo $! >"$d/pid"
  else
    echo nostart >"$d/status"
  fi
elif [ ! -d "$d" ]; then
  echo "arc-hook: cannot create the step's directory $d" >&2; exit "$EXIT_USAGE"
fi
F=; sleep 0.001 2>/dev/null && F=1
idle=0 waited=0
while :; do
  if [ ! -d "$d" ] || [ -L "$d" ] || [ -L "${d%/*}" ]; then
    echo "arc-hook: the step's directory $d was removed or replaced (by the step itself?); its result is lost" >&2; exit "$EXIT_LOST"
  fi
  fin=; reg "$d/status" && fin=1
  got=
  z=$(size "$d/log"); if [ "$z" -gt "$o" ]; then tail -c +$((o+1)) "$d/log" | head -c $((z-o)); o=$z; got=1; fi
  if [ -n "$fin" ]; then
    c=$(head -c 16 "$d/status")
    case "$c" in
      nostart) echo "arc-hook: the step did not start: its start script $s is missing from the pod" >&2; exit "$EXIT_NOT_STARTED";;
      cancelled) echo "arc-hook: the step was cancelled" >&2; exit "$EXIT_CANCELLED";;
      ''|*[!0-9]*) echo "arc-hook: the step's status file holds no exit code" >&2; exit "$EXIT_LOST";;
    esac
    [ "$c" -gt 255 ] && c=255
    exit "$c"
  fi
  if [ -n "$got" ]; then idle=0; else idle=$((idle+1)); fi
  p=$(head -c 12 "$d/pid" 2>/dev/null)
  case "$p" in
    ''|*[!0-9]*) waited=$((waited+1))
      if [ "$waited" -gt 600 ]; then echo "arc-hook: the step's start was interrupted before it ran" >&2; exit "$EXIT_NOT_STARTED"; fi;;
    *) if ! kill -0 "$p" 2>/dev/null && ! reg "$d/status"; then
         [ -e "$d/cancelling" ] && { echo "arc-hook: the step was cancelled" >&2; exit "$EXIT_CANCELLED"; }
         sleep 1; reg "$d/status" && continue
         echo "arc-hook: the step stopped without recording an exit code (killed, or its status file was removed)" >&2; exit "$EXIT_LOST"
       fi;;
  esac
  if [ -z "$F" ]; then sleep 1
  elif [ "$idle" -lt 5 ]; then sleep 0.02
  elif [ "$idle" -lt 20 ]; then sleep 0.2
  else sleep 1; fi
done
