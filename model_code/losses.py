"""Denoising score-matching losses for the VE process.

With D the denoiser, the weighted loss lambda(sigma) |D(u + sigma z, sigma) - u|^2 is
score matching in disguise: sigma^2 |s - grad log p(x|u)|^2 = |D - u|^2 / sigma^2 for
s = (D - x) / sigma^2. Two weightings (ARCHITECTURE §3.2):
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
                   weighting: str = "edm") -> torch.Tensor:
    """Mean over the batch of lambda(sigma) * mean over points of |D(u + sigma z) - u|^2."""
    sigma = sigma.to(u)
    x = u + sigma.view(-1, *([1] * (u.dim() - 1))) * z
    err = (denoiser(x, sigma) - u).pow(2).flatten(1).mean(1)
    return (loss_weight(sigma, weighting, denoiser.sigma_data) * err).mean()
