"""The figures a training run draws: samples at each evaluation, and for VE / interpolant field
runs what the noise and the perturbed data look like before training. Plain arguments only;
the drawing itself is in plotting.py, plotting_images.py and plotting_toy.py."""
from __future__ import annotations

from functools import partial
from pathlib import Path

import torch


def _fields(kind, samples, path, title, values):
    from . import plotting

    caption = plotting.headline(values) if values else ""
    plotting.plot_fields(samples, path, kind=kind, suptitle=f"{title}: {caption}" if caption else title)


def _images(samples, path, title, values):
    from .plotting_images import save_grid

    save_grid(samples.clamp(0, 1), Path(path).with_suffix(".png"))


def _atoms(modes, samples, path, title, values):
    from .plotting_toy import sample_scatter

    sample_scatter(samples.numpy(), modes, path, title=title)


def for_kind(kind: str, modes=None):
    """figure(samples, path, title, metric values) for data of `kind` (phase / real / image / atoms);
    `modes`: the toy's atom configurations, drawn as references."""
    if kind in ("phase", "real"):
        return partial(_fields, kind)
    if kind == "image":
        return _images
    return partial(_atoms, modes)


def noise_figures(noise, sigmas, example, seed: int, savedir) -> None:
    """Noise samples z ~ N(0, C), the sampler's start sigma_max z, C itself, and one training field
    perturbed at 16 of the noise levels `sigmas` exactly as training perturbs it."""
    from . import plotting

    gen = torch.Generator().manual_seed(seed + 2)
    resolution = tuple(example.shape[-2:])
    out = Path(savedir) / "noise"
    sigma_max = float(sigmas[0])
    plotting.plot_fields(noise.sample(5, resolution, gen), out / "noise_samples", kind="real", ncols=5,
                         colorbar=True, suptitle="noise samples z ~ N(0, C) (channel 0)")
    plotting.plot_fields(sigma_max * noise.sample(5, resolution, gen), out / "init_samples", kind="real", ncols=5,
                         colorbar=True, suptitle=f"sampler start sigma_max z, sigma_max = {sigma_max:.4g}")
    plotting.plot_matrix(noise.covariance(resolution, 200), out / "noise_sampler_C",
                         title="noise covariance C[0:200, 0:200] (from the kernel)")
    picked = sigmas[torch.linspace(0, len(sigmas) - 1, min(16, len(sigmas))).round().long()].float()
    z = noise.sample(len(picked), resolution, gen)
    noised = example[None].expand(len(picked), *example.shape) + picked.view(-1, 1, 1, 1) * z
    plotting.plot_fields(noised, Path(savedir) / "u_noised", kind="real", ncols=4, exts=("png",),
                         titles=[f"u + {s:.3g} z" for s in picked.tolist()], colorbar=True)
