"""The NEON build: the C library cross-compiled for AArch64 (Debian's gcc-aarch64-linux-gnu) and run
under qemu-user: its ctest, the NEON kernels' code (vector registers, no fused multiply-adds), the
same bits as the x86-64 baseline level for every optimizer and dtype, and, given an AArch64 Python
(.ci/aarch64-python), the Python kernel tests on the NEON build.  Skips, saying why, without the
cross compiler or qemu (Debian: apt install gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user)."""
import os
import re
import shutil
import subprocess
import sys

import pytest

import fastopt

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
CC = "aarch64-linux-gnu-gcc"
OBJDUMP = "aarch64-linux-gnu-objdump"  # binutils-aarch64-linux-gnu, a dependency of gcc-aarch64-linux-gnu
LIBC = "/usr/aarch64-linux-gnu"         # libc6-dev-arm64-cross (only a Recommends of the compiler)
QEMU = shutil.which("qemu-aarch64") or shutil.which("qemu-aarch64-static")
PACKAGES = "Debian: apt install gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user"
# A directory .ci/aarch64-python prepared: Debian's arm64 CPython unpacked in sysroot/, the aarch64
# wheels of numpy, cffi, ml_dtypes, pytest and hypothesis in site/
PYTHON_DIR = os.environ.get("FASTOPT_AARCH64_PYTHON", "")


def _missing() -> str:
    needs = [what for what, ok in (("cmake", shutil.which("cmake")), (CC, shutil.which(CC)), ("qemu-aarch64", QEMU),
                                   (f"the AArch64 C library in {LIBC}", os.path.exists(f"{LIBC}/include/stdio.h")))
             if not ok]
    return f"needs {', '.join(needs)} ({PACKAGES})" if needs else ""


pytestmark = [pytest.mark.slow,  # cross builds, emulation
              pytest.mark.skipif(bool(_missing()), reason=_missing() or "-")]


def sh(*cmd, **kw):
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    assert out.returncode == 0, f"{' '.join(map(str, cmd))}\n{out.stdout[-6000:]}\n{out.stderr[-6000:]}"
    return out.stdout


def emulated(*cmd, **kw):
    return sh(QEMU, "-L", LIBC, *cmd, **kw)


def aarch64_python():
    """(sysroot, site, pythonX.Y) of FASTOPT_AARCH64_PYTHON when it can be used here, else why not."""
    sysroot, site = os.path.join(PYTHON_DIR, "sysroot"), os.path.join(PYTHON_DIR, "site")
    if not (PYTHON_DIR and os.path.isdir(site) and os.path.isdir(os.path.join(sysroot, "usr", "bin"))):
        return "needs an AArch64 Python: FASTOPT_AARCH64_PYTHON=DIR, as .ci/aarch64-python DIR prepares it"
    names = [n for n in os.listdir(os.path.join(sysroot, "usr", "bin")) if re.fullmatch(r"python3\.\d+", n)]
    here = f"python{sys.version_info.major}.{sys.version_info.minor}"
    if here not in names:  # the binding's build (FindPython) takes this interpreter with the target's headers
        return f"the AArch64 Python in {PYTHON_DIR} is {', '.join(names) or 'missing'}, this one {here}"
    return sysroot, site, here


@pytest.fixture(scope="module")
def cross(tmp_path_factory):
    """The library and its C tests cross-built for AArch64 (the Python binding too, when there is an
    AArch64 Python to build it for), installed in the wheel's layout under stage/."""
    tmp = tmp_path_factory.mktemp("neon")
    toolchain = tmp / "aarch64.cmake"
    toolchain.write_text(f"""set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER {CC})
set(CMAKE_CROSSCOMPILING_EMULATOR {QEMU};-L;{LIBC})
set(CMAKE_FIND_ROOT_PATH {LIBC})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
""")
    options = [f"-DCMAKE_TOOLCHAIN_FILE={toolchain}", "-DFASTOPT_BUILD_TESTS=ON", "-DCMAKE_BUILD_TYPE=Release"]
    python = aarch64_python()
    if isinstance(python, tuple):
        sysroot, _, name = python
        # The binding's C source comes from this (host) Python's cffi; it compiles against the
        # target's headers (Debian's pyconfig.h includes <aarch64-linux-gnu/pythonX.Y/pyconfig.h>).
        # SKBUILD: the wheel's layout (fastopt/lib, the RPATH $ORIGIN/lib)
        options += ["-DSKBUILD=ON", "-DFASTOPT_BUILD_PYTHON=ON", f"-DPython_EXECUTABLE={sys.executable}",
                    f"-DPython_INCLUDE_DIR={sysroot}/usr/include/{name}", f"-DCMAKE_C_FLAGS=-idirafter {sysroot}/usr/include"]
    build = tmp / "build"
    sh("cmake", "-S", ROOT, "-B", build, *options)
    sh("cmake", "--build", build, "--parallel", "2")
    sh("cmake", "--install", build, "--prefix", tmp / "stage")
    return tmp


def test_ctest_under_qemu(cross):
    """The C tests pass, run under the emulator, at the one level AArch64 has: neon."""
    out = sh("ctest", "-V", cwd=cross / "build")
    assert "100% tests passed" in out, out[-3000:]
    assert re.search(rf"Test command: \S*{os.path.basename(QEMU)}\S* .*test_fastopt", out), "not run under qemu"
    assert re.search(r"fastopt [0-9.]+, SIMD levels neon\n", out), "the C tests did not see the neon level"
    assert "all C tests passed" in out


def test_the_build_is_aarch64_and_selects_neon(cross):
    exe = cross / "build" / "test_fastopt"
    with open(exe, "rb") as f:
        head = f.read(20)
    assert head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == 183, "not an AArch64 ELF"  # EM_AARCH64
    out = emulated(exe, env={**os.environ, "FASTOPT_ISA": "neon"})
    assert "SIMD levels neon\n" in out and "all C tests passed" in out


def disassembly(library) -> dict:
    """{function: its instructions} of a library, by aarch64-linux-gnu-objdump."""
    out = sh(OBJDUMP, "-d", "--no-show-raw-insn", library)
    return dict(re.findall(r"^[0-9a-f]+ <([^>]+)>:\n(.*?)(?:\n\n|\Z)", out, re.S | re.M))


@pytest.fixture(scope="module")
def code(cross):
    if not shutil.which(OBJDUMP):
        pytest.skip(f"needs {OBJDUMP} (Debian: apt install binutils-aarch64-linux-gnu)")
    return disassembly(cross / "build" / "libfastopt.so")


@pytest.mark.parametrize("dtype,arrangement", [("f32", "4s"), ("f64", "2d")])
def test_adam_hot_loop_is_vectorized(code, dtype, arrangement):
    """Packed sqrt and divide on the 128-bit vector registers: the NEON loop really is SIMD."""
    body = code[f"adam_span_{dtype}_neon"]
    assert re.search(rf"\bfsqrt\s+v\d+\.{arrangement}", body), "no packed sqrt"
    assert re.search(rf"\bfdiv\s+v\d+\.{arrangement}", body), "no packed divide"


FUSED = re.compile(r"\b(fmadd|fmsub|fnmadd|fnmsub|fmla|fmls)\s")


def test_kernels_have_no_fused_multiply_add(code):
    """-ffp-contract=off holds on AArch64, where GCC would otherwise fuse (docs/numerics.md)."""
    kernels = {f: body for f, body in code.items() if f.endswith("_neon")}
    assert len(kernels) > 100
    fused = sorted(f for f, body in kernels.items() if FUSED.search(body))
    assert not fused, fused


def test_library_has_no_fused_multiply_add(code):
    """Nor the scalar constants of csrc/api.c (bias corrections, Adagrad's decayed lr, NAdam's
    momentum coefficients, AdamW's 1 - lr*wd): fused there they differ from torch's (and x86's) by an
    ulp now and then.  Needs -ffp-contract=off for fastopt_core as for the kernels."""
    fused = sorted(f for f, body in code.items() if FUSED.search(body))
    assert not fused, fused


@pytest.mark.skipif("baseline" not in fastopt.info()["isas_available"], reason="compares with the x86-64 baseline")
def test_neon_gives_the_baseline_bits(cross, tmp_path):
    """tests/c/neon_bits.c hashes what every optimizer (every dtype, 16-bit and 8-bit state, master
    copies, stochastic rounding) and gradient utility writes: NEON under qemu gives the bits of the
    x86-64 levels of the installed build (each of them, as this machine has them)."""
    probe = os.path.join(ROOT, "tests", "c", "neon_bits.c")
    flags = ["-O2", "-std=c11", "-ffp-contract=off", "-Wall", "-Wextra", "-Werror"]
    sh(CC, *flags, f"-I{ROOT}/csrc/include", probe, cross / "build" / "libfastopt.a", "-lm", "-pthread",
       "-o", tmp_path / "neon_bits")
    sh("cc", *flags, f"-I{fastopt.get_include()}", probe, os.path.join(fastopt.get_library_dir(), "libfastopt.a"),
       "-lm", "-pthread", "-o", tmp_path / "native_bits")
    neon = emulated(tmp_path / "neon_bits").splitlines()
    assert neon[0] == "isa neon" and len(neon) > 60
    for isa in fastopt.info()["isas_available"]:
        native = sh(tmp_path / "native_bits", isa).splitlines()
        assert native[0] == f"isa {isa}"
        differ = [f"{a}  !=  {isa}: {b.split()[-1]}" for a, b in zip(neon[1:], native[1:]) if a != b]
        assert len(native) == len(neon) and not differ, "\n".join(differ)


# The Python tests of the kernels under emulation: every test at the neon level (the only one), the
# everyday tier, of every kernel against the reference (the other files' cases run on x86-64 and
# cost emulation time CI's budget does not have).  Subprocesses of sys.executable run under qemu
# too (the plugin below).
PYTHON_TESTS = ["test_kernels.py", "test_gradients.py"]
PLUGIN = '''"""sys.executable for subprocesses: the emulated interpreter (no binfmt_misc needed)."""
import os
import sys

sys.executable = os.environ["FASTOPT_EMULATED_PYTHON"]
'''


@pytest.mark.skipif(isinstance(aarch64_python(), str), reason=str(aarch64_python()))
def test_python_kernel_tests_under_qemu(cross, tmp_path):
    sysroot, site, name = aarch64_python()
    package = cross / "stage" / "fastopt"
    for f in os.listdir(os.path.join(ROOT, "src", "fastopt")):  # the pure-Python part, next to the binding
        src = os.path.join(ROOT, "src", "fastopt", f)
        (shutil.copytree if os.path.isdir(src) else shutil.copy)(src, package / f)
    (tmp_path / "emulated_executable.py").write_text(PLUGIN)
    wrapper = tmp_path / "python"
    wrapper.write_text(f'#!/bin/sh\nexec {QEMU} -L {sysroot} {sysroot}/usr/bin/{name} "$@"\n')
    wrapper.chmod(0o755)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(cross / "stage"), site]),
           "PYTHONNOUSERSITE": "1", "PYTHONDONTWRITEBYTECODE": "1", "FASTOPT_EMULATED_PYTHON": str(wrapper)}
    env.pop("FASTOPT_ISA", None)
    info = sh(wrapper, "-c", "import fastopt, platform; print(platform.machine(), fastopt.info())", env=env, cwd=tmp_path)
    assert info.startswith("aarch64 ") and "'isa': 'neon'" in info and str(package) in info, info
    tests = os.path.join(ROOT, "tests")
    out = sh(wrapper, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "emulated_executable", "-m", "not slow",
             "-o", "addopts=--strict-markers",  # (one process: the AArch64 Python has no pytest-xdist)
             "--hypothesis-profile=fast", "-k", "not training_reaches", *(os.path.join(tests, f) for f in PYTHON_TESTS),
             env=env, cwd=tests)
    assert " passed" in out and "failed" not in out, out[-3000:]
