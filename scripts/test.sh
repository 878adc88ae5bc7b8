#!/usr/bin/env bash
# The suite in two lanes at once, each on a local stack of its own (Temporal dev server, S3, emulated hosts):
# within a lane, files run one after another on shared emulated hosts (their 2-VM limit is real); across
# lanes nothing is shared, so most of the waiting (timers, boots, heartbeats) overlaps. Lane A takes the
# host and worker-process files (balanced by their measured times), lane B every other file, so a new test
# file runs without being listed.
#   MARINA_TEST_LANES=1 bash scripts/test.sh   runs everything in one lane (easier to read when debugging)
#   bash scripts/test.sh test/job.test.ts      runs the given files in one lane
set -uo pipefail
cd "$(dirname "$0")/.."

if [ $# -gt 0 ] || [ "${MARINA_TEST_LANES:-2}" = 1 ]; then
  exec npx vitest run "$@"
fi

LANE_A=(
  test/host.test.ts test/static-host.test.ts test/rolling.test.ts test/ssh.test.ts
  test/ec2-emulator.test.ts test/host-timeskip.test.ts test/host-watch.test.ts
  test/unit.test.ts test/crash.test.ts
)
exclude=()
for f in "${LANE_A[@]}"; do exclude+=(--exclude "$f"); done

logs=$(mktemp -d)
start=$(date +%s)
( npx vitest run "${LANE_A[@]}" >"$logs/a.log" 2>&1; echo $? >"$logs/a.rc" ) &
( npx vitest run "${exclude[@]}" >"$logs/b.log" 2>&1; echo $? >"$logs/b.rc" ) &
# Both lanes write to files (interleaved output would be unreadable); a line a minute says they are alive.
while [ ! -f "$logs/a.rc" ] || [ ! -f "$logs/b.rc" ]; do
  sleep 5
  if [ $(( ($(date +%s) - start) % 60 )) -lt 5 ]; then
    echo "tests: $(( $(date +%s) - start )) s; lane A $(grep -c '✓\|×' "$logs/a.log") done, lane B $(grep -c '✓\|×' "$logs/b.log") done"
  fi
done
for lane in a b; do
  echo "================ lane ${lane^^} ================"
  cat "$logs/$lane.log"
done
rc_a=$(cat "$logs/a.rc"); rc_b=$(cat "$logs/b.rc")
echo "tests: lane A exit $rc_a, lane B exit $rc_b, $(( $(date +%s) - start )) s in all"
rm -rf "$logs"
[ "$rc_a" = 0 ] && [ "$rc_b" = 0 ]
