"""EDM preconditioning (Karras et al. 2022, Table 1) around any backbone F(x, c_noise, labels=None).

D(x, sigma) = c_skip x + c_out F(c_in x, c_noise) estimates E[u | x] for x = u + sigma z.
The C-preconditioned score is C grad log p_sigma(x) = (D(x, sigma) - x) / sigma^2, so
samplers never need C^{-1} (docs/maths.md). Class labels, when given, go to the
backbone unchanged (backbones without classes are never passed a ``labels`` argument).
"""
import torch
from torch import nn

from .processes.base import call_net


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

    def forward(self, x: torch.Tensor, sigma, labels=None) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device)
        if sigma.dim() == 0:
            sigma = sigma.expand(x.shape[0])
        c_skip, c_out, c_in, c_noise = self.coefficients(sigma.float())
        f = call_net(self.backbone, _expand(c_in, x) * x, c_noise, labels)
        return _expand(c_skip, x) * x + _expand(c_out, x) * f

    def score(self, x: torch.Tensor, sigma, labels=None) -> torch.Tensor:
        """C grad log p_sigma(x): the preconditioned score the samplers use."""
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device)
        s2 = _expand(sigma.expand(x.shape[0]) if sigma.dim() == 0 else sigma, x) ** 2
        return (self(x, sigma, labels) - x) / s2


class InterpolantDenoiser(nn.Module):
    """An interpolant model x_t = alpha(t) x0 + sigma(t) x1 seen as a VE denoiser.

    y = x_t / alpha(t) = x0 + s x1 with s = sigma(t) / alpha(t), so the interpolant is a VE
    process in s (Karras et al. 2022, §2), and D(y, s) = E[x0 | x_t = alpha y] is the
    network's prediction converted to x0 (prediction.py). Every VE sampler therefore runs
    on interpolant models unchanged. F(x_t, t) itself is trained on the interpolant's
    own target (losses.interpolant_loss).
    """

    def __init__(self, backbone: nn.Module, interpolant, model_output: str = "velocity",
                 t_min: float = 1e-3, t_max: float = 1 - 1e-3):
        super().__init__()
        self.backbone = backbone
        self.interpolant = interpolant
        self.model_output = model_output
        self.t_min, self.t_max = float(t_min), float(t_max)
        self.sigma_data = 1.0

    def ve_sigma(self, t) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float64)
        return self.interpolant.sigma(t) / self.interpolant.alpha(t)

    def time_of(self, s: torch.Tensor) -> torch.Tensor:
        """Invert s = sigma(t) / alpha(t) (increasing in t) by bisection on [t_min, t_max]."""
        s = torch.as_tensor(s, dtype=torch.float64)
        lo = torch.full_like(s, self.t_min)
        hi = torch.full_like(s, self.t_max)
        for _ in range(60):
            mid = (lo + hi) / 2
            above = self.ve_sigma(mid) > s
            hi = torch.where(above, mid, hi)
            lo = torch.where(above, lo, mid)
        return (lo + hi) / 2

    def predict(self, x_t: torch.Tensor, t: torch.Tensor, labels=None) -> torch.Tensor:
        """The backbone's raw output (of type model_output) at time t, conditioned on t."""
        return call_net(self.backbone, x_t, t.to(x_t.dtype), labels)

    def forward(self, y: torch.Tensor, sigma, labels=None) -> torch.Tensor:
        from .prediction import to_x0

        sigma = torch.as_tensor(sigma, dtype=torch.float64, device=y.device)
        if sigma.dim() == 0:
            sigma = sigma.expand(y.shape[0])
        t = self.time_of(sigma.cpu()).to(y.device)
        alpha = self.interpolant.alpha(t).to(y.dtype)
        x_t = _expand(alpha, y) * y
        return to_x0(self.model_output, self.predict(x_t, t.float(), labels), x_t, t.to(y.dtype), self.interpolant)

    def score(self, y: torch.Tensor, sigma, labels=None) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=y.device)
        s2 = _expand(sigma.expand(y.shape[0]) if sigma.dim() == 0 else sigma, y) ** 2
        return (self(y, sigma, labels) - y) / s2
