"""EDM preconditioning (Karras et al. 2022, Table 1) around any backbone F(x, c_noise).

D(x, sigma) = c_skip x + c_out F(c_in x, c_noise) estimates E[u | x] for x = u + sigma z.
The C-preconditioned score is C grad log p_sigma(x) = (D(x, sigma) - x) / sigma^2, so
samplers never need C^{-1} (ARCHITECTURE §3.2).
"""
import torch
from torch import nn


def _expand(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, *([1] * (like.dim() - 1))).to(like)


class Denoiser(nn.Module):
    def __init__(self, backbone: nn.Module, sigma_data: float = 0.5):
        super().__init__()
        self.backbone = backbone
        self.sigma_data = float(sigma_data)

    def coefficients(self, sigma: torch.Tensor):
        sd2 = self.sigma_data ** 2
        c_skip = sd2 / (sigma ** 2 + sd2)
        c_out = sigma * self.sigma_data / (sigma ** 2 + sd2).sqrt()
        c_in = 1.0 / (sigma ** 2 + sd2).sqrt()
        c_noise = sigma.log() / 4
        return c_skip, c_out, c_in, c_noise

    def forward(self, x: torch.Tensor, sigma) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device)
        if sigma.dim() == 0:
            sigma = sigma.expand(x.shape[0])
        c_skip, c_out, c_in, c_noise = self.coefficients(sigma.float())
        f = self.backbone(_expand(c_in, x) * x, c_noise)
        return _expand(c_skip, x) * x + _expand(c_out, x) * f

    def score(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """C grad log p_sigma(x): the preconditioned score the samplers use."""
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device)
        s2 = _expand(sigma.expand(x.shape[0]) if sigma.dim() == 0 else sigma, x) ** 2
        return (self(x, sigma) - x) / s2
