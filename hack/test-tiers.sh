#!/usr/bin/env bash
# `make test`'s test tiers, two at a time: each pair is one tier that simulates its nodes (kwok) or
# runs no cluster, and one that runs a real node (tests/e2e, tests/node). The real-node tiers spend most of their time
# waiting for Pods and PostgreSQL, so on a 2-core CI machine a pair takes about as long as its
# longer tier instead of the sum (a cold CI run must stay under 60 minutes). Every tier starts its
# own cluster and operator (the real node in its own network namespace slot), so they share nothing
# but the machine.
#
# Each tier's output goes to a log that is printed, whole, when the tier ends; the script fails if
# any tier failed, after both of its pair have ended.
#
# Usage: hack/test-tiers.sh   (PYTHON, PYTEST_ARGS and SAMPLEDB_REQUIRE_PG_MAJORS from make)
set -uo pipefail

PYTHON=${PYTHON:-.venv/bin/python}
read -r -a pytest_args <<<"${PYTEST_ARGS:-}"
logs=$(mktemp -d)
failed=()

log() { printf '\n[tiers %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# start NAME PYTEST-ARGS...: run one tier in the background; its pid goes to pids[NAME].
declare -A pids
start() {
  local name=$1; shift
  # The subshell notes when the tier itself ended (its pair may end later).
  (
    begin=$SECONDS
    "$PYTHON" -m pytest "$@" ${pytest_args[@]+"${pytest_args[@]}"} >"$logs/$name.log" 2>&1
    rc=$?
    echo $((SECONDS - begin)) >"$logs/$name.seconds"
    exit $rc
  ) &
  pids[$name]=$!
  log "started $name: pytest $*"
}

# finish NAME...: wait for each tier, print its log, remember a failure.
finish() {
  local name rc
  for name in "$@"; do
    wait "${pids[$name]}"; rc=$?
    log "$name ended with $rc after $(cat "$logs/$name.seconds") s; its output:"
    cat "$logs/$name.log"
    [ "$rc" -eq 0 ] || failed+=("$name")
  done
}

# The two longest together, then the other two. The second pair runs two real nodes side by side
# (the fault suite's data scenarios, started a few minutes in, and the user journey), each in its
# own network namespace slot (`network.claim` skips a slot taken at the same moment).
start fast tests/unit tests/postgres tests/integration
start e2e tests/e2e
finish fast e2e
start faults tests/faults
start node tests/node
finish faults node

if [ ${#failed[@]} -gt 0 ]; then
  log "FAILED tiers: ${failed[*]} (logs in $logs)"
  exit 1
fi
log "every tier passed"
