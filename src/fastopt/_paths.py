"""Where the wheel keeps the C library, its header and its CMake package (for C and C++ builds)."""
from __future__ import annotations

import os

_HERE = os.path.dirname(os.path.abspath(__file__))


def get_include() -> str:
    """The folder holding fastopt.h and fastopt.hpp."""
    return os.path.join(_HERE, "include")


def get_library_dir() -> str:
    """The folder holding libfastopt.so and libfastopt.a."""
    return os.path.join(_HERE, "lib")


def get_cmake_dir() -> str:
    """The folder of fastoptConfig.cmake: ``cmake -Dfastopt_DIR=$(python -m fastopt --cmake-dir)``."""
    return os.path.join(_HERE, "lib", "cmake", "fastopt")
