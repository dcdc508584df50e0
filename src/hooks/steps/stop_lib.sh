# shellcheck shell=sh
# What both stop programs share, put before each (stop_step.sh, stop_container.sh):
#   sh -c "<this file><stop_step.sh>" arc-hook-stop DIR GRACE_SECONDS
#   sh -c "<this file><stop_container.sh>" arc-hook-stop GRACE_SECONDS
# The part after it defines `members` (sets M, the processes to stop, space-separated),
# `signal SIG` and `mark` (records the cancel), then calls `terminate GRACE_SECONDS`, which
# prints `gone`, `ended N K` (N processes, K of them killed) or `survived PIDS` (and exits 1).
F=; sleep 0.001 2>/dev/null && F=1
nap() { if [ -n "$F" ]; then sleep 0.1; else sleep 1; fi; }
# shellcheck disable=SC2317 # used by stop_step.sh only
ticks() { if [ -n "$F" ]; then echo $(($1*10)); else echo "$1"; fi; }
need_date() { date +%s >/dev/null 2>&1 || { echo "arc-hook: the image has no date command" >&2; exit 2; }; }
# M is pids (digits) split on purpose.
# shellcheck disable=SC2086
count() { set -- $M; echo $#; }
terminate() {
  members
  if [ -z "$M" ]; then mark; echo gone; exit 0; fi
  n=$(count)
  signal TERM
  # The grace is time, not a count of scans (a scan of a busy node's /proc is slow).
  end=$(( $(date +%s) + $1 ))
  while [ "$(date +%s)" -lt "$end" ]; do
    nap; members
    if [ -z "$M" ]; then mark; echo "ended $n 0"; exit 0; fi
  done
  k=$(count)
  signal KILL
  end=$(( $(date +%s) + 2 ))
  while :; do
    nap; members
    if [ -z "$M" ]; then mark; echo "ended $n $k"; exit 0; fi
    [ "$(date +%s)" -lt "$end" ] || break
    signal KILL
  done
  echo "survived $M"; exit 1
}
