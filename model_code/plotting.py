"""Every matplotlib figure of the project (the only module that imports matplotlib).

Phase fields (2 channels, cos and sin) are shown as their angle with a cyclic colour
map, so -pi and pi look the same; real fields with a sequential map.
"""
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from .files import atomic_write  # noqa: E402
# The wording of a value against its floor lives in metrics.py, where the log lines (no matplotlib) reach it.
from .metrics import floor_caption, headline  # noqa: E402,F401

PHASE_CMAP = "twilight"
REAL_CMAP = "viridis"


def save(fig, path, exts=("png", "pdf")) -> list:
    """Save `fig` as path.<ext> for each ext (path given without extension)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = []
    try:
        for ext in exts:
            out = path.with_name(f"{path.name}.{ext}")
            atomic_write(out, lambda fh: fig.savefig(fh, format=ext, dpi=110, bbox_inches="tight"))
            written.append(out)
    finally:
        plt.close(fig)
    return written


def _as_images(x, kind: str):
    x = torch.as_tensor(x).detach().float().cpu()
    if kind == "phase":
        return torch.atan2(x[:, 1], x[:, 0]).numpy(), dict(cmap=PHASE_CMAP, vmin=-math.pi, vmax=math.pi)
    return x[:, 0].numpy(), dict(cmap=REAL_CMAP)


def plot_fields(x, path, kind="phase", titles=None, ncols=None, exts=("png", "pdf"),
                suptitle=None, colorbar=False):
    """A grid of fields (N, C, H, W)."""
    images, style = _as_images(x, kind)
    n = len(images)
    ncols = ncols or min(n, int(math.ceil(math.sqrt(n))))
    nrows = int(math.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.2 * ncols, 2.2 * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            im = ax.imshow(images[i], origin="lower", **style)
            if titles is not None:
                ax.set_title(titles[i], fontsize=8)
            if colorbar:
                fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if suptitle:
        fig.suptitle(suptitle)
    return save(fig, path, exts)


def plot_real_vs_generated(real, generated, path, kind="phase", n: int = 4, title=None, exts=("png",)):
    """A row of n real fields above a row of n generated ones, on one colour scale with one colour bar,
    so that a glance tells whether the samples look like the data.

    Phase fields share the cyclic scale [-pi, pi]; real fields the range of the real row, so a generated
    field brighter or darker than any real one shows up as saturated rather than rescaled away.
    """
    real_img, style = _as_images(torch.as_tensor(real)[:n], kind)
    gen_img, _ = _as_images(torch.as_tensor(generated)[:n], kind)
    if kind != "phase":
        finite = real_img[np.isfinite(real_img)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        style = dict(style, vmin=lo, vmax=hi if hi > lo else lo + 1.0)
    cols = max(len(real_img), len(gen_img), 1)
    # A title of several lines (the headline numbers) gets its own band above the fields, made before the
    # colour bar takes its share of the axes' space.
    title_band = 0.17 * (title.count("\n") + 1) + 0.1 if title else 0.0
    height = 4.5 + title_band
    fig, axes = plt.subplots(2, cols, figsize=(2.1 * cols + 0.8, height), squeeze=False)
    if title:
        fig.subplots_adjust(top=1.0 - (title_band + 0.15) / height)
    im = None
    for row, (images, label) in enumerate(((real_img, "real (validation)"), (gen_img, "generated"))):
        for c in range(cols):
            ax = axes[row, c]
            ax.set_xticks([]), ax.set_yticks([])
            if c < len(images):
                im = ax.imshow(images[c], origin="lower", **style)
            else:
                ax.axis("off")
        axes[row, 0].set_ylabel(label, fontsize=10)
    if im is not None:
        fig.colorbar(im, ax=axes.ravel().tolist(), fraction=0.03, pad=0.02,
                     label="phase (rad)" if kind == "phase" else "value (channel 0)")
    if title:
        fig.suptitle(title, fontsize=9)
    return save(fig, path, exts)


def plot_matrix(m, path, title="", exts=("png", "pdf")):
    fig, ax = plt.subplots(figsize=(5, 4.2))
    im = ax.imshow(np.asarray(torch.as_tensor(m).cpu()), cmap="magma")
    fig.colorbar(im, ax=ax)
    ax.set_title(title, fontsize=9)
    return save(fig, path, exts)


def plot_stat_histograms(real: dict, generated: dict, metrics: dict, path, kind="phase",
                         title=None, exts=("png", "pdf")):
    """Real vs generated per-sample variance and skewness (final_stats).

    Each panel's title gives its W1 against the real-vs-real floor and the floor's bootstrap
    interval (metrics.floor_caption); the suptitle adds the headline numbers (metrics.headline:
    w_total and, where the row has them, the spectrum errors), one per line.
    """
    names = ("circular variance", "circular skewness") if kind == "phase" else ("variance", "skewness")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key, name, wkey in zip(axes, ("var", "skew"), names, ("w_var", "w_skew")):
        r = np.asarray(real[key], dtype=float)
        g = np.asarray(generated[key], dtype=float)
        g = g[np.isfinite(g)]
        lo, hi = np.percentile(np.concatenate([r, g]), [0.5, 99.5]) if len(g) else (r.min(), r.max())
        bins = np.linspace(lo, hi + 1e-12, 40)
        ax.hist(r, bins=bins, alpha=0.55, density=True, label=f"real (n={len(r)})")
        ax.hist(g, bins=bins, alpha=0.55, density=True, label=f"generated (n={len(g)})")
        ax.set_title(f"{name} (W1 of the per-sample values)\n{floor_caption(metrics, wkey)}", fontsize=8)
        ax.legend(fontsize=8)
    numbers = headline(metrics, sep="\n")
    if numbers:
        title = f"{title}\n{numbers}" if title else numbers
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save(fig, path, exts)


def plot_spectra(real_spectrum, generated: dict, path, nyquist=None, title=None, exts=("png",)):
    """Radially averaged power spectra (spectrum.py): power (log scale) against wavenumber.

    real_spectrum and each value of generated ({label: spectrum}) are indexed by the integer
    wavenumber in cycles per unit domain, as metrics.radial_power_spectrum returns them; they may
    have different lengths (different grids). Band 0 (the mean) and bands without positive finite
    power are not drawn (no place on a log scale). The real spectrum is black; nyquist draws a
    dashed vertical line at the training grid's Nyquist wavenumber.
    """
    fig, ax = plt.subplots(figsize=(6.4, 4.2))

    def draw(spectrum, **style):
        p = np.asarray(torch.as_tensor(spectrum).detach().cpu().double(), dtype=float)
        k = np.arange(len(p))
        keep = (k >= 1) & np.isfinite(p) & (p > 0)
        ax.plot(k[keep], p[keep], marker="o", ms=3, **style)

    draw(real_spectrum, color="black", lw=1.6, label="real")
    for i, (label, spectrum) in enumerate(generated.items()):
        draw(spectrum, color=f"C{i}", lw=1.2, label=label)
    if nyquist is not None:
        ax.axvline(float(nyquist), ls="--", lw=1, color="0.4", label="training grid Nyquist")
    ax.set_yscale("log")
    ax.set_xlabel("wavenumber |k| (cycles per unit domain)")
    ax.set_ylabel("power per mode")
    if title:
        ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return save(fig, path, exts)


def plot_mean_fields(real_mean, gen_mean, path, kind="phase", exts=("png", "pdf")):
    """The mean real and mean generated field side by side (means over samples)."""
    both = torch.stack([torch.as_tensor(real_mean), torch.as_tensor(gen_mean)])
    return plot_fields(both, path, kind=kind, titles=["mean real", "mean generated"], ncols=2,
                       exts=exts, colorbar=True)


def plot_curves(steps, series: dict, path, xlabel="epoch", logy=True, exts=("png",)):
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for name, ys in series.items():
        ax.plot(steps[:len(ys)], ys, label=name, marker="o" if len(ys) < 30 else None)
    ax.set_xlabel(xlabel)
    if logy:
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save(fig, path, exts)


def plot_nfe_curves(series: dict, path, ylabel: str, title=None, hlines=None, points=None, logy=True,
                    exts=("png",)):
    """Quality against network evaluations (log x-axis), one line per sampler.

    series: {label: (nfes, values)}, drawn as lines with markers (sorted by NFE; non-finite
    values are left out). hlines: {label: y} reference levels (e.g. a real-vs-real floor),
    drawn dashed. points: {label: (nfes, values)} drawn as unconnected markers (e.g. every
    configuration of a swept sampler behind its best-per-NFE line).
    """
    fig, ax = plt.subplots(figsize=(7, 4.4))
    for label, (xs, ys) in (points or {}).items():
        xy = [(float(x), float(y)) for x, y in zip(xs, ys) if np.isfinite(y)]
        if xy:
            ax.scatter(*zip(*xy), s=14, alpha=0.5, color="0.6", label=label)
    for label, (xs, ys) in series.items():
        xy = sorted((float(x), float(y)) for x, y in zip(xs, ys) if np.isfinite(y))
        if xy:
            ax.plot(*zip(*xy), marker="o", ms=4, label=label)
    for i, (label, y) in enumerate((hlines or {}).items()):
        if y is not None and np.isfinite(y):
            ax.axhline(float(y), ls="--", lw=1, color=f"C{(i + 7) % 10}", label=label)
    ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("network evaluations (NFE)")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="best")
    return save(fig, path, exts)
