"""Conversions between prediction types of an interpolant x_t = alpha x0 + sigma x1 (§3.3).

Types (``KINDS``), each the conditional expectation given x_t of:

* ``"x0"``        the data x0;
* ``"noise"``     the noise x1 ~ N(0, C);
* ``"score"``     the C-preconditioned score C grad log p_t(x)
                  = -(x - alpha E[x0|x]) / sigma^2 = -E[x1|x] / sigma;
* ``"velocity"``  u = alpha' x0 + sigma' x1 (the flow-matching / probability-flow drift);
* ``"v"``         v = alpha x1 - sigma x0 (Salimans & Ho 2022).

Every type is a linear function of the pair (x0, x1), and x_t = alpha x0 + sigma x1 fixes
one combination, so any type together with x_t determines the pair: :func:`to_pair` solves
for it, :func:`from_pair` evaluates a type from it. ``convert`` composes the two (it is the
same as going through x0 with x1 = (x_t - alpha x0) / sigma, but solves directly for the
pair so that e.g. noise <-> score never divides by alpha).

The model's output type and the loss's target type are independent; a training step is

    pred = convert(model(x_t, t), model_output, loss_target, x_t, t, proc)
    target = regression_target(loss_target, x0, x1, t, proc)

Valid range. The solves divide by
  - alpha     for "noise", "score"           (alpha(1) = 0 for rectified flow and cosine),
  - sigma     for "x0" (and "score" output)  (sigma(0) = 0 except for VE),
  - alpha sigma' - sigma alpha'  for "velocity" (positive for every schedule here; infinite
    at t = 0 for LinearVP),
  - alpha^2 + sigma^2 for "v" (never small).
Each divisor is clamped below by ``eps`` (default ``EPS``) so nothing is inf or nan at the
endpoints, but the results there are not meaningful: use t in [t_eps, 1 - t_eps] (tests use
[0.05, 0.95]). ``regression_target`` itself only divides for "score" (by sigma).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import torch

from model_code.processes.interpolant import Coefficients, Interpolant, TimeLike

KINDS = ("x0", "noise", "score", "velocity", "v")

# Lower clamp of every divisor (alpha, sigma, the velocity determinant).
EPS = 1e-6


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown prediction type {kind!r}; choose one of {', '.join(KINDS)}")


def _clamp(v: torch.Tensor, eps: float) -> torch.Tensor:
    return v.clamp(min=eps)


@dataclass
class Predictions:
    """All five prediction types for one x_t (see :func:`all_predictions`)."""

    x0: torch.Tensor
    noise: torch.Tensor
    score: torch.Tensor
    velocity: torch.Tensor
    v: torch.Tensor


def _pair_from_coefficients(kind: str, out: torch.Tensor, x_t: torch.Tensor, c: Coefficients,
                            eps: float) -> Tuple[torch.Tensor, torch.Tensor]:
    a, s, da, ds = c.alpha, c.sigma, c.d_alpha, c.d_sigma
    if kind == "x0":
        return out, (x_t - a * out) / _clamp(s, eps)
    if kind == "noise":
        return (x_t - s * out) / _clamp(a, eps), out
    if kind == "score":
        x1 = -s * out
        return (x_t - s * x1) / _clamp(a, eps), x1
    if kind == "velocity":
        # [a  s ] [x0]   [x_t]
        # [a' s'] [x1] = [u  ],  det = a s' - s a' > 0
        det = _clamp(a * ds - s * da, eps)
        return (ds * x_t - s * out) / det, (a * out - da * x_t) / det
    if kind == "v":
        # [ a  s] [x0]   [x_t]
        # [-s  a] [x1] = [v  ],  det = a^2 + s^2
        det = _clamp(a * a + s * s, eps)
        return (a * x_t - s * out) / det, (s * x_t + a * out) / det
    _check_kind(kind)
    raise AssertionError("unreachable")


def _from_pair_coefficients(kind: str, x0: torch.Tensor, x1: torch.Tensor, c: Coefficients,
                            eps: float) -> torch.Tensor:
    if kind == "x0":
        return x0
    if kind == "noise":
        return x1
    if kind == "score":
        return -x1 / _clamp(c.sigma, eps)
    if kind == "velocity":
        return c.d_alpha * x0 + c.d_sigma * x1
    if kind == "v":
        return c.alpha * x1 - c.sigma * x0
    _check_kind(kind)
    raise AssertionError("unreachable")


def to_pair(kind: str, output: torch.Tensor, x_t: torch.Tensor, t: TimeLike, proc: Interpolant,
            eps: float = EPS) -> Tuple[torch.Tensor, torch.Tensor]:
    """(E[x0|x_t], E[x1|x_t]) implied by a prediction ``output`` of type ``kind``."""
    _check_kind(kind)
    return _pair_from_coefficients(kind, output, x_t, proc.coefficients(t, x_t), eps)


def from_pair(kind: str, x0: torch.Tensor, x1: torch.Tensor, t: TimeLike, proc: Interpolant,
              eps: float = EPS) -> torch.Tensor:
    """The prediction of type ``kind`` for the pair (x0, x1) at time t."""
    _check_kind(kind)
    return _from_pair_coefficients(kind, x0, x1, proc.coefficients(t, x0), eps)


def to_x0(kind: str, output: torch.Tensor, x_t: torch.Tensor, t: TimeLike, proc: Interpolant,
          eps: float = EPS) -> torch.Tensor:
    """E[x0|x_t] from a prediction of type ``kind``."""
    return to_pair(kind, output, x_t, t, proc, eps)[0]


def from_x0(kind: str, x0: torch.Tensor, x_t: torch.Tensor, t: TimeLike, proc: Interpolant,
            eps: float = EPS) -> torch.Tensor:
    """The prediction of type ``kind`` given E[x0|x_t], with x1 = (x_t - alpha x0) / sigma."""
    _check_kind(kind)
    c = proc.coefficients(t, x_t)
    x0, x1 = _pair_from_coefficients("x0", x0, x_t, c, eps)
    return _from_pair_coefficients(kind, x0, x1, c, eps)


def convert(output: torch.Tensor, from_kind: str, to_kind: str, x_t: torch.Tensor, t: TimeLike,
            proc: Interpolant, eps: float = EPS) -> torch.Tensor:
    """A prediction of type ``from_kind`` re-expressed as type ``to_kind`` (identity if equal)."""
    _check_kind(from_kind)
    _check_kind(to_kind)
    if from_kind == to_kind:
        return output
    c = proc.coefficients(t, x_t)
    x0, x1 = _pair_from_coefficients(from_kind, output, x_t, c, eps)
    return _from_pair_coefficients(to_kind, x0, x1, c, eps)


def all_predictions(output: torch.Tensor, kind: str, x_t: torch.Tensor, t: TimeLike,
                    proc: Interpolant, eps: float = EPS) -> Predictions:
    """Every prediction type implied by ``output`` of type ``kind`` (one solve for the pair)."""
    _check_kind(kind)
    c = proc.coefficients(t, x_t)
    x0, x1 = _pair_from_coefficients(kind, output, x_t, c, eps)
    vals = {k: (output if k == kind else _from_pair_coefficients(k, x0, x1, c, eps)) for k in KINDS}
    return Predictions(**vals)


def regression_target(kind: str, x0: torch.Tensor, x1: torch.Tensor, t: TimeLike, proc: Interpolant,
                      eps: float = EPS) -> torch.Tensor:
    """The true value of type ``kind`` for a training pair (x0, x1) at time t.

    Its conditional expectation given x_t = alpha x0 + sigma x1 is what a network of that
    type learns under squared loss. Only "score" divides (by sigma, clamped at ``eps``).
    """
    return from_pair(kind, x0, x1, t, proc, eps)
