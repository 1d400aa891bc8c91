"""The level processes: heat dissipation and linear maps (training loss, sampler, ELBO, Process).

Notation (docs/maths.md; Rissanen et al. 2023). Levels k = 0..K, data at level 0,
u_k = T(k) u_0 with T from processes/heat.py or processes/linear.py.

Inference distribution (factorised over levels):  q(u_k | u_0) = N(T(k) u_0, sigma^2 I), k >= 1.
Generative model:  p(u_K) = N(m, Sigma) (the prior below),
                   p(u_{k-1} | u_k) = N(mu(u_k, k), delta^2 I),  mu(x, k) = x + F(x, k) (residual).

Training (every k in 1..K, K included):  k ~ U{1..K}, x = T(k) u_0 + sigma eps,
    loss = mean |mu(x, k) - T(k-1) u_0|^2.
Sampling:  u_K ~ p(u_K); for k = K..1: u_{k-1} = mu(u_k, k) + delta eps_k, no noise on the last step.
Negative ELBO (nats per image; a bound on -log P(u_0) of the *discrete* data):
    L_K = KL(q(u_K | u_0) || p(u_K))
    L_k = E_q(u_{k+1}|u_0) KL(q(u_k | u_0) || p(u_k | u_{k+1}))  for k = 1..K-1
        = D/2 (sigma^2/delta^2 - 1) + D log(delta/sigma) + |T(k) u_0 - mu(u_{k+1}, k+1)|^2 / (2 delta^2)
    L_0 = -E log P(u_0 | u_1),  P = N(mu(u_1, 1), delta^2) integrated over each pixel's bin of width
          1/(levels-1) (the discretised Gaussian; the end bins extend to +-infinity).
bits/dim = total / (D ln 2), D = C H W.

``LevelsProcess`` puts these behind the Process protocol (processes/base.py).
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Sequence

import torch
from torch import nn

from .base import Draw, Process, call_net, check_labels, rows
from .gaussian_prior import GaussianPrior


# ----------------------------------------------------------------------------- the model

class LevelModel(nn.Module):
    """mu(x, k) = x + F(x, k): the network predicts the residual u_{k-1} - u_k."""

    def __init__(self, net: nn.Module, residual: bool = True):
        super().__init__()
        self.net = net
        self.residual = bool(residual)

    def forward(self, x: torch.Tensor, k: torch.Tensor, labels=None) -> torch.Tensor:
        k = torch.as_tensor(k, device=x.device).reshape(-1).expand(x.shape[0])
        out = call_net(self.net, x, k.to(x.dtype), labels)
        return x + out if self.residual else out


# ----------------------------------------------------------------------------- the prior

def training_loss(model: Callable, fmap, u0: torch.Tensor, sigma: float, generator: torch.Generator,
                  shard: slice = slice(None), labels: Optional[torch.Tensor] = None) -> torch.Tensor:
    """One draw of mean |mu(T(k) u_0 + sigma eps, k) - T(k-1) u_0|^2 with k ~ U{1..K} (K included).

    k and eps are drawn for all of u0, the loss is the mean over the rows ``shard`` (so the
    shards of one batch add up to it); ``labels`` are those rows' labels.
    """
    b = u0.shape[0]
    k = torch.randint(1, fmap.K + 1, (b,), generator=generator, device=generator.device).to(u0.device)[shard]
    eps = torch.randn(u0.shape, generator=generator, device=generator.device).to(u0)[shard]
    u0 = u0[shard]
    x = fmap.apply(u0, k) + sigma * eps          # u_k + noise
    target = fmap.apply(u0, k - 1)               # u_{k-1}: a separate tensor, never x itself
    out = model(x, k) if labels is None else model(x, k, labels=labels)
    return ((out - target) ** 2).mean()


# ----------------------------------------------------------------------------- sampling

def white_noise(n_dims: int, seeds: Sequence[int], steps: int, shape) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample draws from torch.Generator(seed_i): the prior's z_i (D,) then `steps` noises (shape).

    Sample i depends only on seeds[i], never on the batch it is in.
    """
    zs, noises = [], []
    for seed in seeds:
        g = torch.Generator().manual_seed(int(seed))
        zs.append(torch.randn(n_dims, generator=g))
        noises.append(torch.randn((steps, *shape), generator=g))
    return torch.stack(zs), torch.stack(noises)


@torch.no_grad()
def sample_levels(model: Callable, u_K: torch.Tensor, noise: torch.Tensor, delta: float, K: int,
                  keep_trajectory: bool = False, device="cpu", progress: Optional[Callable] = None,
                  labels: Optional[torch.Tensor] = None):
    """Run u_{k-1} = mu(u_k, k) + delta eps_k for k = K..1 (no noise on the last step).

    u_K (B, C, H, W) is the prior draw; noise (B, K, C, H, W) holds eps for the steps k = K..2
    in order (noise[:, j] is used at k = K - j; the last entry is unused). Returns u_0 and,
    if asked, the trajectory (K + 1, B, C, H, W) on the CPU, from u_K to u_0. ``labels`` (B,)
    reach the model at every step.
    """
    u = u_K.to(device)
    kw = {} if labels is None else {"labels": labels.to(device)}
    frames = [u.cpu()] if keep_trajectory else None
    steps = range(K, 0, -1)
    for j, k in enumerate(progress(steps) if progress else steps):
        level = torch.full((u.shape[0],), k, device=device, dtype=torch.long)
        u = model(u, level, **kw)
        if k > 1:
            u = u + delta * noise[:, j].to(device)
        if keep_trajectory:
            frames.append(u.cpu())
    return u.cpu(), (torch.stack(frames) if keep_trajectory else None)


def slerp(z_a: torch.Tensor, z_b: torch.Tensor, n: int) -> torch.Tensor:
    """n points cos(l pi/2) z_a + sin(l pi/2) z_b, l in [0, 1]: every point is again N(0, I) in law."""
    lam = torch.linspace(0, 1, n, dtype=z_a.dtype)[:, None] * (math.pi / 2)
    return torch.cos(lam) * z_a[None] + torch.sin(lam) * z_b[None]


def initial_and_noise(mode: str, prior: GaussianPrior, K: int, seeds: Sequence[int], num_points: int = 10):
    """(u_K, noise) for the sampling modes of sample.py.

    random:      u_K and noise from each sample's own generator.
    same_init:   one u_K (of seeds[0]) for every sample; noise from each sample's generator.
    share_noise: each sample's own u_K; one noise sequence (of seeds[0]) for every sample.
    interpolate: num_points prior states on the great circle between those of seeds[0] and seeds[1]
                 (slerp of the white z, so each is a prior draw), one shared noise sequence.
    """
    shape = prior.shape
    if mode == "interpolate":
        z, noise = white_noise(prior.dim, list(seeds[:2]), K, shape)
        z = slerp(z[0], z[1], num_points)
        return prior.from_white(z), noise[:1].expand(num_points, *noise.shape[1:]).clone()
    z, noise = white_noise(prior.dim, seeds, K, shape)
    if mode == "same_init":
        z = z[:1].expand_as(z)
    elif mode == "share_noise":
        noise = noise[:1].expand_as(noise).clone()
    elif mode != "random":
        raise ValueError(f"unknown sampling mode {mode!r}")
    return prior.from_white(z), noise


# ----------------------------------------------------------------------------- ELBO

def log_discretised_gaussian(x: torch.Tensor, mean: torch.Tensor, std: float, levels: int) -> torch.Tensor:
    """log P(x) for x on the grid j/(levels-1) under N(mean, std^2) integrated over x's bin (float64).

    Bins are [x - h, x + h], h = 1/(2 (levels - 1)); the bin of 0 extends to -inf, that of 1 to +inf.
    """
    x, mean = x.double(), mean.double()
    half = 0.5 / (levels - 1)
    upper = (x + half - mean) / std
    lower = (x - half - mean) / std
    log_cdf_upper = torch.special.log_ndtr(upper)              # log Phi(upper)
    log_sf_lower = torch.special.log_ndtr(-lower)              # log (1 - Phi(lower))
    # log(Phi(upper) - Phi(lower)), computed on the side away from the far tail.
    right = log_sf_lower + torch.log1p(-torch.exp(torch.special.log_ndtr(-upper) - log_sf_lower).clamp(max=1 - 1e-15))
    left = log_cdf_upper + torch.log1p(-torch.exp(torch.special.log_ndtr(lower) - log_cdf_upper).clamp(max=1 - 1e-15))
    mid = torch.where(lower > 0, right, left)
    return torch.where(x < half, log_cdf_upper, torch.where(x > 1 - half, log_sf_lower, mid))


@torch.no_grad()
def negative_elbo_terms(model: Callable, fmap, prior: GaussianPrior, u0: torch.Tensor, sigma: float,
                        delta: float, levels: int, generator: torch.Generator,
                        labels: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-image terms (B, K + 1) in nats: column k is L_k of the module docstring (0..K)."""
    kw = {} if labels is None else {"labels": labels.to(u0.device)}
    K = fmap.K
    b = u0.shape[0]
    D = u0[0].numel()
    terms = torch.zeros(b, K + 1, dtype=torch.float64)
    terms[:, K] = prior.kl_from(fmap.apply(u0, K), sigma)
    const = 0.5 * D * (sigma ** 2 / delta ** 2 - 1) + D * math.log(delta / sigma)
    for k in range(0, K):
        eps = torch.randn(u0.shape, generator=generator, device=generator.device).to(u0)
        x = fmap.apply(u0, k + 1) + sigma * eps                          # u_{k+1} ~ q(u_{k+1} | u_0)
        mu = model(x, torch.full((b,), k + 1, device=u0.device, dtype=torch.long), **kw)
        if k == 0:
            logp = log_discretised_gaussian(u0, mu, delta, levels)
            terms[:, 0] = -logp.reshape(b, -1).sum(1).double().cpu()
        else:
            sq = ((fmap.apply(u0, k) - mu) ** 2).reshape(b, -1).sum(1).double().cpu()
            terms[:, k] = const + sq / (2 * delta ** 2)
    return terms


def elbo_summary(terms: torch.Tensor, dims: int) -> Dict[str, object]:
    """Mean negative ELBO in nats and bits/dim, with the per-level breakdown."""
    per_level = terms.mean(0)
    total = float(per_level.sum())
    to_bpd = 1.0 / (dims * math.log(2))
    return {"neg_elbo_nats": total, "bpd": total * to_bpd, "n_images": int(terms.shape[0]),
            "per_level_nats": [float(v) for v in per_level],
            "per_level_bpd": [float(v) * to_bpd for v in per_level]}


# ----------------------------------------------------------------------------- the Process

def describe_map(fmap) -> dict:
    """What rebuilds a forward map with processes.linear.build_map (see ``map_from_description``)."""
    desc = {"forward": fmap.name, "K": int(fmap.K), "shape": [int(s) for s in fmap.shape],
            "map_seed": int(getattr(fmap, "seed", 0))}
    if hasattr(fmap, "blur_sigma_min"):
        desc["blur_sigma_min"] = float(fmap.blur_sigma_min)
        desc["blur_sigma_max"] = float(fmap.blur_sigma_max)
    return desc


def map_from_description(desc: dict):
    """The forward map of ``describe_map`` (the maps' own ``describe()``, with name / seed, works too)."""
    from .linear import build_map

    d = dict(desc)
    name = d.pop("forward", None) or d.pop("name")
    seed = d.pop("map_seed", d.pop("seed", 0))
    return build_map(name, d.pop("shape"), d.pop("K"), seed=seed, **d)


PRIOR_KINDS = ("auto", "full", "dct_diag")
SAMPLING_MODES = ("random", "same_init", "share_noise", "interpolate")


class LevelsProcess(Process):
    """Heat dissipation or a linear map u_k = T(k) u_0 (+ N(0, sigma^2 I)) as a Process (module docstring).

    fmap:          the forward map (processes.heat / processes.linear), or its ``describe_map`` dict;
    sigma:         training noise std of q(u_k | u_0);
    delta:         sampling (and ELBO) noise std of p(u_{k-1} | u_k);
    prior_kind:    "full" | "dct_diag" | "auto" (full up to 4096 dimensions, DCT-diagonal above);
    prior_fit_max: the prior is fitted on the first prior_fit_max training images;
    residual:      mu(x, k) = x + F(x, k) (else F itself);
    data_levels:   number of intensity levels of the data (256 for 8-bit images), for the ELBO's L_0.

    wrap -> LevelModel; loss = ``training_loss``; fit(train) fits the Gaussian prior on T(K) u_0,
    which ``state_dict`` carries; sample runs the reverse chain from the prior.
    """

    name = "levels"

    def __init__(self, fmap, sigma: float = 0.01, delta: float = 0.0125, prior_kind: str = "auto",
                 prior_fit_max: int = 10000, residual: bool = True, data_levels: Optional[int] = 256):
        if prior_kind not in PRIOR_KINDS:
            raise ValueError(f"unknown prior_kind {prior_kind!r}; choose one of {', '.join(PRIOR_KINDS)}")
        if not sigma > 0 or not delta > 0:
            raise ValueError(f"need sigma > 0 and delta > 0, got {sigma}, {delta}")
        self.fmap = map_from_description(fmap) if isinstance(fmap, dict) else fmap
        self.sigma, self.delta = float(sigma), float(delta)
        self.prior_kind, self.prior_fit_max = prior_kind, int(prior_fit_max)
        self.residual = bool(residual)
        self.data_levels = None if data_levels is None else int(data_levels)
        self.prior: Optional[GaussianPrior] = None

    @property
    def K(self) -> int:
        return self.fmap.K

    def resolved_prior_kind(self) -> str:
        if self.prior_kind != "auto":
            return self.prior_kind
        return "full" if math.prod(self.fmap.shape) <= 4096 else "dct_diag"

    def wrap(self, net):
        return LevelModel(net, self.residual)

    def loss(self, model, batch, generator, shard: slice = slice(None), step: int = 0) -> Draw:
        loss = training_loss(model, self.fmap, batch.x, self.sigma, generator, shard, rows(batch.labels, shard))
        return Draw(loss, {})

    # --------------------------------------------------------------- prior

    @torch.no_grad()
    def fit(self, train: torch.Tensor, chunk: int = 1024) -> None:
        """Fit the Gaussian prior p(u_K) to T(K) u_0 over the first prior_fit_max training images."""
        u = train[:self.prior_fit_max]
        top = torch.cat([self.fmap.apply(u[i:i + chunk], self.K).cpu() for i in range(0, len(u), chunk)])
        self.prior = GaussianPrior.fit(top, self.sigma, self.resolved_prior_kind())

    def state_dict(self) -> dict:
        return {} if self.prior is None else {"prior": self.prior.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        unknown = sorted(set(state) - {"prior"})
        if unknown:
            raise ValueError(f"levels: unexpected state keys {unknown}")
        self.prior = GaussianPrior.from_state(state["prior"]) if "prior" in state else None

    def _need_prior(self) -> GaussianPrior:
        if self.prior is None:
            raise RuntimeError("the levels prior is not fitted: call fit(train) or load_state_dict(state) first")
        return self.prior

    # --------------------------------------------------------------- sampling and likelihood

    @torch.no_grad()
    def sample(self, model, seeds, shape, device, labels=None, progress: bool = False, mode: str = "random",
               delta: Optional[float] = None, num_points: int = 10, keep_trajectory: bool = False,
               batch_size: Optional[int] = None):
        """Samples of the reverse chain u_{k-1} = mu(u_k, k) + delta eps (module docstring).

        mode (levels.initial_and_noise): random (each sample from its own seed), same_init (one
        u_K, that of seeds[0]), share_noise (one noise sequence, that of seeds[0]), interpolate
        (``num_points`` samples between the prior draws of seeds[0] and seeds[1]).
        Returns u_0 (n, C, H, W) on the CPU, or (u_0, trajectory (K + 1, n, C, H, W)) with
        ``keep_trajectory``.
        """
        if mode not in SAMPLING_MODES:
            raise ValueError(f"unknown sampling mode {mode!r}; choose one of {', '.join(SAMPLING_MODES)}")
        prior = self._need_prior()
        if tuple(int(s) for s in shape) != tuple(prior.shape):
            raise ValueError(f"sample shape {tuple(shape)} differs from the prior's {tuple(prior.shape)}")
        if mode == "interpolate" and len(seeds) < 2:
            raise ValueError("mode 'interpolate' needs two seeds")
        if not seeds:
            empty = torch.empty(0, *prior.shape)
            return (empty, torch.empty(self.K + 1, 0, *prior.shape)) if keep_trajectory else empty
        seeds = [int(s) for s in seeds]
        n = num_points if mode == "interpolate" else len(seeds)
        labels = check_labels(labels, n)
        delta = self.delta if delta is None else float(delta)
        step = int(batch_size) if batch_size else n
        shared = None if mode == "random" else initial_and_noise(mode, prior, self.K, seeds, num_points)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = lambda it: tqdm(it, desc="levels", leave=False)  # noqa: E731
        outs, trajs = [], []
        for i in range(0, n, step):
            part = slice(i, i + step)
            # random mode draws each chunk's noise (B, K, C, H, W) only when it is needed
            u_K, noise = (initial_and_noise(mode, prior, self.K, seeds[part]) if shared is None
                          else (shared[0][part], shared[1][part]))
            u0, traj = sample_levels(model, u_K, noise, delta, self.K, keep_trajectory, device, bar,
                                     rows(labels, part))
            outs.append(u0)
            trajs.append(traj)
        u0 = torch.cat(outs).float()
        if keep_trajectory:
            return u0, torch.cat(trajs, dim=1).float()
        return u0

    @torch.no_grad()
    def elbo_terms(self, model, u0: torch.Tensor, generator: torch.Generator, delta: Optional[float] = None,
                   labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Negative-ELBO terms (B, K + 1) in nats per image (column k is L_k; see the module docstring)."""
        if self.data_levels is None:
            raise ValueError("the ELBO needs discrete data: data_levels is None")
        delta = self.delta if delta is None else float(delta)
        return negative_elbo_terms(model, self.fmap, self._need_prior(), u0, self.sigma, delta, self.data_levels,
                                   generator, labels)

    def describe(self) -> dict:
        return {"type": self.name, "map": describe_map(self.fmap), "sigma": self.sigma, "delta": self.delta,
                "prior_kind": self.prior_kind, "prior_fit_max": self.prior_fit_max, "residual": self.residual,
                "data_levels": self.data_levels}
