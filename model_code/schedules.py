"""Noise-level schedules (standard deviations, decreasing)."""
import math

import torch


def sigma_levels(sigma_1: float, sigma_L: float, L: int, schedule: str = "geometric") -> torch.Tensor:
    """sigma_1 > ... > sigma_L as float64, geometric (NCSN) or linear spacing."""
    if not sigma_1 > sigma_L > 0:
        raise ValueError(f"need sigma_1 > sigma_L > 0, got {sigma_1}, {sigma_L}")
    if L == 1:
        return torch.tensor([float(sigma_1)], dtype=torch.float64)
    if schedule == "geometric":
        return torch.exp(torch.linspace(math.log(sigma_1), math.log(sigma_L), L, dtype=torch.float64))
    if schedule == "linear":
        return torch.linspace(sigma_1, sigma_L, L, dtype=torch.float64)
    raise ValueError(f"unknown schedule '{schedule}' (geometric or linear)")


def edm_sigmas(sigma_max: float, sigma_min: float, n: int, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. (2022) eq. 5: n levels, dense near sigma_min for rho > 1 (float64, decreasing)."""
    if n == 1:
        return torch.tensor([float(sigma_max)], dtype=torch.float64)
    i = torch.arange(n, dtype=torch.float64) / (n - 1)
    inv = 1.0 / rho
    return (sigma_max ** inv + i * (sigma_min ** inv - sigma_max ** inv)) ** rho
