"""The variance-exploding (annealed-noise) forward process of score-based diffusion.

x = u + sigma z with z ~ N(0, C) (white or GRF noise) and sigma a standard deviation
from the levels sigma_1 > ... > sigma_L (ARCHITECTURE §3.2).
"""
import math

import torch


class VEProcess:
    def __init__(self, sigmas: torch.Tensor, level_sampling: str = "discrete"):
        if level_sampling not in ("discrete", "continuous", "edm_lognormal"):
            raise ValueError(f"unknown level_sampling '{level_sampling}'")
        self.sigmas = torch.as_tensor(sigmas, dtype=torch.float64)
        self.level_sampling = level_sampling

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[-1])

    def sample_sigma(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Training noise levels, one per example, drawn independently.

        Discrete levels are drawn with replacement, so any batch size works (the
        published randperm(L)[:B] crashed when B > L).
        """
        if self.level_sampling == "discrete":
            idx = torch.randint(len(self.sigmas), (n,), generator=generator)
            return self.sigmas[idx].float()
        if self.level_sampling == "edm_lognormal":
            # Karras et al. 2022: ln sigma ~ N(-1.2, 1.2^2), kept inside the process's range.
            from ..schedules import sample_time
            return sample_time("edm_lognormal", n, generator).clamp(self.sigma_min, self.sigma_max)
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        log_s = math.log(self.sigma_min) + u * (math.log(self.sigma_max) - math.log(self.sigma_min))
        return log_s.exp().float()

    @staticmethod
    def perturb(u: torch.Tensor, sigma: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return u + sigma.view(-1, *([1] * (u.dim() - 1))).to(u) * z
