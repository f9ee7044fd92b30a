#!/usr/bin/env bash
# Shows that every invariant of scripts/soak.sh can fail: runs a short
# soak with each fault injected and checks that it ends in
# "soak: FAIL (...)" naming that invariant. As root, like soak.sh.
#
#   sudo scripts/soak-faults.sh                  every fault (about 20 min)
#   sudo FAULTS="fd cut" scripts/soak-faults.sh  some of them
#
# The faults (SOAK_FAULT, read only by the soak harness, or by sknockd
# built with -tags soakfault):
#   grant-prober  the prober's address knocks once with a valid certificate → prober
#   drop-knocks   half the knocks dropped in the raw table → knock_open
#   slow-reentry  knocks dropped for 4 s after each restart → reentry
#   late-revoke   a CRL revocation announced, its CRL published 5 s later → revoked_outlived
#   forget-conns  each restart without sknockd's saved connection record → revoked_outlived or
#                 revoked_outlived_grantless (needs a revocation after a restart: SOAK_SECONDS=600)
#   cut           the echo service resets one held connection → unrevoked_cut
#   corrupt       the echo service flips one byte → bytes
#   heap          sknockd leaks 4 MiB per reload → heap
#   fd            sknockd leaks three descriptors per reload → fds
#   goroutine     sknockd leaks three goroutines per reload → goroutines
#   log           sknockd writes 300 lines a second → log_rate
#   watchdog      sknockd stopped (SIGSTOP) past WatchdogSec → watchdog
set -uo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${SOAK_SECONDS:-90}
declare -A WANT=(
  [grant-prober]=prober [drop-knocks]=knock_open [slow-reentry]=reentry [late-revoke]=revoked_outlived
  [forget-conns]='revoked_outlived|revoked_outlived_grantless'
  [cut]=unrevoked_cut [corrupt]=bytes [heap]=heap [fd]=fds [goroutine]=goroutines [log]=log_rate [watchdog]=watchdog
)
FAULTS=${FAULTS:-"grant-prober drop-knocks slow-reentry late-revoke forget-conns cut corrupt heap fd goroutine log watchdog"}
TABLES=${TABLES:-$(mktemp -d /tmp/soak-faults.XXXXXX)}   # each run's table, kept
mkdir -p "$TABLES"
missed=()
echo "soak-faults: each run's table in $TABLES"
printf '| fault | wanted | last line |\n|---|---|---|\n'
for f in $FAULTS; do
  want=${WANT[$f]:?unknown fault $f}
  extra=()
  [ "$f" = watchdog ] && extra=(SOAK_WATCHDOG=6)
  out=$(env SOAK_SECONDS="$SECONDS_EACH" SOAK_FAULT="$f" OUT="$TABLES/$f.md" "${extra[@]}" scripts/soak.sh 2>"$TABLES/$f.err")
  last=$(printf '%s\n' "$out" | tail -n 1)
  ok=caught
  failed=" $(echo "$last" | sed 's/^soak: FAIL (//; s/)$//; s/,/ /g') "
  ok="**NOT caught**"
  if [[ "$last" == "soak: FAIL ("*")" ]]; then
    IFS='|' read -ra alts <<<"$want"   # any one of them
    for w in "${alts[@]}"; do [[ "$failed" == *" $w "* ]] && ok=caught; done
  fi
  [ "$ok" = caught ] || missed+=("$f")
  printf '| %s | %s | %s (%s) |\n' "$f" "$want" "$last" "$ok"
done
if [ "${#missed[@]}" -gt 0 ]; then
  echo "soak-faults: NOT caught: ${missed[*]}"
  exit 1
fi
echo "soak-faults: every fault caught"
