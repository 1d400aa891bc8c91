"""Noise fields on the unit square: white noise and Gaussian random fields (GRFs).

A field is a tensor ``(N, C, H, W)`` sampled on the grid ``x_{kl} = (k / H, l / W)``,
``k = 0..H-1``, ``l = 0..W-1`` (points ``k/n``, so a finer grid samples the same
continuous function at more points). Channels are independent copies.

Gaussian random field: ``N(0, C)`` with ``C_ij = k(x_i, x_j) + eps^2 delta_ij``.

* ``rbf``          ``k = exp(-|x - x'|^2 / (2 l^2))``. Separable: on the grid,
  ``K = K_y (x) K_x`` with 1-D kernel matrices. With ``K_y = U_y diag(a) U_y^T`` and
  ``K_x = U_x diag(b) U_x^T``,
  ``C = (U_y (x) U_x) diag(a (x) b + eps^2) (U_y (x) U_x)^T``, so a sample is
  ``U_y (sqrt(a b^T + eps^2) * Z) U_x^T`` with ``Z`` iid ``N(0, 1)`` of shape (H, W), or,
  equal in distribution, ``U_y (sqrt(a b^T) * Z1) U_x^T + eps * Z2`` with independent
  ``Z1``, ``Z2``, which is what is computed: it lets the modes whose eigenvalue ``a_i b_j``
  is below float64 round-off be dropped (see ``_prepare_rbf``). Cost: two ``eigh`` of size
  H and W once, then at most ``O(H W (H + W))`` per sample, far less for smooth fields.
* ``exponential``  ``k = exp(-|x - x'| / (2 l^2))`` (Euclidean distance, *not* squared;
  this is what the published code computed). Not separable: sampled exactly by
  circulant embedding on a periodic torus of at least ``2H x 2W`` points, grown until
  the embedded circulant is non-negative definite; the nugget ``eps^2`` is added as
  independent white noise ``eps * Z2``. Cost ``O(M log M)`` per sample, ``M`` the torus size.

Neither sampler ever forms the dense ``(H W) x (H W)`` covariance. All random draws go
through :func:`standard_normal`, which accepts one generator per sample so that sample
``k`` is the same whatever the batch size.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch

Generator = Union[None, torch.Generator, Sequence[torch.Generator]]
Resolution = Union[int, Tuple[int, int], Sequence[int]]

KERNELS = ("rbf", "exponential")

# Circulant embedding: accept an embedding whose smallest eigenvalue is >= -_CE_TOL * largest.
_CE_TOL = 1e-10
# Circulant embedding: largest torus (in points) tried before giving up on exactness.
_CE_MAX_POINTS = 2 ** 25
# Largest number of complex torus points processed in one FFT batch (bounds memory).
_CE_CHUNK_POINTS = 2 ** 24


# --------------------------------------------------------------------------- draws


def standard_normal(
    n: int,
    shape: Sequence[int],
    generator: Generator = None,
    device=None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """iid ``N(0, 1)`` draws of shape ``(n, *shape)``.

    ``generator`` is ``None`` (global RNG), one ``torch.Generator`` (the whole batch in
    one draw), or a list/tuple of ``n`` generators: sample ``k`` is then drawn from
    generator ``k`` alone, so it does not depend on the batch size or on the other
    samples. Draws happen on the generator's device and are moved to ``device``.
    """
    n = int(n)
    if n < 0:
        raise ValueError(f"standard_normal: n must be >= 0, got {n}")
    shape = tuple(int(s) for s in shape)
    if isinstance(generator, (list, tuple)):
        if len(generator) != n:
            raise ValueError(
                f"standard_normal: got {len(generator)} generators for {n} samples; "
                "pass exactly one generator per sample"
            )
        if n == 0:
            return torch.empty((0, *shape), device=device, dtype=dtype)
        draws = [torch.randn(shape, generator=g, device=g.device, dtype=dtype) for g in generator]
        out = torch.stack([d.to(device) if device is not None else d for d in draws])
        return out
    if generator is None:
        return torch.randn((n, *shape), device=device, dtype=dtype)
    if not isinstance(generator, torch.Generator):
        raise ValueError(
            "standard_normal: generator must be None, a torch.Generator or a list of them, "
            f"got {type(generator).__name__}"
        )
    out = torch.randn((n, *shape), generator=generator, device=generator.device, dtype=dtype)
    return out.to(device) if device is not None else out


def _split_generator(generator: Generator, start: int, stop: int) -> Generator:
    """The generator(s) for samples ``start:stop`` of a batch (chunked sampling)."""
    if isinstance(generator, (list, tuple)):
        return list(generator[start:stop])
    return generator


def _check_n_generators(n: int, generator: Generator) -> None:
    if isinstance(generator, (list, tuple)) and len(generator) != n:
        raise ValueError(
            f"got {len(generator)} generators for {n} samples; pass exactly one generator per sample"
        )


# --------------------------------------------------------------------------- helpers


def as_resolution(resolution: Resolution) -> Tuple[int, int]:
    """``int`` or ``(H, W)`` -> ``(H, W)`` of positive ints; ``ValueError`` otherwise."""
    if isinstance(resolution, (int, np.integer)) and not isinstance(resolution, bool):
        res = (int(resolution), int(resolution))
    else:
        try:
            res = tuple(int(r) for r in resolution)
        except TypeError:
            raise ValueError(f"resolution must be an int or (H, W), got {resolution!r}") from None
        if len(res) != 2:
            raise ValueError(f"resolution must be an int or (H, W), got {resolution!r}")
    if res[0] < 1 or res[1] < 1:
        raise ValueError(f"resolution must be positive, got {resolution!r}")
    return res


def grid_points(resolution: Resolution, n_points: Optional[int] = None) -> np.ndarray:
    """Coordinates ``(k / H, l / W)`` of the first ``n_points`` grid points, row-major, float64 (P, 2)."""
    h, w = as_resolution(resolution)
    total = h * w
    p = total if n_points is None else min(int(n_points), total)
    idx = np.arange(p)
    return np.stack([(idx // w) / h, (idx % w) / w], axis=1)


def kernel_function(kernel: str, length_scale: float):
    """The stationary kernel as a function of the Euclidean distance ``r`` (numpy, vectorised)."""
    if kernel == "rbf":
        return lambda r: np.exp(-np.square(r) / (2.0 * length_scale ** 2))
    if kernel == "exponential":
        return lambda r: np.exp(-np.abs(r) / (2.0 * length_scale ** 2))
    raise ValueError(f"unknown kernel {kernel!r}; choose one of {', '.join(KERNELS)}")


def kernel_matrix_1d(n: int, length_scale: float) -> torch.Tensor:
    """The 1-D rbf kernel matrix on the points ``k / n``, ``k = 0..n-1`` (float64, n x n)."""
    x = torch.arange(n, dtype=torch.float64) / n
    d = x[:, None] - x[None, :]
    return torch.exp(-d.square() / (2.0 * length_scale ** 2))


@contextlib.contextmanager
def _single_threaded():
    """Run torch's CPU LAPACK on one thread. For the small symmetric eigenproblems here one
    thread is as fast as several on an idle machine and orders of magnitude faster on a
    busy one (multi-threaded eigh on 2 oversubscribed cores took seconds for n = 128)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _sym_eigh(mat: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Eigen-decomposition (float64, CPU) of a symmetric PSD matrix, ascending eigenvalues;
    round-off negatives clamped to 0."""
    with _single_threaded():
        vals, vecs = torch.linalg.eigh(mat.to(dtype=torch.float64, device="cpu"))
    return vals.clamp(min=0.0), vecs


def _torus_offsets(n: int, m: int) -> np.ndarray:
    """Wrapped distances ``min(j, m - j) / n`` on a periodic torus of ``m`` points of spacing ``1 / n``."""
    j = np.arange(m)
    return np.minimum(j, m - j) / n


def _circulant_eigenvalues(kernel_fn, h: int, w: int, m1: int, m2: int) -> np.ndarray:
    """Eigenvalues (real, float64, (m1, m2)) of the block-circulant embedding of the kernel."""
    dy = _torus_offsets(h, m1)
    dx = _torus_offsets(w, m2)
    r = np.sqrt(dy[:, None] ** 2 + dx[None, :] ** 2)
    base = kernel_fn(r)
    # ``base`` is even in both indices, so its DFT is real up to round-off.
    return np.fft.fft2(base).real


# --------------------------------------------------------------------------- noise classes


class WhiteNoise:
    """``N(0, I)`` independently at every grid point and channel."""

    def __init__(self, channels: int = 2):
        channels = int(channels)
        if channels < 1:
            raise ValueError(f"WhiteNoise: channels must be >= 1, got {channels}")
        self.channels = channels

    def sample(self, n: int, resolution: Resolution, generator: Generator = None, device=None,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
        h, w = as_resolution(resolution)
        _check_n_generators(n, generator)
        return standard_normal(n, (self.channels, h, w), generator=generator, device=device, dtype=dtype)

    def covariance(self, resolution: Resolution, n_points: int = 200) -> torch.Tensor:
        h, w = as_resolution(resolution)
        p = min(int(n_points), h * w)
        return torch.eye(p, dtype=torch.float64)

    def pointwise_variance(self) -> float:
        return 1.0

    def describe(self) -> dict:
        return {"type": "white", "channels": self.channels}

    def __repr__(self) -> str:
        return f"WhiteNoise(channels={self.channels})"


class GaussianRandomField:
    """``N(0, C)``, ``C_ij = k(x_i, x_j) + eps^2 delta_ij``, sampled exactly at any resolution.

    Args:
        channels: number of independent channels.
        kernel: ``"rbf"`` (``exp(-r^2 / (2 l^2))``) or ``"exponential"`` (``exp(-r / (2 l^2))``).
        length_scale: ``l > 0`` (in units of the unit square).
        eps: nugget standard deviation ``>= 0``; the per-point variance is ``1 + eps^2``.
    """

    def __init__(self, channels: int = 2, kernel: str = "rbf", length_scale: float = 0.05,
                 eps: float = 0.01):
        channels = int(channels)
        if channels < 1:
            raise ValueError(f"GaussianRandomField: channels must be >= 1, got {channels}")
        if kernel not in KERNELS:
            raise ValueError(
                f"GaussianRandomField: unknown kernel {kernel!r}; choose one of {', '.join(KERNELS)}"
            )
        length_scale = float(length_scale)
        if not (length_scale > 0.0) or not math.isfinite(length_scale):
            raise ValueError(f"GaussianRandomField: length_scale must be positive and finite, got {length_scale}")
        eps = float(eps)
        if not (eps >= 0.0) or not math.isfinite(eps):
            raise ValueError(f"GaussianRandomField: eps must be >= 0 and finite, got {eps}")
        self.channels = channels
        self.kernel = kernel
        self.length_scale = length_scale
        self.eps = eps
        self._kernel_fn = kernel_function(kernel, length_scale)
        self._cache: dict = {}

    # ----------------------------------------------------------------- set-up

    def prepare(self, resolution: Resolution, device=None, dtype: torch.dtype = torch.float32) -> dict:
        """Build (or fetch from the cache) the factorisation for one resolution / device / dtype."""
        h, w = as_resolution(resolution)
        device = torch.device(device) if device is not None else torch.empty(0).device
        key = (h, w, str(device), dtype)
        if key not in self._cache:
            if self.kernel == "rbf":
                self._cache[key] = self._prepare_rbf(h, w, device, dtype)
            else:
                self._cache[key] = self._prepare_exponential(h, w, device, dtype)
        return self._cache[key]

    def _prepare_rbf(self, h, w, device, dtype) -> dict:
        """Eigen-decompose the 1-D kernel matrices and keep the modes that matter.

        ``C = (U_y (x) U_x) diag(a (x) b) (U_y (x) U_x)^T + eps^2 I``, so a sample is
        ``U_y (sqrt(a b^T) * Z1) U_x^T + eps * Z2`` with independent ``Z1``, ``Z2`` (equal in
        distribution to ``U_y (sqrt(a b^T + eps^2) * Z) U_x^T``: both have covariance C). Modes
        with ``a_i b_j`` below the eigensolver's round-off (``4 max(H, W) eps_64 a_max b_max``)
        carry no information and are dropped, which keeps a rectangle of ``r x s`` modes: the
        cost per sample falls from ``O(H W (H + W))`` to ``O(H W s + H r s)`` (r = s = 53 for
        l = 0.05 at 1024 px) with a covariance error at the level of float64 round-off.
        """
        a, u_y = _sym_eigh(kernel_matrix_1d(h, self.length_scale))
        if w == h:
            b, u_x = a, u_y
        else:
            b, u_x = _sym_eigh(kernel_matrix_1d(w, self.length_scale))
        a_max, b_max = float(a.max()), float(b.max())
        tol = 4.0 * max(h, w) * torch.finfo(torch.float64).eps * a_max * b_max
        keep_y = a >= tol / b_max  # a_i b_j >= tol for some j  <=>  a_i >= tol / b_max
        keep_x = b >= tol / a_max
        a, u_y = a[keep_y], u_y[:, keep_y]
        b, u_x = b[keep_x], u_x[:, keep_x]
        to = dict(device=device, dtype=dtype)
        return {
            "u_y": u_y.to(**to),                                  # (H, r)
            "u_xt": u_x.T.contiguous().to(**to),                  # (s, W)
            "scale": torch.sqrt(a[:, None] * b[None, :]).to(**to),  # (r, s)
            "modes": (int(keep_y.sum()), int(keep_x.sum())),
        }

    def _prepare_exponential(self, h, w, device, dtype) -> dict:
        m1, m2 = 2 * h, 2 * w
        best = None
        while True:
            lam = _circulant_eigenvalues(self._kernel_fn, h, w, m1, m2)
            lo, hi = float(lam.min()), float(lam.max())
            if lo >= -_CE_TOL * hi:
                best = (lam, m1, m2, True)
                break
            if best is None or lo / hi > best[0].min() / best[0].max():
                best = (lam, m1, m2, False)
            if 4 * m1 * m2 > _CE_MAX_POINTS:
                break
            m1, m2 = 2 * m1, 2 * m2  # double the padding on both axes
        lam, m1, m2, exact = best
        if not exact:
            warnings.warn(
                f"GaussianRandomField(kernel='exponential', length_scale={self.length_scale}): circulant "
                f"embedding not non-negative definite up to {m1}x{m2} points (min eigenvalue "
                f"{lam.min():.3g}, max {lam.max():.3g}); negative eigenvalues clipped to 0, so samples "
                f"at resolution {h}x{w} are approximate",
                RuntimeWarning,
                stacklevel=4,
            )
        sqrt_lam = np.sqrt(np.clip(lam, 0.0, None) / (m1 * m2))
        cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
        return {
            "m": (m1, m2),
            "sqrt_lam": torch.as_tensor(sqrt_lam).to(device=device, dtype=cdtype),
            "exact": exact,
        }

    # ----------------------------------------------------------------- sampling

    def sample(self, n: int, resolution: Resolution, generator: Generator = None, device=None,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``n`` fields of shape ``(C, H, W)``, exact in distribution; ``(n, C, H, W)``."""
        h, w = as_resolution(resolution)
        n = int(n)
        _check_n_generators(n, generator)
        device = torch.device(device) if device is not None else torch.empty(0).device
        fac = self.prepare((h, w), device=device, dtype=dtype)
        if self.kernel == "rbf":
            # draws for sample k, in order: the r x s kernel modes, then the nugget
            r, s = fac["modes"]
            z_modes = standard_normal(n, (self.channels, r, s), generator=generator, device=device, dtype=dtype)
            z_nugget = None
            if self.eps > 0:
                z_nugget = standard_normal(n, (self.channels, h, w), generator=generator, device=device,
                                           dtype=dtype)
            return self._color_rbf(fac, z_modes, z_nugget)
        # exponential: FFT on the torus, processed in chunks of samples to bound memory
        m1, m2 = fac["m"]
        pairs = (self.channels + 1) // 2
        chunk = max(1, _CE_CHUNK_POINTS // (pairs * m1 * m2))
        out = []
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            g = _split_generator(generator, start, stop)
            k = stop - start
            # draws for sample k, in order: torus (real and imaginary parts), then the nugget
            z_torus = standard_normal(k, (pairs, 2, m1, m2), generator=g, device=device, dtype=dtype)
            z_nugget = None
            if self.eps > 0:
                z_nugget = standard_normal(k, (self.channels, h, w), generator=g, device=device, dtype=dtype)
            out.append(self._color_exponential(fac, z_torus, z_nugget, h, w))
        if not out:
            return torch.empty((0, self.channels, h, w), device=device, dtype=dtype)
        return torch.cat(out, dim=0)

    def _color_rbf(self, fac: dict, z_modes: torch.Tensor, z_nugget: Optional[torch.Tensor]) -> torch.Tensor:
        """``U_y (sqrt(a b^T) * Z1) U_x^T + eps * Z2`` for batches ``Z1`` (..., r, s), ``Z2`` (..., H, W)."""
        u_y, u_xt = fac["u_y"], fac["u_xt"]
        y = fac["scale"] * z_modes
        (h, r), (s, w) = u_y.shape, u_xt.shape
        if r * s * w + h * r * w <= h * r * s + h * s * w:  # cheaper association first
            x = torch.matmul(u_y, torch.matmul(y, u_xt))
        else:
            x = torch.matmul(torch.matmul(u_y, y), u_xt)
        if z_nugget is not None:
            x = x.add_(z_nugget, alpha=self.eps)
        return x

    def _color_exponential(self, fac: dict, z_torus: torch.Tensor, z_nugget: Optional[torch.Tensor],
                           h: int, w: int) -> torch.Tensor:
        """Circulant embedding: ``Y = FFT2(sqrt(lam / M) * (Z1 + i Z2))``; ``Re Y`` and ``Im Y``
        restricted to the first ``H x W`` points are two independent exact samples of ``K``
        (they fill channels ``2p`` and ``2p + 1``). Then add ``eps * Z_nugget``."""
        k = z_torus.shape[0]
        cplx = torch.complex(z_torus[:, :, 0], z_torus[:, :, 1])  # (k, pairs, m1, m2)
        y = torch.fft.fft2(fac["sqrt_lam"] * cplx)[..., :h, :w]
        fields = torch.stack([y.real, y.imag], dim=2).reshape(k, -1, h, w)[:, : self.channels]
        if z_nugget is not None:
            fields = fields + self.eps * z_nugget
        return fields

    # ----------------------------------------------------------------- statistics

    def covariance(self, resolution: Resolution, n_points: int = 200) -> torch.Tensor:
        """Covariance among the first ``n_points`` grid points (row-major, one channel), float64.

        Computed from the kernel for those points only (never the full grid's matrix).
        """
        pts = grid_points(resolution, n_points)
        r = np.sqrt(np.sum((pts[:, None, :] - pts[None, :, :]) ** 2, axis=-1))
        cov = self._kernel_fn(r) + self.eps ** 2 * np.eye(len(pts))
        return torch.as_tensor(cov, dtype=torch.float64)

    def pointwise_variance(self) -> float:
        return 1.0 + self.eps ** 2

    def describe(self) -> dict:
        return {
            "type": "grf",
            "channels": self.channels,
            "kernel": self.kernel,
            "length_scale": self.length_scale,
            "eps": self.eps,
        }

    def __repr__(self) -> str:
        return (f"GaussianRandomField(channels={self.channels}, kernel={self.kernel!r}, "
                f"length_scale={self.length_scale}, eps={self.eps})")
