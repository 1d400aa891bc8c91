"""Figures of the two-atom toy problem (with plotting.py, the only modules importing matplotlib).

Inputs are numpy arrays computed by the caller (toy_runs.py, scripts/analyse_toy.py):
score fields are shown as sigma * s(x, sigma) (order one at every noise level) on a
regular grid of [0, 1)^2, with the two modes marked.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .plotting import save  # noqa: E402


def _field_panel(ax, grid, field, modes, title):
    """Quiver of one (n, n, 2) field at grid points (n, n, 2); arrows normalised per panel."""
    mag = np.linalg.norm(field, axis=-1)
    scale = max(float(mag.max()), 1e-12)
    step = grid[1, 0, 0] - grid[0, 0, 0]
    q = ax.quiver(grid[..., 0], grid[..., 1], field[..., 0] / scale, field[..., 1] / scale, mag,
                  cmap="viridis", angles="xy", scale_units="xy", scale=1 / (0.9 * step), width=0.006)
    ax.plot(modes[:, 0], modes[:, 1], "r+", ms=8, mew=1.5)
    ax.set_xlim(0, 1), ax.set_ylim(0, 1), ax.set_aspect("equal")
    ax.set_xticks([0, 0.5, 1]), ax.set_yticks([0, 0.5, 1])
    ax.set_title(title, fontsize=8)
    return q


def score_field_figure(grid, fields: dict, sigmas, modes, ts=None):
    """Rows: the named fields (each (T, n, n, 2) of sigma * s); columns: the T noise levels."""
    names = list(fields)
    n_t = len(sigmas)
    fig, axes = plt.subplots(len(names), n_t, figsize=(2.1 * n_t, 2.2 * len(names)), squeeze=False)
    for r, name in enumerate(names):
        for c in range(n_t):
            tt = f"t={ts[c]:.2f} " if ts is not None else ""
            _field_panel(axes[r, c], grid, fields[name][c], modes, f"{name}: {tt}sigma={sigmas[c]:.3g}")
    fig.tight_layout()
    return fig


def score_field_frames(grid, fields: dict, sigmas, ts, modes, dpi: int = 72):
    """RGB frames (H, W, 3) uint8 over t of the named fields side by side, one per t."""
    from .video import figure_array

    names = list(fields)
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.3), squeeze=False, dpi=dpi)
    frames = []
    for k in range(len(ts)):
        for ax, name in zip(axes[0], names):
            ax.clear()
            _field_panel(ax, grid, fields[name][k], modes, f"{name}\nt={ts[k]:.2f}, sigma={sigmas[k]:.3g}")
        fig.tight_layout()
        frames.append(figure_array(fig))
    plt.close(fig)
    return frames


def score_field_video(grid, fields: dict, sigmas, ts, modes, path, fps: int = 5, gif: bool = True, dpi: int = 72):
    """path.mp4 (the seed's video of the score vector field) and, with `gif`, path.gif from the same frames
    (docs/benchmarks.md shows the GIFs inline, which markdown cannot do with an mp4). Returns the files."""
    from PIL import Image

    from .files import atomic_write
    from .video import write_mp4

    frames = score_field_frames(grid, fields, sigmas, ts, modes, dpi)
    path = Path(path)
    written = [write_mp4(frames, path.with_name(path.name + ".mp4"), fps=fps)]
    if gif:
        pics = [Image.fromarray(f) for f in frames]
        out = path.with_name(path.name + ".gif")
        atomic_write(out, lambda fh: pics[0].save(fh, format="GIF", save_all=True, append_images=pics[1:],
                                                  duration=int(1000 / fps), loop=0))
        written.append(out)
    return written


def marginal_figure(positions, edges, y, analytic_end, ts, analytic_t, path, title="", exts=("png",)):
    """The marginal of the atom positions: left, the analytic p_t(y) over the diffusion time t (one row
    per t); right, the histogram of the sampled positions against the analytic marginal where the samples
    end. positions: every atom coordinate of every sample; analytic_t: (len(ts), len(y))."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(8.4, 3.1), gridspec_kw={"width_ratios": [1, 1.15]})
    im = left.imshow(np.asarray(analytic_t), aspect="auto", origin="lower", cmap="magma",
                     extent=(0, 1, float(ts[0]), float(ts[-1])))
    fig.colorbar(im, ax=left, fraction=0.046, pad=0.03, label="p_t(y)")
    left.set_xlabel("atom position y"), left.set_ylabel("diffusion time t")
    left.set_title("analytic marginal p_t(y) of one atom", fontsize=8)
    right.hist(positions, bins=edges, density=True, alpha=0.55, label=f"samples ({len(positions)} positions)")
    right.plot(y, analytic_end, "k-", lw=1.1, label="analytic")
    right.set_xlim(0, 1), right.set_xlabel("atom position y"), right.set_ylabel("density")
    right.set_title(title, fontsize=8), right.legend(fontsize=7)
    fig.tight_layout()
    return save(fig, path, exts)


def sample_scatter(samples, modes, path, title="", exts=("png",)):
    """Samples on the torus (2 atoms: x_1 vs x_2), modes marked."""
    fig, ax = plt.subplots(figsize=(3.4, 3.4))
    ax.scatter(samples[:, 0], samples[:, 1], s=1.5, alpha=0.4, lw=0)
    ax.plot(modes[:, 0], modes[:, 1], "r+", ms=10, mew=1.5)
    ax.set_xlim(0, 1), ax.set_ylim(0, 1), ax.set_aspect("equal")
    ax.set_xlabel("atom 1"), ax.set_ylabel("atom 2"), ax.set_title(title, fontsize=9)
    return save(fig, path, exts)


def radial_histogram(r, scale: float, path, title="", exts=("png",)):
    """Histogram of the distance to the nearest mode against the Rayleigh density
    f(r) = r / s^2 exp(-r^2 / (2 s^2))."""
    fig, ax = plt.subplots(figsize=(3.6, 2.8))
    hi = max(float(np.quantile(r, 0.999)), 4 * scale)
    ax.hist(r, bins=60, range=(0, hi), density=True, alpha=0.6, label="samples")
    rr = np.linspace(0, hi, 300)
    ax.plot(rr, rr / scale ** 2 * np.exp(-rr ** 2 / (2 * scale ** 2)), "k-", lw=1.2, label=f"Rayleigh({scale:.3g})")
    ax.set_xlabel("distance to nearest mode"), ax.set_ylabel("density")
    ax.set_title(title, fontsize=9), ax.legend(fontsize=7)
    return save(fig, path, exts)


def score_error_curves(ts, errors: dict, path, ylabel="E_p_t sigma^2 |s - s*|^2", exts=("png",)):
    """One curve per experiment of the p_t-weighted score error against t (log scale)."""
    fig, ax = plt.subplots(figsize=(4.6, 3.0))
    for name, err in errors.items():
        ax.plot(ts, np.maximum(err, 1e-12), marker=".", label=name)
    ax.set_yscale("log"), ax.set_xlabel("t"), ax.set_ylabel(ylabel, fontsize=8)
    ax.legend(fontsize=6), ax.grid(alpha=0.3)
    return save(fig, path, exts)
