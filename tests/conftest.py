import pytest
from hypothesis import settings


def _has_cuda_driver() -> bool:
    import ctypes.util
    return ctypes.util.find_library("cuda") is not None


# Without a GPU the CUDA backend is tested under Numba's simulator; it must be chosen before numba
# is imported.
if not _has_cuda_driver():
    import os
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")


import fastopt  # noqa: E402  (after the simulator is chosen: fastopt.info() asks numba about CUDA)

ISAS = fastopt.info()["isas_available"]

# hypothesis: the whole suite draws 300 examples a property; the everyday tier
# (--hypothesis-profile=fast) 25
settings.register_profile("full", max_examples=300)
settings.register_profile("fast", max_examples=25)
settings.load_profile("full")


@pytest.fixture(params=[pytest.param(isa, marks=() if isa == ISAS[-1] else pytest.mark.slow) for isa in ISAS])
def isa(request):
    """Runs the test under each SIMD level this machine has, then restores the best one.  The levels
    below the best are in the slow tier: the everyday tier checks them bit for bit against the best
    one instead (tests/test_kernels.py::test_every_isa_gives_the_same_bits)."""
    fastopt.set_isa(request.param)
    yield request.param
    fastopt.set_isa(None)


@pytest.fixture
def threads():
    """Restores the thread count a test changes."""
    before = fastopt.get_num_threads()
    yield
    fastopt.set_num_threads(before)


