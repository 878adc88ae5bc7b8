#!/usr/bin/env bash
# The suite in lanes run at once, each on a local stack of its own (Temporal dev server, S3, emulated hosts):
# within a lane, files run one after another on shared emulated hosts (their 2-VM limit is real); across
# lanes nothing is shared, so most of the waiting (timers, boots, heartbeats, CLI start-up) overlaps. The
# first lanes take listed files (balanced by their measured times); the last lane takes every other file, so
# a new test file runs without being listed.
#   MARINA_TEST_LANES=1 bash scripts/test.sh   runs everything in one lane (easier to read when debugging)
#   bash scripts/test.sh test/job.test.ts      runs the given files in one lane
set -uo pipefail
cd "$(dirname "$0")/.."

if [ $# -gt 0 ] || [ "${MARINA_TEST_LANES:-4}" = 1 ]; then
  exec npx vitest run "$@"
fi

# EC2 hosts at compressed time, and the emulator's conformance.
LANE_1="test/host.test.ts test/ec2-emulator.test.ts test/ec2-emulator-fidelity.test.ts test/host-timeskip.test.ts
  test/host-watch.test.ts test/unit.test.ts test/ssh.test.ts test/sim.test.ts"
# Jobs on both hypervisors, and worker processes killed and restarted.
LANE_2="test/crash.test.ts test/job.test.ts test/static-host.test.ts test/rolling.test.ts"
# The CLI and the integrations, in processes of their own.
LANE_3="test/gitlab.test.ts test/telemetry.test.ts test/operable.test.ts test/signals.test.ts test/deploy.test.ts
  test/ec2-security.test.ts"
LISTED=("$LANE_1" "$LANE_2" "$LANE_3")

exclude=()
for lane in "${LISTED[@]}"; do for f in $lane; do exclude+=(--exclude "$f"); done; done

logs=$(mktemp -d)
start=$(date +%s)
n=${#LISTED[@]}
for i in "${!LISTED[@]}"; do
  # shellcheck disable=SC2086 # the lists are words
  ( npx vitest run ${LISTED[$i]} >"$logs/$i.log" 2>&1; echo $? >"$logs/$i.rc" ) &
done
( npx vitest run "${exclude[@]}" >"$logs/$n.log" 2>&1; echo $? >"$logs/$n.rc" ) &
# Lanes write to files (interleaved output would be unreadable); a line a minute says they are alive.
done_lanes() { ls "$logs"/*.rc 2>/dev/null | wc -l; }
while [ "$(done_lanes)" -le "$n" ]; do
  sleep 5
  if [ $(( ($(date +%s) - start) % 60 )) -lt 5 ]; then
    line="tests: $(( $(date +%s) - start )) s;"
    for i in $(seq 0 "$n"); do line+=" lane $((i + 1)) $(cat "$logs/$i.log" 2>/dev/null | grep -c '✓\|×') done"; done
    echo "$line"
  fi
done
ok=0
summary="tests:"
for i in $(seq 0 "$n"); do
  echo "================ lane $((i + 1)) ================"
  cat "$logs/$i.log"
  rc=$(cat "$logs/$i.rc")
  summary+=" lane $((i + 1)) exit $rc,"
  [ "$rc" = 0 ] || ok=1
done
echo "$summary $(( $(date +%s) - start )) s in all"
rm -rf "$logs"
exit $ok
