"""The built library: its version, SIMD dispatch, exported symbols and vectorized hot loops."""
import glob
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys

import pytest

import fastopt

pytestmark = pytest.mark.slow  # builds

LIBRARY = sorted(glob.glob(os.path.join(os.path.dirname(fastopt.__file__), "lib", "libfastopt.so*")))[0]


def test_info():
    info = fastopt.info()
    assert info["version"] == fastopt.__version__ == importlib.metadata.version("fastopt")
    assert info["isa"] in info["isas_available"]
    assert info["num_threads"] >= 1


@pytest.mark.parametrize("variable,value,key,expected", [
    ("FASTOPT_ISA", "baseline", "isa", "'baseline'"),
    ("FASTOPT_NUM_THREADS", "3", "num_threads", "3"),
])
def test_environment_settings(variable, value, key, expected):
    code = f"import fastopt; print(repr(fastopt.info()[{key!r}]))"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, variable: value},
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == expected


def test_unavailable_isa_in_environment_warns():
    code = "import fastopt; print(fastopt.info()['isa'])"
    run = subprocess.run([sys.executable, "-W", "always", "-c", code], env={**os.environ, "FASTOPT_ISA": "sse9"},
                         capture_output=True, text=True, check=True)
    assert "FASTOPT_ISA=sse9 is not available" in run.stderr
    assert run.stdout.strip() == fastopt.info()["isas_available"][-1]


@pytest.mark.skipif(not shutil.which("nm"), reason="needs binutils: nm, objdump (Debian: apt install binutils)")
def test_only_fastopt_symbols_are_exported():
    out = subprocess.run(["nm", "-D", "--defined-only", LIBRARY], capture_output=True, text=True, check=True).stdout
    names = [line.split()[-1] for line in out.splitlines() if line.split()[1] in "TDRB"]
    assert names and all(n.startswith("fastopt_") for n in names), names


def disassembly(function: str) -> str:
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", LIBRARY], capture_output=True, text=True,
                         check=True).stdout
    blocks = re.findall(rf"<{function}>:\n(.*?)\n\n", out, re.S)
    assert blocks, f"{function} not found in {LIBRARY}"
    return blocks[0]


# For each SIMD level, the registers its packed sqrt and divide must use.
REGISTERS = {"baseline": "xmm", "avx2": "ymm", "avx512": "zmm", "neon": "v"}


@pytest.mark.skipif(not shutil.which("objdump"), reason="needs binutils: nm, objdump (Debian: apt install binutils)")
@pytest.mark.parametrize("dtype,suffix", [("f32", "ps"), ("f64", "pd")])
@pytest.mark.parametrize("isa", [i for i in REGISTERS if i in fastopt.info()["isas_available"] and i != "neon"])
def test_adam_hot_loop_is_vectorized(isa, dtype, suffix):
    """Packed sqrt and divide on the level's widest registers: the loop really is SIMD."""
    code = disassembly(f"adam_span_{dtype}_{isa}")
    reg = REGISTERS[isa]
    assert re.search(rf"v?sqrt{suffix}\s+%{reg}", code), f"no packed sqrt on {reg}"
    assert re.search(rf"v?div{suffix}\s+.*%{reg}", code), f"no packed divide on {reg}"
