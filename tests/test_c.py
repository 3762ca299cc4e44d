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
pytestmark = pytest.mark.skipif(not (shutil.which("cmake") and shutil.which("cc") and shutil.which("c++")),
                                reason="needs cmake and a C/C++ compiler")


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


def test_ctest_under_address_and_undefined_behavior_sanitizers(tmp_path):
    build(ROOT, tmp_path, "-DFASTOPT_BUILD_TESTS=ON", "-DFASTOPT_SANITIZE=ON", "-DCMAKE_BUILD_TYPE=Debug")
    out = sh("ctest", "--output-on-failure", cwd=tmp_path)
    assert "100% tests passed" in out


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
    assert "bad input: hyper-parameter out of range: betas[0]" in out
    return out


def test_cpp_example_with_find_package(installed):
    prefix = installed / "prefix"
    libdir = next(d for d in ("lib", "lib64") if (prefix / d).exists())
    run_cpp_example(prefix / libdir / "cmake" / "fastopt", installed / "example")


def test_cpp_example_against_the_wheel(tmp_path):
    cmake_dir = sh(sys.executable, "-m", "fastopt", "--cmake-dir").strip()
    assert cmake_dir == fastopt.get_cmake_dir()
    run_cpp_example(cmake_dir, tmp_path)


@pytest.mark.skipif(not shutil.which("pkg-config"), reason="needs pkg-config")
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
