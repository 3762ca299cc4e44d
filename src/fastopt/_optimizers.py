"""One row per optimizer: what every layer needs to know of it, said once.

fastopt.functional builds its calls from these rows, fastopt.optim and fastopt.torch name their
state from them, the CUDA backend picks its kernels and 8-bit codes by them, and the tests iterate
them.  The per-element math lives in the kernels (csrc/kernels/, cuda/_kernels.py); the
hyper-parameters' checks and per-call constants in csrc/api.c; the options each C function takes
in csrc/include/fastopt.h, whose field names are the functional keywords (betas give beta1, beta2).
"""
from __future__ import annotations

from typing import NamedTuple


class Role(NamedTuple):
    """One state array of an optimizer."""

    arg: str                 # its fastopt.functional argument (a list per call): "exp_avg_sqs"
    key: str                 # its key in a torch.optim state dict (and fastopt.optim's): "exp_avg_sq"
    when: str | None = None  # the hyper-parameter that must be non-zero/true for the call to use it
    signed: bool = True      # values of both signs (False: >= 0, the unsigned 8-bit code)


class Optimizer(NamedTuple):
    name: str                # the fastopt.functional function
    c_name: str              # fastopt_<c_name>() and its options; kernels <c_name>_span (C), <c_name>_kernel (CUDA)
    state: tuple             # its Roles, in the C function's (and functional's) positional order
    takes_step: bool         # the update reads the step count (bias correction, lr decay)
    keeps_step: bool         # torch.optim keeps a 'step' in each param's state
    q8: bool = False         # 8-bit state supported (not with amsgrad's maximum)
    fixed: tuple = ()        # option fields fixed by the name: (("decoupled_weight_decay", True),)
    class_name: str = ""     # its class in fastopt.optim and fastopt.torch
    in_torch: bool = True    # torch.optim has the class too, whose rules (and state keys) it follows


_MOMENTS = (Role("exp_avgs", "exp_avg"), Role("exp_avg_sqs", "exp_avg_sq", signed=False))

OPTIMIZERS = {o.name: o for o in (
    Optimizer("sgd", "sgd", (Role("momentum_buffers", "momentum_buffer", when="momentum"),),
              takes_step=False, keeps_step=False, q8=True, class_name="SGD"),
    Optimizer("adam", "adam", _MOMENTS + (Role("max_exp_avg_sqs", "max_exp_avg_sq", when="amsgrad", signed=False),),
              takes_step=True, keeps_step=True, q8=True, fixed=(("decoupled_weight_decay", False),),
              class_name="Adam"),
    Optimizer("adamw", "adam", _MOMENTS + (Role("max_exp_avg_sqs", "max_exp_avg_sq", when="amsgrad", signed=False),),
              takes_step=True, keeps_step=True, q8=True, fixed=(("decoupled_weight_decay", True),),
              class_name="AdamW"),
    Optimizer("rmsprop", "rmsprop", (Role("square_avgs", "square_avg", signed=False),
                                     Role("grad_avgs", "grad_avg", when="centered"),
                                     Role("momentum_buffers", "momentum_buffer", when="momentum")),
              takes_step=False, keeps_step=True, class_name="RMSprop"),
    Optimizer("adagrad", "adagrad", (Role("state_sums", "sum", signed=False),), takes_step=True, keeps_step=True,
              class_name="Adagrad"),
    Optimizer("nadam", "nadam", _MOMENTS, takes_step=True, keeps_step=True, class_name="NAdam"),
    Optimizer("radam", "radam", _MOMENTS, takes_step=True, keeps_step=True, class_name="RAdam"),
    Optimizer("adamax", "adamax", (Role("exp_avgs", "exp_avg"), Role("exp_infs", "exp_inf", signed=False)),
              takes_step=True, keeps_step=True, class_name="Adamax"),
    Optimizer("lion", "lion", (Role("exp_avgs", "exp_avg"),), takes_step=False, keeps_step=False, q8=True,
              class_name="Lion", in_torch=False),
    Optimizer("lamb", "lamb", _MOMENTS, takes_step=True, keeps_step=True, class_name="LAMB", in_torch=False),
)}


def used_state(optimizer: Optimizer, hyper: dict) -> list[Role]:
    """The state roles a call with these hyper-parameters uses (a role whose hyper-parameter is
    absent counts as unused)."""
    return [r for r in optimizer.state if r.when is None or hyper.get(r.when)]
