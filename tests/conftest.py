import pytest

import fastopt

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
