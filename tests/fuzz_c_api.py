"""A fuzzing harness (atheris) over the C API's argument validation, through the cffi binding.

Each input picks a kernel, a dtype (valid or not), a tensor list whose buffers are carved out of one
arena at fuzzed offsets and lengths (so overlaps, shared buffers and misaligned pointers arise), and
fuzzed hyper-parameters (NaN, inf, negative, huge) and flags.  Every call must return a known
status, and a call that fails must leave the arena exactly as it was.  Memory is never out of
bounds: every buffer lies inside the arena.

    python tests/fuzz_c_api.py -atheris_runs=100000        (tests/test_fuzz.py runs it for a while)
"""
import sys

import atheris

with atheris.instrument_imports():
    from fastopt._native import ffi, lib

ARENA_BYTES = 4096
STATUSES = {getattr(lib, n) for n in dir(lib) if n.startswith("FASTOPT_ERR_")} | {lib.FASTOPT_OK}
DTYPES = [lib.FASTOPT_FLOAT32, lib.FASTOPT_FLOAT64, 0, 3, 99]
SPECIAL = [0.0, -0.0, 1e-3, 0.5, 0.9, 0.999, 1.0, 1.5, -1.0, 1e300, float("inf"), float("-inf"), float("nan")]


def real(fdp):
    return fdp.PickValueInList(SPECIAL) if fdp.ConsumeBool() else fdp.ConsumeRegularFloat()


def common(fdp, flag):
    return [real(fdp), real(fdp), real(fdp), real(fdp), flag if fdp.ConsumeBool() else ffi.NULL, fdp.ConsumeBool()]


@atheris.instrument_func  # coverage of the harness's own choices guides the fuzzer
def one_input(data):
    fdp = atheris.FuzzedDataProvider(data)
    arena = ffi.new("char[]", ARENA_BYTES)
    for i in range(ARENA_BYTES):
        arena[i] = bytes([i * 7 % 251])
    flag = ffi.new("float *", fdp.PickValueInList([0.0, 1.0]))
    n = fdp.ConsumeIntInRange(0, 4)
    numel = [fdp.ConsumeIntInRange(0, 64) for _ in range(n)]
    roles = []
    for _ in range(5):  # up to 5 roles, each a list of n buffers inside the arena
        buffers = []
        for t in range(n):
            offset = fdp.ConsumeIntInRange(0, ARENA_BYTES - 8 * numel[t] - 1) if numel[t] * 8 < ARENA_BYTES else 0
            buffers.append(arena + offset if not fdp.ConsumeProbability() < 0.02 else ffi.NULL)
        roles.append(ffi.new("void *[]", buffers) if n else ffi.NULL)
    dtype = fdp.PickValueInList(DTYPES)
    kernel = fdp.ConsumeIntInRange(0, 8)
    before = bytes(ffi.buffer(arena))
    step = fdp.ConsumeIntInRange(-2, 10**6)
    if kernel == 0:
        o = ffi.new("fastopt_sgd_options *", [common(fdp, flag), real(fdp), real(fdp), fdp.ConsumeBool(), fdp.ConsumeBool()])
        s = lib.fastopt_sgd(dtype, n, numel, roles[0], roles[1], roles[2], o)
    elif kernel == 1:
        o = ffi.new("fastopt_adam_options *", [common(fdp, flag), real(fdp), real(fdp), real(fdp), step,
                                               fdp.ConsumeBool(), fdp.ConsumeBool()])
        s = lib.fastopt_adam(dtype, n, numel, roles[0], roles[1], roles[2], roles[3], roles[4], o)
    elif kernel == 2:
        o = ffi.new("fastopt_rmsprop_options *", [common(fdp, flag), real(fdp), real(fdp), real(fdp), fdp.ConsumeBool()])
        s = lib.fastopt_rmsprop(dtype, n, numel, roles[0], roles[1], roles[2], roles[3], roles[4], o)
    elif kernel == 3:
        o = ffi.new("fastopt_adagrad_options *", [common(fdp, flag), real(fdp), real(fdp), step])
        s = lib.fastopt_adagrad(dtype, n, numel, roles[0], roles[1], roles[2], o)
    elif kernel == 4:
        o = ffi.new("fastopt_nadam_options *", [common(fdp, flag), real(fdp), real(fdp), real(fdp), real(fdp), real(fdp),
                                                step, fdp.ConsumeBool()])
        s = lib.fastopt_nadam(dtype, n, numel, roles[0], roles[1], roles[2], roles[3], o)
    elif kernel == 5:
        o = ffi.new("fastopt_lamb_options *", [common(fdp, flag), real(fdp), real(fdp), real(fdp), real(fdp), step,
                                               fdp.ConsumeBool()])
        s = lib.fastopt_lamb(dtype, n, numel, roles[0], roles[1], roles[2], roles[3], o)
    elif kernel == 6:
        s = lib.fastopt_elastic_net_grad(dtype, n, numel, roles[0], roles[1], real(fdp), real(fdp))
    elif kernel == 7:
        out = ffi.new("double *")
        s = lib.fastopt_clip_grad_norm(dtype, n, numel, roles[0], real(fdp), real(fdp), out)
    else:
        s = lib.fastopt_unscale(dtype, n, numel, roles[0], real(fdp), flag)
    if s not in STATUSES:
        raise RuntimeError(f"unknown status {s}")
    if s != lib.FASTOPT_OK and bytes(ffi.buffer(arena)) != before:
        raise RuntimeError(f"kernel {kernel} failed with status {s} ({ffi.string(lib.fastopt_last_error())}) "
                           "but wrote to its buffers")


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
