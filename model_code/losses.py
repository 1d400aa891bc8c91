"""Denoising score-matching losses for the VE process.

With D the denoiser, the weighted loss lambda(sigma) |D(u + sigma z, sigma) - u|^2 is
score matching in disguise: sigma^2 |s - grad log p(x|u)|^2 = |D - u|^2 / sigma^2 for
s = (D - x) / sigma^2. Two weightings (docs/maths.md):
  'score': lambda = 1 / sigma^2  (the classic sigma^2-weighted score loss, NCSN)
  'edm':   lambda = 1 / c_out^2 = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2
The published code weighted high-noise levels ~3000x more than low ones; both of these
make every level contribute O(1).
"""
import torch


def loss_weight(sigma: torch.Tensor, weighting: str, sigma_data: float) -> torch.Tensor:
    if weighting == "edm":
        return (sigma ** 2 + sigma_data ** 2) / (sigma * sigma_data) ** 2
    if weighting == "score":
        return 1.0 / sigma ** 2
    raise ValueError(f"unknown loss weighting '{weighting}'")


def denoising_loss(denoiser, u: torch.Tensor, sigma: torch.Tensor, z: torch.Tensor,
                   weighting: str = "edm", labels=None, sigma_data=None) -> torch.Tensor:
    """Mean over the batch of lambda(sigma) * mean over points of |D(u + sigma z) - u|^2.

    sigma_data (of the "edm" weight) defaults to the denoiser's.
    """
    sigma = sigma.to(u)
    x = u + sigma.view(-1, *([1] * (u.dim() - 1))) * z
    out = denoiser(x, sigma) if labels is None else denoiser(x, sigma, labels=labels)
    err = (out - u).pow(2).flatten(1).mean(1)
    sigma_data = denoiser.sigma_data if sigma_data is None else sigma_data
    return (loss_weight(sigma, weighting, sigma_data) * err).mean()


def interpolant_loss(model, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor, loss_target: str = "velocity",
                     labels=None):
    """Regression of an interpolant model (docs/maths.md).

    x_t = alpha(t) x0 + sigma(t) x1; the network's output (type model.model_output) is
    converted to the type `loss_target` and regressed on that type's true value for the
    pair (x0, x1). model_output = loss_target = "velocity" with rectified flow and GRF
    x1 is functional flow matching.
    """
    from .prediction import convert, regression_target

    proc = model.interpolant
    x_t = proc.sample_xt(x0, x1, t)
    pred = convert(model.predict(x_t, t, labels), model.model_output, loss_target, x_t, t, proc)
    target = regression_target(loss_target, x0, x1, t, proc)
    return (pred - target).pow(2).flatten(1).mean(1).mean()
