"""Network registry (docs/maths.md).

Every backbone is called ``net(x, c_noise, labels=None)``: x (B, C, H, W) fields / images or
(B, n_atoms) toy positions, c_noise (B,) the noise level / time / level index as a float,
labels (B,) long class labels or None (only a U-Net with num_classes > 0 takes them; the
others raise ValueError when given labels). Every net keeps its constructor arguments in
``.config``, so ``describe_net`` / ``net_from_description`` rebuild it from a checkpoint.

Importing this package does not import ``neuralop`` (the FNO / UNO constructors do).
"""
from __future__ import annotations

from torch import nn

from ..errors import UserError
from .legacy_uno import LegacyUNO
from .mlp import PermutationEquivariantMLP
from .neuralop_nets import ConditionedFNO, ConditionedUNO
from .unet import UNet

NETS = {"fno": ConditionedFNO, "uno": ConditionedUNO, "unet": UNet, "mlp": PermutationEquivariantMLP,
        "legacy_uno": LegacyUNO}

# Older checkpoints name the class (build.describe_net) instead of the registry key.
_CLASS_NAMES = {cls.__name__: kind for kind, cls in NETS.items()}


def build_net(kind: str, **kwargs) -> nn.Module:
    """NETS[kind](**kwargs); an unknown kind or bad arguments are a UserError."""
    kind = _CLASS_NAMES.get(kind, kind)
    if kind not in NETS:
        raise UserError(f"unknown network '{kind}' (one of: {', '.join(NETS)})")
    try:
        return NETS[kind](**kwargs)
    except (TypeError, ValueError) as err:
        raise UserError(f"cannot build the {kind} network: {err}") from None


def describe_net(net: nn.Module) -> dict:
    """{"type": registry key, "config": constructor arguments}: what net_from_description rebuilds."""
    kind = _CLASS_NAMES.get(type(net).__name__)
    if kind is None or not isinstance(getattr(net, "config", None), dict):
        raise ValueError(f"{type(net).__name__} is not a registered network with a .config")
    return {"type": kind, "config": dict(net.config)}


def net_from_description(desc: dict) -> nn.Module:
    """Rebuild a network (untrained) from describe_net's output.

    Also reads the older spellings {"type": "ConditionedUNO", ...} and {"kind": "unet", ...}.
    """
    if not isinstance(desc, dict) or not isinstance(desc.get("config", {}), dict):
        raise UserError(f"a network description is a dict {{'type': ..., 'config': {{...}}}}, got {desc!r}")
    kind = desc.get("type", desc.get("kind"))
    if kind is None:
        raise UserError("the network description names no type")
    return build_net(kind, **dict(desc.get("config", {})))


__all__ = ["NETS", "build_net", "describe_net", "net_from_description", "ConditionedFNO", "ConditionedUNO", "UNet",
           "PermutationEquivariantMLP", "LegacyUNO"]
