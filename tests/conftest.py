import pytest


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


@pytest.fixture(params=ISAS)
def isa(request):
    """Runs the test under each SIMD level this machine has, then restores the best one."""
    fastopt.set_isa(request.param)
    yield request.param
    fastopt.set_isa(None)


@pytest.fixture
def threads():
    """Restores the thread count a test changes."""
    before = fastopt.get_num_threads()
    yield
    fastopt.set_num_threads(before)


