"""How a run uses an accelerator: bf16 autocast of the backbone with float32 spectral products,
TF32 matrix products, torch.compile of the backbone (train.precision, train.tf32, train.compile,
train.compile_backend; train.pin_memory lives in the trainer, where batches move to the device).

Every change here keeps a network's class name, its parameters and its state_dict keys, so
checkpoints of a bf16 or compiled run are those of an fp32 run (eval.py and resume read them
as they are). Both wrappers work by giving one module instance a subclass of its own class
whose forward adds the behaviour: unlike a wrapper module (new state_dict keys) or an
instance-level `forward` attribute (which copy.deepcopy, and so the EMA copy, would leave
pointing at the original module), a class follows the instance through deepcopy.
"""
from __future__ import annotations

import sys

import torch
from torch import nn

from .errors import UserError

PRECISIONS = ("fp32", "bf16")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")

_LOW = (torch.bfloat16, torch.float16)
_SUBCLASSES: dict = {}


def _subclass(cls: type, kind: str, forward) -> type:
    key = (cls, kind)
    if key not in _SUBCLASSES:
        # The same __name__: describe_net and checkpoints name a network by its class name.
        _SUBCLASSES[key] = type(cls.__name__, (cls,), {"forward": forward, "__module__": cls.__module__,
                                                       "__qualname__": cls.__qualname__, "_precision": kind})
    return _SUBCLASSES[key]


def _swap_class(module: nn.Module, kind: str, make_forward) -> bool:
    if getattr(type(module), "_precision", None) == kind:
        return False
    base = type(module)
    module.__class__ = _subclass(base, kind, make_forward(base))
    return True


# ------------------------------------------------------------------------------ bf16
def _bf16_forward(base):
    def forward(self, x, *args, **kwargs):
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            out = base.forward(self, x, *args, **kwargs)
        # The caller (preconditioning, losses, a critic, samplers) stays in the input's precision.
        if isinstance(out, torch.Tensor) and out.dtype in _LOW and out.dtype != x.dtype:
            out = out.to(x.dtype)
        return out

    return forward


def _float32_forward(base):
    def forward(self, x, *args, **kwargs):
        # CUDA's autocast passes FFTs through in their input's dtype: cuFFT has no bf16 transform
        # (and half only for power-of-two sizes), and the truncated spectrum would lose the
        # accuracy of the low modes the operators are built on. The complex weight contraction
        # then runs in complex64 too.
        with torch.autocast(x.device.type, enabled=False):
            return base.forward(self, x.float() if x.dtype in _LOW else x, *args, **kwargs)

    return forward


def _float32_output_forward(base):
    def forward(self, *args, **kwargs):
        out = base.forward(self, *args, **kwargs)
        return out.float() if out.dtype in _LOW else out

    return forward


def spectral_modules(net: nn.Module) -> list:
    """The neuralop spectral convolutions inside `net` (FNO / UNO)."""
    # A net holding one imported neuralop already; without it there is nothing to find.
    module = sys.modules.get("neuralop.layers.base_spectral_conv")
    if module is None:
        return []
    return [m for m in net.modules() if isinstance(m, module.BaseSpectralConv)]


def use_bf16(net: nn.Module) -> nn.Module:
    """Run `net`'s forward under bf16 autocast, its spectral convolutions in float32, its output
    in the input's dtype. In place; returns `net`.

    Only the backbone: the noise draws (the RBF field's matrix products), the preconditioning
    and the loss around it stay in float32. The published UNO (nets/legacy_uno.py) computes its
    FFTs and contractions from x.float() on complex64 tensors, which autocast leaves alone.
    """
    from .nets.legacy_uno import LegacyBlock

    _swap_class(net, "bf16", _bf16_forward)
    for conv in spectral_modules(net):
        _swap_class(conv, "float32_spectral", _float32_forward)
    for block in net.modules():
        if isinstance(block, LegacyBlock):
            # Its antialiased bicubic resize has no bf16 kernel on a CPU; the skip's 1x1 conv stays bf16.
            _swap_class(block.skip, "float32_output", _float32_output_forward)
    return net


def apply_precision(net: nn.Module, precision: str) -> nn.Module:
    if precision not in PRECISIONS:
        raise UserError(f"train.precision must be one of {', '.join(PRECISIONS)}; got '{precision}'")
    return use_bf16(net) if precision == "bf16" else net


# ------------------------------------------------------------------------------ TF32
def set_tf32(device: torch.device, enabled: bool) -> bool:
    """TF32 matrix products and convolutions on CUDA (10-bit mantissa inputs, float32 sums);
    nothing elsewhere. Returns whether the flags were set."""
    if torch.device(device).type != "cuda":
        return False
    torch.backends.cuda.matmul.allow_tf32 = bool(enabled)
    torch.backends.cudnn.allow_tf32 = bool(enabled)
    return True


# ----------------------------------------------------------------------- compile
def compile_net(net: nn.Module, mode: str | None, backend: str = "inductor") -> nn.Module:
    """torch.compile `net` in place (nn.Module.compile): its state_dict keys stay as they are (no
    `_orig_mod.` prefix), so checkpoints load in uncompiled code. mode None: nothing."""
    if mode is None:
        return net
    if mode not in COMPILE_MODES:
        raise UserError(f"train.compile must be null or one of {', '.join(COMPILE_MODES)}; got '{mode}'")
    import torch._dynamo

    known = torch._dynamo.list_backends(exclude_tags=())
    if backend not in known:
        raise UserError(f"train.compile_backend: torch.compile has no backend '{backend}' (inductor, eager, "
                        f"aot_eager, cudagraphs, ...)")
    for conv in spectral_modules(net):
        _swap_class(conv, "eager", _eager_forward)
    # mode is an inductor option: another backend takes none.
    options = {"mode": mode} if backend == "inductor" else {}
    net.compile(backend=backend, **options)
    return net


def _eager_forward(base):
    # neuralop's factorized contractions go through tensorly and opt_einsum, whose Python Dynamo
    # traces for minutes per shape and cannot trace with symbolic shapes at all (torch 2.13); an
    # FFT and a contraction are single library kernels anyway, so compiling gains nothing there.
    run = torch.compiler.disable(base.forward)

    def forward(self, *args, **kwargs):
        return run(self, *args, **kwargs)

    return forward


def submodule_path(root: nn.Module, module: nn.Module) -> str | None:
    """The dotted name of `module` inside `root` (to find the same backbone in a deep copy)."""
    for name, m in root.named_modules():
        if m is module:
            return name
    return None
