"""The variance-exploding (annealed-noise) forward process of score-based diffusion.

x = u + sigma z with z ~ N(0, C) (white or GRF noise) and sigma a standard deviation
from the levels sigma_1 > ... > sigma_L (docs/maths.md).

``VEProcess`` is the schedule of levels (draws of training levels, the perturbation);
``VE`` is the whole process behind the Process protocol (processes/base.py).
"""
import math
from typing import Optional, Sequence

import torch

from .base import Draw, Process, rows


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
            idx = torch.randint(len(self.sigmas), (n,), generator=generator, device=generator.device)
            return self.sigmas[idx.cpu()].float()
        if self.level_sampling == "edm_lognormal":
            # Karras et al. 2022: ln sigma ~ N(-1.2, 1.2^2), kept inside the process's range.
            from ..schedules import sample_time
            return sample_time("edm_lognormal", n, generator).clamp(self.sigma_min, self.sigma_max)
        u = torch.rand(n, generator=generator, dtype=torch.float64, device=generator.device).cpu()
        log_s = math.log(self.sigma_min) + u * (math.log(self.sigma_max) - math.log(self.sigma_min))
        return log_s.exp().float()

    @staticmethod
    def perturb(u: torch.Tensor, sigma: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return u + sigma.view(-1, *([1] * (u.dim() - 1))).to(u) * z


# --------------------------------------------------------------------------- the Process


def sample_denoiser(model, noise, sigmas, seeds: Sequence[int], shape, device, labels=None, progress: bool = False,
                    sampler: str = "annealed_langevin", batch_size: Optional[int] = None, **options) -> torch.Tensor:
    """Samples from a VE denoiser with any sampler of samplers.SAMPLERS (per-sample seeds).

    The start x = sigma_1 z and every later draw of sample k come from its own generator
    (samplers.generate), so sample k does not depend on the batch. ``labels`` (one per seed)
    reach the model on every call. ``shape`` is one sample's (C, H, W).
    """
    from ..samplers import SAMPLERS, generate
    from .base import Conditioned, check_labels, check_options

    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    fn = SAMPLERS[sampler]
    check_options(fn, options, ("denoiser", "x", "sigmas", "noise_fn", "progress"), f"sampler {sampler!r}")
    seeds = [int(s) for s in seeds]
    labels = check_labels(labels, len(seeds))
    if len(shape) != 3 or int(shape[0]) != noise.channels:
        raise ValueError(f"sample shape must be (C, H, W) with C = {noise.channels} noise channels, got {tuple(shape)}")
    resolution = tuple(int(s) for s in shape[1:])
    step = int(batch_size) if batch_size else max(1, len(seeds))
    out = []
    for start in range(0, len(seeds), step):
        part = seeds[start:start + step]
        bound = Conditioned(model, None if labels is None else labels[start:start + step])
        out.append(generate(bound, noise, sigmas, len(part), resolution, part, len(part), sampler=fn, device=device,
                            progress=progress, **options))
    if not out:
        return torch.empty(0, *shape)
    return torch.cat(out)


OUTPUTS = ("edm", "published")


class PublishedDenoiser(torch.nn.Module):
    """The published output convention around a backbone F: score(x, sigma) = F(x) / sigma^2, D = x + F(x).

    The published network returned F / sigma_var with sigma_var its level (a variance, the
    square of this project's standard deviation) and was trained on |F(u + sigma z) + sigma z|^2,
    so F estimates E[u | x] - x: D = x + F and (D - x) / sigma^2 is the same C-preconditioned
    score as the EDM denoiser's. F sees x unscaled; c_noise = log(sigma) / 4 as with EDM.
    The state dict keys are the EDM denoiser's ("backbone.*").
    """

    def __init__(self, backbone: torch.nn.Module, sigma_data: float = 0.5):
        super().__init__()
        self.backbone = backbone
        self.sigma_data = float(sigma_data)      # only the "edm" loss weighting reads it

    def raw(self, x: torch.Tensor, sigma, labels=None):
        from .base import call_net

        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device)
        if sigma.dim() == 0:
            sigma = sigma.expand(x.shape[0])
        f = call_net(self.backbone, x, sigma.log() / 4, labels)
        return f, sigma.reshape(-1, *([1] * (x.dim() - 1))).to(f)

    def forward(self, x: torch.Tensor, sigma, labels=None) -> torch.Tensor:
        return x + self.raw(x, sigma, labels)[0]

    def score(self, x: torch.Tensor, sigma, labels=None) -> torch.Tensor:
        # F / sigma^2 itself rather than (D - x) / sigma^2: the published score without rounding.
        f, s = self.raw(x, sigma, labels)
        return f / s ** 2


class VE(VEProcess, Process):
    """The VE process as a Process: x = u + sigma z, z ~ N(0, C) from ``noise``.

    wrap:   EDM-preconditioned denoiser D(x, sigma) (denoiser.Denoiser, sigma_data); with
            output="published" the published convention D = x + F(x), score = F / sigma^2
            (PublishedDenoiser), which converted published checkpoints need.
    loss:   lambda(sigma) |D(u + sigma z, sigma) - u|^2 averaged over points (losses.denoising_loss),
            lambda = 1 / c_out^2 ("edm") or 1 / sigma^2 ("score"); sigma from ``level_sampling``.
    sample: any sampler of samplers.SAMPLERS on the grid ``sigmas`` (default: the training levels).
    """

    name = "ve"

    def __init__(self, noise, sigmas, level_sampling: str = "discrete", sigma_data: float = 0.5,
                 loss_weighting: str = "edm", output: str = "edm"):
        super().__init__(sigmas, level_sampling)
        from ..losses import loss_weight

        loss_weight(torch.ones(1), loss_weighting, 1.0)           # the ValueError for an unknown weighting
        if output not in OUTPUTS:
            raise ValueError(f"unknown VE output convention {output!r}; choose one of {', '.join(OUTPUTS)}")
        self.noise = noise
        self.sigma_data = float(sigma_data)
        self.loss_weighting = loss_weighting
        self.output = output

    def wrap(self, net):
        from ..denoiser import Denoiser

        if self.output == "published":
            return PublishedDenoiser(net, sigma_data=self.sigma_data)
        return Denoiser(net, sigma_data=self.sigma_data)

    def loss(self, model, batch, generator, shard: slice = slice(None), step: int = 0) -> Draw:
        from ..losses import denoising_loss

        u = batch.x
        sigma = self.sample_sigma(len(u), generator).to(u.device)
        z = self.noise.sample(len(u), tuple(u.shape[2:]), generator, device=u.device, dtype=u.dtype)
        loss = denoising_loss(model, u[shard], sigma[shard], z[shard], self.loss_weighting, rows(batch.labels, shard),
                              self.sigma_data)
        return Draw(loss, {})

    def sample(self, model, seeds, shape, device, labels=None, progress: bool = False,
               sampler: str = "annealed_langevin", sigmas=None, batch_size: Optional[int] = None, **options):
        """Samples with ``sampler`` on the grid ``sigmas`` (default: the training levels).

        options: the sampler's own settings (annealed_langevin: T, epsilon, final_denoise;
        edm_stochastic: S_churn, ...); ``batch_size`` bounds the samples per network call.
        """
        grid = self.sigmas if sigmas is None else torch.as_tensor(sigmas, dtype=torch.float64)
        return sample_denoiser(model, self.noise, grid, seeds, shape, device, labels, progress, sampler, batch_size,
                               **options)

    def describe(self) -> dict:
        return {"type": self.name, "noise": self.noise.describe(), "sigmas": [float(s) for s in self.sigmas],
                "level_sampling": self.level_sampling, "sigma_data": self.sigma_data,
                "loss_weighting": self.loss_weighting, **({"output": self.output} if self.output != "edm" else {})}
