#!/usr/bin/env bash
# Runs a command with the wall clock moved to DATE (and running on from there), for the
# date-sensitive tests: `scripts/at-date.sh 2026-12-31T23:59:30Z cmd args…`. libfaketime
# shifts CLOCK_REALTIME by a fixed offset, the same in every process the command starts
# (so a test and the `ledger` processes it spawns agree on the time); monotonic clocks,
# which timers and timeouts use, are left alone.
set -euo pipefail
when=${1:?usage: at-date.sh DATE COMMAND...}
shift
lib=$(ls /usr/lib/*/faketime/libfaketime.so.1 2>/dev/null | head -1)
[ -n "$lib" ] || { echo "at-date: libfaketime not found (apt-get install faketime)" >&2; exit 1; }
target=$(date -u -d "$when" +%s) || { echo "at-date: bad date $when" >&2; exit 1; }
offset=$((target - $(date -u +%s)))
if [ "$offset" -ge 0 ]; then offset="+$offset"; fi
export LD_PRELOAD="$lib${LD_PRELOAD:+:$LD_PRELOAD}"
export FAKETIME="${offset}s"
export FAKETIME_DONT_FAKE_MONOTONIC=1
exec "$@"
