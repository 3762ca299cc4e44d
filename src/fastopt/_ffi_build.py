"""Writes the C source of fastopt's cffi binding (API mode):
``python _ffi_build.py fastopt.h fastopt_single.h OUT.c``.

The cdef is the part of each header between its ``cffi-begin`` and ``cffi-end`` markers, so the
binding can never drift from the C API: the public header's, and the one-tensor calls of Python's
latency path (csrc/python/fastopt_single.h, compiled into the extension alone).  CMake compiles the
output into ``fastopt._fastopt_cffi``.
"""
import re
import sys

from cffi import FFI


def cdef_from_header(text: str) -> str:
    body = text.split("/* cffi-begin", 1)[1].split("/* cffi-end */", 1)[0]
    body = body.split("\n", 1)[1]  # the rest of the marker's line
    body = re.sub(r"/\*.*?\*/", "", body, flags=re.S)
    return body.replace("FASTOPT_API ", "").replace("static ", "")


def main(*args: str) -> None:
    *headers, out = args
    ffi = FFI()
    for header in headers:
        with open(header) as f:
            ffi.cdef(cdef_from_header(f.read()))
    ffi.set_source("fastopt._fastopt_cffi", "".join(f'#include "{h.rsplit("/", 1)[-1]}"\n' for h in headers))
    ffi.emit_c_code(out)


if __name__ == "__main__":
    main(*sys.argv[1:])
