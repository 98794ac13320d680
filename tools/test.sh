#!/usr/bin/env bash
# The whole test suite. Installs (or updates) the environments first, so it also works on a
# fresh checkout; extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
exec .venv/bin/python -m pytest "$@"
