"""The few device primitives the CUDA kernels are written with, for the GPU and for Numba's simulator.

A kernel reaches its tensors through a table of raw addresses (one launch for any number of
tensors), so it needs: a typed pointer from an address, loads that widen the stored type to the type
the math runs in (float32 for float32/float16/bfloat16, float64 for float64), and stores that
narrow it back with round-to-nearest-even.  The stored type is told by a *marker*, a scalar argument
of that type (bfloat16 travels as its bits, a uint16 marker), so each kernel is compiled once per
stored type and never branches on it at run time.

On the GPU these are Numba intrinsics and overloads; under ``NUMBA_ENABLE_CUDASIM=1`` they are plain
NumPy on the host memory the simulator uses as device memory, with NumPy scalar types so that
float32 math stays float32 as it does on the device.
"""
from __future__ import annotations

import ctypes
import math

import numpy as np
from numba import config

SIMULATOR = bool(config.ENABLE_CUDASIM)

BF16_MARKER = np.uint16(0)  # the stored type bfloat16, as its 16 bits
MARKERS = {"float32": np.float32(0), "float64": np.float64(0), "float16": np.float16(0), "bfloat16": BF16_MARKER}

_CTYPES = {np.float32: ctypes.c_float, np.float64: ctypes.c_double, np.float16: ctypes.c_uint16,
           np.uint16: ctypes.c_uint16, np.int64: ctypes.c_int64, np.uint8: ctypes.c_uint8}


def _bf16_bits(x):
    """float32 -> bfloat16 bits, round to nearest even; NaN stays a (quiet) NaN."""
    u = int(np.float32(x).view(np.uint32))
    if x != x:
        return np.uint16((u >> 16) | 0x40)
    return np.uint16((u + 0x7FFF + ((u >> 16) & 1)) >> 16)


def _bf16_bits_stochastic(x, random):
    """float32 -> bfloat16 bits, rounded up with probability (the dropped 16 bits) / 2^16; inf and
    NaN are kept (csrc/kernels/storage.h)."""
    u = int(np.float32(x).view(np.uint32))
    if (u & 0x7F800000) == 0x7F800000:
        return np.uint16((u >> 16) | (0x40 if x != x else 0))
    return np.uint16((u + (int(random) & 0xFFFF)) >> 16)


if SIMULATOR:
    def pointer(address, n, marker):
        """The n elements of the marker's type at address, as an indexable view (None for 0)."""
        if address == 0:
            return None
        view = np.ctypeslib.as_array(ctypes.cast(int(address), ctypes.POINTER(_CTYPES[type(marker)])),
                                     shape=(max(int(n), 1),))
        return view.view(np.float16) if type(marker) is np.float16 else view

    def load(ptr, i, marker):
        """Element i, widened to the type the math runs in."""
        x = ptr[i]
        if type(marker) is np.uint16:
            return np.uint32(int(x) << 16).view(np.float32)
        return np.float32(x) if type(marker) is np.float16 else x

    def store(ptr, i, x, marker):
        """Writes x to element i, narrowed to the stored type (round to nearest even)."""
        ptr[i] = _bf16_bits(np.float32(x)) if type(marker) is np.uint16 else x

    def store_stochastic(ptr, i, x, marker, random):
        """store(), but bfloat16 rounds stochastically with random (its low 16 bits)."""
        ptr[i] = _bf16_bits_stochastic(x, random) if type(marker) is np.uint16 else x

    def itemsize(marker):
        return np.dtype(type(marker)).itemsize

    def real(x, marker):
        """A float64 constant in the type the math runs in for this stored type."""
        return np.float64(x) if type(marker) is np.float64 else np.float32(x)

    def sqrt(x):
        return np.sqrt(x)

    def ldexp(x, k):
        """x * 2^k, in x's type."""
        return np.ldexp(x, int(k))

    def copysign(x, y):
        return np.copysign(x, y)

    def flag_set(address):
        """Whether the float32 flag at address (0: none) is non-zero."""
        return address != 0 and pointer(address, 1, np.float32(0))[0] != 0

    def raise_flag(address):
        """Sets the float32 flag at address to 1."""
        pointer(address, 1, np.float32(0))[0] = 1.0

else:
    from llvmlite import ir
    from numba import types
    from numba.cuda.extending import intrinsic, overload

    @intrinsic
    def _as_pointer(typingctx, address, marker):
        sig = types.CPointer(marker)(address, marker)

        def codegen(context, builder, signature, args):
            return builder.inttoptr(args[0], context.get_value_type(signature.return_type))
        return sig, codegen

    @intrinsic
    def _bits_f32(typingctx, bits):
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], ir.FloatType())
        return types.float32(types.uint32), codegen

    @intrinsic
    def _f32_bits(typingctx, x):
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], ir.IntType(32))
        return types.uint32(types.float32), codegen

    def pointer(address, n, marker):
        """The n elements of the marker's type at address, as an indexable pointer."""

    def load(ptr, i, marker):
        """Element i, widened to the type the math runs in."""

    def store(ptr, i, x, marker):
        """Writes x to element i, narrowed to the stored type (round to nearest even)."""

    def store_stochastic(ptr, i, x, marker, random):
        """store(), but bfloat16 rounds stochastically with random (its low 16 bits)."""

    def itemsize(marker):
        """The size of the marker's type in bytes."""

    def real(x, marker):
        """A float64 constant in the type the math runs in for this stored type."""

    def flag_set(address):
        """Whether the float32 flag at address (0: none) is non-zero."""

    def raise_flag(address):
        """Sets the float32 flag at address to 1."""

    sqrt = math.sqrt
    copysign = math.copysign
    ldexp = math.ldexp

    @overload(pointer, target="cuda")
    def _pointer(address, n, marker):
        return lambda address, n, marker: _as_pointer(address, marker)

    @overload(load, target="cuda")
    def _load(ptr, i, marker):
        if marker == types.uint16:
            return lambda ptr, i, marker: _bits_f32(types.uint32(ptr[i]) << types.uint32(16))
        if marker == types.float16:
            return lambda ptr, i, marker: types.float32(ptr[i])
        return lambda ptr, i, marker: ptr[i]

    @overload(store, target="cuda")
    def _store(ptr, i, x, marker):
        if marker == types.uint16:
            def store_bf16(ptr, i, x, marker):
                u = _f32_bits(types.float32(x))
                if x != x:
                    ptr[i] = types.uint16((u >> types.uint32(16)) | types.uint32(0x40))
                else:
                    ptr[i] = types.uint16((u + types.uint32(0x7FFF) + ((u >> types.uint32(16)) & types.uint32(1)))
                                          >> types.uint32(16))
            return store_bf16
        if marker == types.float16:
            def store_f16(ptr, i, x, marker):
                ptr[i] = types.float16(x)
            return store_f16

        def store_same(ptr, i, x, marker):
            ptr[i] = x
        return store_same

    @overload(store_stochastic, target="cuda")
    def _store_stochastic(ptr, i, x, marker, random):
        if marker == types.uint16:
            def store_bf16(ptr, i, x, marker, random):
                u = _f32_bits(types.float32(x))
                if (u & types.uint32(0x7F800000)) == types.uint32(0x7F800000):
                    nan = types.uint32(0x40) if x != x else types.uint32(0)
                    ptr[i] = types.uint16((u >> types.uint32(16)) | nan)
                else:
                    ptr[i] = types.uint16((u + (types.uint32(random) & types.uint32(0xFFFF))) >> types.uint32(16))
            return store_bf16
        return lambda ptr, i, x, marker, random: store(ptr, i, x, marker)

    @overload(itemsize, target="cuda")
    def _itemsize(marker):
        size = marker.bitwidth // 8
        return lambda marker: size

    @overload(real, target="cuda")
    def _real(x, marker):
        if marker == types.float64:
            return lambda x, marker: types.float64(x)
        return lambda x, marker: types.float32(x)

    @overload(flag_set, target="cuda")
    def _flag_set(address):
        def impl(address):
            return address != 0 and _as_pointer(address, types.float32(0))[0] != 0
        return impl

    @overload(raise_flag, target="cuda")
    def _raise_flag(address):
        def impl(address):
            _as_pointer(address, types.float32(0))[0] = types.float32(1)
        return impl
