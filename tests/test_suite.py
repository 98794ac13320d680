"""The test suite's own machinery, which CI's time rests on: pytest-xdist hands out whole modules,
so module fixtures (twins, exports, a trained supernet) are built once per run."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import defaultdict

from tests.conftest import REPO

QUICK_MODULES = ["tests/test_measure.py", "tests/test_store.py", "tests/test_kernels.py"]


def test_each_module_runs_on_one_worker():
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "2", "-v", "-m", "not timing",
                           *QUICK_MODULES], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    workers = defaultdict(set)
    for worker, module in re.findall(r"\[(gw\d+)\].* PASSED (tests/test_\w+\.py)::", proc.stdout):
        workers[module].add(worker)
    assert sorted(workers) == sorted(QUICK_MODULES), proc.stdout[-3000:]
    assert all(len(w) == 1 for w in workers.values()), dict(workers)
    assert len(set().union(*workers.values())) == 2  # and the modules were spread over both workers
