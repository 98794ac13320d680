#!/usr/bin/env bash
# The whole test suite. Installs (or updates) the environments first, so it also works on a
# fresh checkout; extra arguments go to pytest (both passes; with a -m of your own, one pass).
#
# Two passes: every test but the `timing` ones on all cores (pytest-xdist, see tests/conftest.py),
# then the `timing` ones alone in one process: they compare wall-clock latencies, which tests
# running beside them would skew. The exit status is the first failing pass's (5, "no test
# selected", counts as a pass: a filter given here may leave one pass empty).
set -uo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh || exit $?

status=0
run() {
  .venv/bin/python -m pytest "$@"
  local rc=$?
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 5 ] && [ "$status" -eq 0 ]; then status=$rc; fi
}
for arg in "$@"; do
  if [ "$arg" = "-m" ]; then run "$@"; exit $status; fi
done
run -m "not timing" "$@"
run -m timing -n 0 "$@"
exit $status
