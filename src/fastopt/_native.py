"""The compiled C library (through its cffi API-mode extension) and its error reporting."""
from __future__ import annotations

from fastopt._fastopt_cffi import ffi, lib

__all__ = ["ffi", "lib", "check", "c_string"]


def c_string(ptr) -> str:
    return ffi.string(ptr).decode()


def check(status: int, fn: str) -> None:
    """Raises the exception for a C status code: TypeError for a dtype, ValueError otherwise.

    The C library validates before it writes, so nothing has been modified when this raises.
    """
    if status != lib.FASTOPT_OK:
        error = TypeError if status == lib.FASTOPT_ERR_DTYPE else ValueError
        raise error(f"fastopt.{fn}: {c_string(lib.fastopt_last_error())}")
