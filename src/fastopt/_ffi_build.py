"""Writes the C source of fastopt's cffi binding (API mode): ``python _ffi_build.py HEADER OUT.c``.

The cdef is the part of the public header between its ``cffi-begin`` and ``cffi-end`` markers, so
the binding can never drift from the C API.  CMake compiles the output into ``fastopt._fastopt_cffi``.
"""
import re
import sys

from cffi import FFI


def cdef_from_header(text: str) -> str:
    body = text.split("/* cffi-begin", 1)[1].split("/* cffi-end */", 1)[0]
    body = body.split("\n", 1)[1]  # the rest of the marker's line
    body = re.sub(r"/\*.*?\*/", "", body, flags=re.S)
    return body.replace("FASTOPT_API ", "")


def main(header: str, out: str) -> None:
    ffi = FFI()
    with open(header) as f:
        ffi.cdef(cdef_from_header(f.read()))
    ffi.set_source("fastopt._fastopt_cffi", '#include "fastopt.h"')
    ffi.emit_c_code(out)


if __name__ == "__main__":
    main(*sys.argv[1:])
