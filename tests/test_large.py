"""64-bit indexing: a call over more than 2^31 elements (through l2_grad: one buffer written, one
read).  Needs ~9 GB of memory; skipped where less is available (set FASTOPT_TEST_LARGE=1 to force)."""
import os

import numpy as np
import pytest


import fastopt

pytestmark = pytest.mark.slow  # arrays of several GB


def available_gib() -> float:
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("MemAvailable")) / 2**20
    except (OSError, StopIteration):
        return 0.0


@pytest.mark.skipif(not os.environ.get("FASTOPT_TEST_LARGE") and available_gib() < 16,
                    reason="needs ~9 GB free (FASTOPT_TEST_LARGE=1 forces it)")
def test_more_than_2_to_the_31_elements():
    n = (1 << 31) + 4097
    params = np.zeros(n, np.float32)       # read only: untouched pages cost no memory
    grads = np.zeros(n, np.float32)        # written: ~8.6 GB
    marks = [0, 1, (1 << 31) - 1, 1 << 31, (1 << 31) + 1, (1 << 31) + 2048, n - 1]
    params[marks] = 2.0
    fastopt.l2_grad(grads, params, lam=0.25)
    assert grads[marks].tolist() == [0.5] * len(marks)
    probe = np.array([2, (1 << 31) - 2, (1 << 31) + 2, n - 2])
    assert grads[probe].tolist() == [0.0] * len(probe)
    assert fastopt.global_norm(grads) == pytest.approx(0.5 * np.sqrt(len(marks)))
