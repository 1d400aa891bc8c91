"""Image grids and mp4s of the level processes (pillow; opencv for the mp4, through video.py; matplotlib for
the benchmark figure only).

Images are (N, C, H, W) tensors in [0, 1] (values outside are clipped). Small images are
enlarged with nearest-neighbour scaling so an 8 x 8 digit stays readable.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch


def grid_array(images: torch.Tensor, nrow: int | None = None, pad: int = 1, min_tile: int = 32) -> np.ndarray:
    """(rows * H', cols * W', C) uint8 grid of the images, tiles scaled to at least `min_tile` pixels."""
    x = torch.as_tensor(images).detach().float().cpu().clamp(0, 1)
    n, c, h, w = x.shape
    scale = max(1, int(math.ceil(min_tile / max(h, w))))
    x = x.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)
    h, w = h * scale, w * scale
    ncol = nrow or int(math.ceil(math.sqrt(n)))
    nrows = int(math.ceil(n / ncol))
    grid = torch.ones(c, nrows * (h + pad) + pad, ncol * (w + pad) + pad)
    for i in range(n):
        r, col = divmod(i, ncol)
        grid[:, pad + r * (h + pad):pad + r * (h + pad) + h, pad + col * (w + pad):pad + col * (w + pad) + w] = x[i]
    arr = (grid.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    return np.repeat(arr, 3, axis=2) if c == 1 else arr


def save_grid(images: torch.Tensor, path, nrow: int | None = None) -> Path:
    from PIL import Image

    from .files import atomic_write

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = Image.fromarray(grid_array(images, nrow))
    atomic_write(path, lambda fh: picture.save(fh, format="PNG"))
    return path


def save_mp4(frames: torch.Tensor, path, nrow: int | None = None, seconds: float = 4.0) -> Path:
    """A trajectory (T, N, C, H, W) as an mp4, one grid per frame, lasting about `seconds`."""
    from .video import write_mp4

    # small images get 64 px tiles: a video of 8 x 8 digits at 32 px would be a postage stamp
    fps = min(30.0, max(2.0, len(frames) / seconds))
    return write_mp4((grid_array(f, nrow, min_tile=64) for f in frames), path, fps=fps)


def save_benchmark_figure(grids: Sequence[torch.Tensor], titles: Sequence[str], path, nrow: int = 6) -> Path:
    """One panel per forward process (the README figure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(grids)
    cols = min(3, n)
    rows = int(math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.5 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, g, t in zip(axes.flat, grids, titles):
        ax.imshow(grid_array(g, nrow, min_tile=16))
        ax.set_title(t, fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    import io

    from PIL import Image

    from .files import atomic_write

    drawn = io.BytesIO()
    fig.savefig(drawn, format="png", dpi=90)
    plt.close(fig)
    drawn.seek(0)
    with Image.open(drawn) as im:              # grey content: an 8-bit grey PNG is ~5x smaller
        grey = im.convert("L")
    atomic_write(path, lambda fh: grey.save(fh, format="PNG", optimize=True))
    return path
