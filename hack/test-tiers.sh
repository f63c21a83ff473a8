#!/usr/bin/env bash
# `make test`'s test tiers, in two lanes side by side: one of tiers that run a real node (tests/node,
# tests/e2e), one of tiers that simulate their nodes (kwok) or run no cluster. The real-node tiers
# spend most of their time waiting for Pods and PostgreSQL, so on a 2-core CI machine the lanes
# take about as long as the longer one instead of the sum (a cold CI run must stay under 60 minutes). Every tier starts its
# own cluster and operator (the real node in its own network namespace slot), so they share nothing
# but the machine.
#
# Each tier's output goes to a log that is printed, whole, when the tier ends; the script fails if
# any tier failed, after both lanes have ended.
#
# Usage: hack/test-tiers.sh   (PYTHON, PYTEST_ARGS and SAMPLEDB_REQUIRE_PG_MAJORS from make)
set -uo pipefail

PYTHON=${PYTHON:-.venv/bin/python}
read -r -a pytest_args <<<"${PYTEST_ARGS:-}"
logs=$(mktemp -d)
failed=()

log() { printf '\n[tiers %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# tier NAME PYTEST-ARGS...: run one tier; its log is printed whole when it ends (under a lock: the
# other lane may be printing), and a failure is noted in $logs/failed. Its temporary files (the
# operator's, the cluster's and the Pods' logs) go to $logs/NAME and are kept when it fails: in
# pytest's default place, the next three runs on the machine would remove them.
tier() {
  local name=$1 begin=$SECONDS rc; shift
  log "started $name: pytest $*"
  "$PYTHON" -m pytest --basetemp="$logs/$name" "$@" ${pytest_args[@]+"${pytest_args[@]}"} >"$logs/$name.log" 2>&1
  rc=$?
  [ "$rc" -eq 0 ] && rm -rf "${logs:?}/$name"
  {
    flock 9
    log "$name ended with $rc after $((SECONDS - begin)) s; its output:"
    cat "$logs/$name.log"
  } 9>"$logs/print.lock"
  [ "$rc" -eq 0 ] || echo "$name" >>"$logs/failed"
}

# Two lanes, each running its tiers one after the other: the real node's Pods (tests/node, the
# longest tier, mostly waiting) then the installs (tests/e2e), beside the tiers that simulate their
# nodes or run none (tests/unit, tests/postgres, tests/integration: mostly CPU) then the fault
# suite (whose data scenarios run a real node in a slot of their own). Measured in CI (warm,
# 2026-11-28): node 1,254 s then e2e 381 s, beside fast 913 s then faults 620 s: 27 min 47 s in all,
# where the two pairs before took 33 min 29 s with fewer tests.
( tier node tests/node; tier e2e tests/e2e ) &
lane_a=$!
( tier fast tests/unit tests/postgres tests/integration; tier faults tests/faults ) &
lane_b=$!
wait "$lane_a" "$lane_b"
[ -f "$logs/failed" ] && mapfile -t failed <"$logs/failed"

if [ ${#failed[@]} -gt 0 ]; then
  log "FAILED tiers: ${failed[*]} (logs in $logs)"
  exit 1
fi
log "every tier passed"
