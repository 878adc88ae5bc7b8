#!/usr/bin/env bash
# Stand-in for actions/runner's run.sh in the emulated VM (JIT mode only): see runner.py beside it.
cd "$(dirname "$0")" && exec python3 -u runner.py "$@"
