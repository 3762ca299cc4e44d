"""The C library for C and C++ users, driven from pytest so CI runs it with everything else:
ctest (plain and under ASan + UBSan), `cmake --install`, find_package from a C++17 program (both
from an install prefix and from the wheel), and pkg-config."""
import os
import re
import shutil
import subprocess
import sys

import pytest

import fastopt

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
pytestmark = [pytest.mark.slow,  # builds, sanitizers, valgrind
              pytest.mark.skipif(not (shutil.which("cmake") and shutil.which("cc") and shutil.which("c++")),
                                 reason="needs cmake and a C/C++ compiler")]


def sh(*cmd, **kw):
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    assert out.returncode == 0, f"{' '.join(map(str, cmd))}\n{out.stdout}\n{out.stderr}"
    return out.stdout


def build(src, build_dir, *options):
    sh("cmake", "-S", src, "-B", build_dir, *options)
    sh("cmake", "--build", build_dir, "--parallel", "2")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The C library built with its tests, and installed under a fresh prefix."""
    tmp = tmp_path_factory.mktemp("c")
    build(ROOT, tmp / "build", "-DFASTOPT_BUILD_TESTS=ON", "-DCMAKE_BUILD_TYPE=Release")
    sh("cmake", "--install", tmp / "build", "--prefix", tmp / "prefix")
    return tmp


def test_ctest(installed):
    out = sh("ctest", "--output-on-failure", cwd=installed / "build")
    assert "100% tests passed" in out


@pytest.fixture(scope="module")
def sanitized(tmp_path_factory):
    """The library and its C tests built with AddressSanitizer and UndefinedBehaviorSanitizer."""
    tmp = tmp_path_factory.mktemp("asan")
    build(ROOT, tmp, "-DFASTOPT_BUILD_TESTS=ON", "-DFASTOPT_SANITIZE=ON", "-DCMAKE_BUILD_TYPE=Debug")
    return tmp


def test_ctest_under_address_and_undefined_behavior_sanitizers(sanitized):
    out = sh("ctest", "--output-on-failure", cwd=sanitized)
    assert "100% tests passed" in out


def test_python_suite_against_the_sanitized_library(sanitized):
    """The Python tests of the kernels, errors, gradients, threads and training kernels, run with the
    sanitized libfastopt.so in place of the wheel's (the binding finds it first on LD_LIBRARY_PATH;
    the ASan runtime is preloaded), and a check that it really was the sanitized one."""
    asan = sh("cc", "-print-file-name=libasan.so").strip()
    if not os.path.isabs(asan):
        pytest.skip("no ASan runtime")
    env = {**os.environ, "LD_PRELOAD": asan, "LD_LIBRARY_PATH": str(sanitized),
           "ASAN_OPTIONS": "detect_leaks=0", "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1"}
    maps = sh(sys.executable, "-c", "import fastopt; print(open('/proc/self/maps').read())", env=env)
    assert f"{sanitized}/libfastopt.so" in maps
    tests = os.path.dirname(os.path.abspath(__file__))
    # (the everyday tier of them: memory errors show on any input; the properties' many examples
    # run against the wheel's library elsewhere)
    out = sh(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", "-n", "0", "-m", "not slow",
             "--hypothesis-profile=fast",
             *(os.path.join(tests, f) for f in ("test_kernels.py", "test_errors.py", "test_gradients.py",
                                                "test_concurrency.py", "test_training.py")),
             env=env, cwd=tests)
    assert " passed" in out and "failed" not in out


def test_the_native_torch_step_under_address_and_undefined_behavior_sanitizers(sanitized, tmp_path):
    """fastopt._steady (csrc/python/steady.c, fastopt.torch's steady step) built with ASan and UBSan
    into a copy of the installed package, over the sanitized library, and the tests of the native
    step run with it (but the one that makes torch throw C++ exceptions, which ASan's preloaded
    runtime cannot intercept in torch's libraries)."""
    pytest.importorskip("torch")
    import sysconfig
    asan = sh("cc", "-print-file-name=libasan.so").strip()
    if not os.path.isabs(asan):
        pytest.skip("no ASan runtime")
    package = tmp_path / "fastopt"
    shutil.copytree(os.path.dirname(fastopt.__file__), package)
    module = next(package.glob("_steady*.so"))
    flags = ["-fPIC", "-g", "-O1", "-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=all",
             "-I", os.path.join(ROOT, "csrc", "include"), "-I", sysconfig.get_paths()["include"]]
    barrier = tmp_path / "guarded.o"
    sh("c++", "-c", *flags, os.path.join(ROOT, "csrc", "python", "guarded.cpp"), "-o", barrier)
    sh("cc", "-shared", *flags, os.path.join(ROOT, "csrc", "python", "steady.c"), barrier, "-L", sanitized, "-lfastopt",
       "-lstdc++", "-o", module)
    env = {**os.environ, "LD_PRELOAD": asan, "LD_LIBRARY_PATH": str(sanitized), "PYTHONPATH": str(tmp_path),
           "ASAN_OPTIONS": "detect_leaks=0:alloc_dealloc_mismatch=0:new_delete_type_mismatch=0",
           "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1"}
    loaded = sh(sys.executable, "-c", "import fastopt._steady as s; print(s.__file__)", env=env, cwd=tmp_path)
    assert loaded.strip() == str(module)
    tests = os.path.dirname(os.path.abspath(__file__))
    out = sh(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", "-n", "0",
             "-o", "addopts=--strict-markers", os.path.join(tests, "test_torch_loops.py"),
             "-k", "(native or steady or resized or inference or collected) and not cannot_step", env=env, cwd=tests)
    assert " passed" in out and "failed" not in out


@pytest.mark.skipif(not shutil.which("valgrind"), reason="needs valgrind (Debian: apt install valgrind)")
def test_c_tests_are_clean_under_valgrind(installed):
    """memcheck over the C tests (valgrind's virtual CPU has no AVX-512: they run the other levels)."""
    run = subprocess.run(["valgrind", "--error-exitcode=99", "--leak-check=full", "--errors-for-leak-kinds=definite",
                          str(installed / "build" / "test_fastopt")], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    assert "ERROR SUMMARY: 0 errors" in run.stderr


def test_install_layout(installed):
    prefix = installed / "prefix"
    libdir = next(d for d in ("lib", "lib64") if (prefix / d / "libfastopt.a").exists())
    for f in ("include/fastopt.h", "include/fastopt.hpp", f"{libdir}/libfastopt.a", f"{libdir}/libfastopt.so.0",
              f"{libdir}/cmake/fastopt/fastoptConfig.cmake", f"{libdir}/cmake/fastopt/fastoptConfigVersion.cmake",
              f"{libdir}/pkgconfig/fastopt.pc"):
        assert (prefix / f).exists(), f
    if shutil.which("readelf"):
        assert "Library soname: [libfastopt.so.0]" in sh("readelf", "-d", prefix / libdir / "libfastopt.so")


def run_cpp_example(cmake_dir, build_dir):
    build(os.path.join(ROOT, "examples", "cpp"), build_dir, f"-Dfastopt_DIR={cmake_dir}")
    out = sh(build_dir / "linear_regression")
    losses = [float(x) for x in re.findall(r"loss ([0-9.]+)", out)]
    assert len(losses) == 10 and losses[-1] < losses[0] / 10, out
    assert "as expected: beta1 = 1.5 was refused (hyper-parameter out of range: betas[0]" in out
    return out


def test_cpp_example_with_find_package(installed):
    prefix = installed / "prefix"
    libdir = next(d for d in ("lib", "lib64") if (prefix / d).exists())
    run_cpp_example(prefix / libdir / "cmake" / "fastopt", installed / "example")


def test_cpp_example_against_the_wheel(tmp_path):
    cmake_dir = sh(sys.executable, "-m", "fastopt", "--cmake-dir").strip()
    assert cmake_dir == fastopt.get_cmake_dir()
    run_cpp_example(cmake_dir, tmp_path)


@pytest.mark.skipif(not shutil.which("pkg-config"), reason="needs pkg-config (Debian: apt install pkg-config)")
def test_pkg_config(installed, tmp_path):
    prefix = installed / "prefix"
    libdir = next(d for d in ("lib", "lib64") if (prefix / d).exists())
    env = {**os.environ, "PKG_CONFIG_PATH": str(prefix / libdir / "pkgconfig")}
    flags = sh("pkg-config", "--cflags", "--libs", "fastopt", env=env).split()
    src = tmp_path / "main.c"
    src.write_text('#include <fastopt.h>\n#include <stdio.h>\nint main(void) { puts(fastopt_version()); return 0; }\n')
    sh("cc", "-std=c99", "-Wall", "-Werror", src, "-o", tmp_path / "main", *flags, f"-Wl,-rpath,{prefix / libdir}")
    assert sh(tmp_path / "main").strip() == fastopt.__version__


def test_python_paths():
    assert os.path.exists(os.path.join(fastopt.get_include(), "fastopt.h"))
    assert os.path.exists(os.path.join(fastopt.get_library_dir(), "libfastopt.a"))
    assert os.path.exists(os.path.join(fastopt.get_cmake_dir(), "fastoptConfig.cmake"))
    assert sh(sys.executable, "-m", "fastopt", "--includes").strip() == f"-I{fastopt.get_include()}"
