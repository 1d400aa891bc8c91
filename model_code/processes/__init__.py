"""Generative processes behind one protocol (base.Process), and their rebuilding from ``describe()``.

    ve           processes.ve.VE                          (VE / annealed-noise score model)
    interpolant  processes.interpolant.InterpolantProcess (flow matching and other interpolants)
    levels       processes.levels.LevelsProcess           (heat dissipation and linear maps)
    wrapped_ve   processes.wrapped_ve.WrappedVEProcess    (the two-atom toy; regularizers.Regularized
                                                           adds its regularizers)
    adversarial  processes.adversarial.AdversarialProcess (GANO: generator and functional critic)

The classes are imported on first use: prediction.py imports processes.interpolant's
schedules, and the processes import prediction.py back.
"""
from __future__ import annotations

import importlib

_CLASSES = {
    "Draw": ".base", "Process": ".base",
    "VE": ".ve", "InterpolantProcess": ".interpolant", "LevelsProcess": ".levels",
    "WrappedVEProcess": ".wrapped_ve", "AdversarialProcess": ".adversarial",
}

__all__ = [*_CLASSES, "process_from_description", "noise_from_description", "PROCESSES"]

PROCESSES = ("ve", "interpolant", "levels", "wrapped_ve", "adversarial")


def __getattr__(name):
    if name in _CLASSES:
        return getattr(importlib.import_module(_CLASSES[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def noise_from_description(desc: dict):
    """WhiteNoise / GaussianRandomField from their ``describe()``."""
    from ..noise import GaussianRandomField, WhiteNoise

    desc = dict(desc)
    kind = desc.pop("type", None)
    classes = {"white": WhiteNoise, "grf": GaussianRandomField}
    if kind not in classes:
        raise ValueError(f"unknown noise type {kind!r}; choose one of {', '.join(classes)}")
    return classes[kind](**desc)


def process_from_description(desc: dict, noise=None):
    """The process that ``describe()`` returned ``desc`` (plain data, e.g. read back from JSON).

    ``noise`` replaces the described noise of ve / interpolant (e.g. the same kernel on a finer
    grid is the same object, but a caller may hold one already prepared). A "regularizer"
    entry wraps the process in regularizers.Regularized. Unknown types or arguments are
    ValueErrors naming them.
    """
    desc = dict(desc)
    kind = desc.pop("type", None)
    regularizer = desc.pop("regularizer", None)
    try:
        if kind in ("ve", "interpolant", "adversarial"):
            described = desc.pop("noise", None)
            if noise is None:
                if described is None:
                    raise ValueError(f"the {kind} description has no noise; pass noise=")
                noise = noise_from_description(described)
            if kind == "ve":
                from .ve import VE

                process = VE(noise, **desc)
            elif kind == "adversarial":
                from .adversarial import AdversarialProcess

                process = AdversarialProcess(noise, **desc)
            else:
                from .interpolant import InterpolantProcess

                process = InterpolantProcess(noise, **desc)
        elif kind == "levels":
            from .levels import LevelsProcess, map_from_description

            process = LevelsProcess(map_from_description(desc.pop("map")), **desc)
        elif kind == "wrapped_ve":
            from .wrapped_ve import WrappedVEProcess

            process = WrappedVEProcess(**desc)
        else:
            raise ValueError(f"unknown process type {kind!r}; choose one of {', '.join(PROCESSES)}")
    except TypeError as err:
        raise ValueError(f"process {kind!r}: bad description {sorted(desc)} ({err})") from None
    if regularizer is not None:
        from ..regularizers import Regularized
        from ..toy_score import AnalyticScore

        reg = dict(regularizer)
        analytic = reg.pop("analytic", None)
        process = Regularized(process, analytic=None if analytic is None else AnalyticScore(**analytic), **reg)
    return process
