"""Runs the atheris harness over the C API's argument validation (tests/fuzz_c_api.py) for a
bounded time: any crash, unknown status, or write by a failing call fails this test."""
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # fuzzing

pytest.importorskip("atheris")
HARNESS = os.path.join(os.path.dirname(__file__), "fuzz_c_api.py")


def test_fuzz_the_c_api_validation(tmp_path):
    seconds = int(os.environ.get("FASTOPT_FUZZ_SECONDS", "20"))
    run = subprocess.run([sys.executable, HARNESS, f"-max_total_time={seconds}", f"-artifact_prefix={tmp_path}/"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "Done" in run.stderr, run.stderr[-2000:]
