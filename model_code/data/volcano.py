"""Volcano InSAR phase data: the real .int files and a physical synthetic generator.

Format (as shipped with the GANO paper's InSAR_Volcano.tar): `DATA_DIR/subset_128/**/*.int`,
each a raw little-endian complex64 array of 128 x 128 pixels (real and imaginary parts
interleaved as float32; 131072 bytes). Only the phase angle(z) is used; it is stored as
the two channels (cos, sin) so the data are smooth functions on a grid.

The synthetic generator writes interferograms in exactly this format from a Mogi point
source, a line-of-sight projection, atmospheric delay, an orbital ramp and
decorrelation noise, so the real loader reads them unchanged.
"""

from __future__ import annotations

import math
import os
import pathlib

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from model_code.errors import UserError

INT_SIDE = 128
INT_DTYPE = np.dtype("<c8")
INT_BYTES = INT_SIDE * INT_SIDE * INT_DTYPE.itemsize  # 131072
SUBSET = "subset_128"
SYNTHETIC = "synthetic"

C_BAND_WAVELENGTH = 0.0555  # metres (Sentinel-1)

# --------------------------------------------------------------------------- reading


def _int_files_under(folder: pathlib.Path) -> list[pathlib.Path]:
    """Every *.int file below folder, sorted by the relative path string."""
    files = [p for p in folder.rglob("*.int") if p.is_file()]
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def list_volcano_files(data_dir) -> list[pathlib.Path]:
    """Sorted list of `data_dir/subset_128/**/*.int` (sorted by relative path string).

    Raises UserError naming the folder when data_dir or its subset_128 folder is
    missing, or when it holds no .int files.
    """
    data_dir = pathlib.Path(data_dir)
    if not data_dir.is_dir():
        raise UserError(
            f"data folder {data_dir} does not exist; see data/README.org "
            f"(download InSAR_Volcano.tar or run scripts/make_volcano.py --out {data_dir})"
        )
    subset = data_dir / SUBSET
    if not subset.is_dir():
        raise UserError(
            f"data folder {data_dir} has no {SUBSET}/ folder; unpack InSAR_Volcano.tar there "
            f"or run scripts/make_volcano.py --out {data_dir}"
        )
    files = _int_files_under(subset)
    if not files:
        raise UserError(f"no .int files under {subset}; see data/README.org")
    return files


def read_int_file(path) -> np.ndarray:
    """Read one interferogram: complex64 array (128, 128).

    Raises UserError naming the file (and its size) when it is not 131072 bytes, or when it
    holds NaN / inf values.
    """
    path = pathlib.Path(path)
    try:
        size = path.stat().st_size
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror}") from None
    if size != INT_BYTES:
        raise UserError(
            f"{path} has {size} bytes; a {INT_SIDE} x {INT_SIDE} complex64 .int file has {INT_BYTES}"
        )
    z = np.fromfile(path, dtype=INT_DTYPE).reshape(INT_SIDE, INT_SIDE).astype(np.complex64)
    bad = int(np.count_nonzero(~np.isfinite(z)))
    if bad:
        raise UserError(f"{path} holds {bad} non-finite (NaN or inf) values; its phase is undefined")
    return z


def phase_to_channels(phase: np.ndarray) -> np.ndarray:
    """Phase (H, W) -> float32 (2, H, W) holding (cos, sin)."""
    phase = np.asarray(phase)
    return np.stack([np.cos(phase), np.sin(phase)]).astype(np.float32)


def phase_of(x: torch.Tensor) -> torch.Tensor:
    """(N, 2, H, W) (cos, sin) fields -> (N, H, W) phase atan2(sin, cos) in [-pi, pi]."""
    if x.ndim < 3 or x.shape[-3] != 2:
        raise ValueError(f"expected (cos, sin) channels in dimension -3, got shape {tuple(x.shape)}")
    return torch.atan2(x.select(-3, 1), x.select(-3, 0))


def split_indices(n: int, val_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/validation split of range(n): (train_idx, valid_idx), each sorted.

    The validation set has round(n * val_size) items, but at least 1, and the training
    set keeps at least 1. The permutation comes from np.random.default_rng(seed).
    """
    n = int(n)
    if n < 2:
        raise UserError(f"need at least 2 samples to split into train and validation, got {n}")
    if not 0.0 <= val_size < 1.0:
        raise UserError(f"val_size must be in [0, 1), got {val_size}")
    n_valid = min(max(int(round(n * val_size)), 1), n - 1)
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_valid:]), np.sort(perm[:n_valid])


def _resize_channels(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """Resize (N, 2, H, W) (cos, sin) fields and put them back on the unit circle."""
    side = x.shape[-1]
    if resolution == side:
        return x
    if resolution < side:
        x = F.interpolate(x, size=(resolution, resolution), mode="area")
    else:
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
    norm = torch.linalg.vector_norm(x, dim=1, keepdim=True)
    return torch.where(norm > 1e-6, x / norm.clamp_min(1e-6), x)


def load_volcano(
    data_dir,
    resolution: int | None = None,
    npad: int = 0,
    val_size: float = 0.1,
    seed: int = 0,
    max_files: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load every interferogram as (cos, sin) fields: (train, valid), float32 (N, 2, H, W).

    resolution: None keeps 128 px; an int resizes (area averaging when shrinking,
    bilinear when enlarging) and renormalises (cos, sin) to unit length.
    npad: pixels cropped in total from each spatial axis after resizing, npad // 2 at
    the start and the rest at the end (published setting: 128 px, npad=8 -> 120 px).
    The split is over the sorted file list, so it is identical on every machine.
    max_files: keep only the first N files of the sorted list (quick runs).
    """
    if resolution is not None and (isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or resolution < 1):
        raise UserError(f"resolution must be a positive integer or None, got {resolution!r}")
    side = INT_SIDE if resolution is None else int(resolution)
    if isinstance(npad, bool) or not isinstance(npad, (int, np.integer)) or not 0 <= npad < side:
        raise UserError(f"npad must be an integer in [0, {side}) for {side} px fields, got {npad!r}")

    files = list_volcano_files(data_dir)
    if max_files is not None:
        files = files[:max_files]
    train_idx, valid_idx = split_indices(len(files), val_size, seed)

    channels = np.empty((len(files), 2, INT_SIDE, INT_SIDE), dtype=np.float32)
    bar = tqdm(files, desc="reading .int files", unit="file", disable=True if len(files) <= 200 else None)
    for i, path in enumerate(bar):
        channels[i] = phase_to_channels(np.angle(read_int_file(path)))
    x = torch.from_numpy(channels)

    x = _resize_channels(x, side)
    if npad:
        lo, hi = npad // 2, npad - npad // 2
        x = x[..., lo : side - hi, lo : side - hi]
    x = x.contiguous()
    return x[torch.from_numpy(train_idx)], x[torch.from_numpy(valid_idx)]


# --------------------------------------------------------------------------- synthetic physics


def mogi_displacement(x, y, x0: float, y0: float, depth: float, dvolume: float, nu: float = 0.25):
    """Surface displacement (u_e, u_n, u_z) of a Mogi point source, metres.

    x, y: east / north coordinates (m) of the surface points; (x0, y0, depth): source
    position (m, depth positive down); dvolume: volume change (m^3, > 0 inflation).
        u_z = (1 - nu) dV / pi * d / R^3,  u_r = (1 - nu) dV / pi * r / R^3,  R^2 = r^2 + d^2
    and (u_e, u_n) = u_r * (x - x0, y - y0) / r.
    """
    dx = np.asarray(x, dtype=np.float64) - x0
    dy = np.asarray(y, dtype=np.float64) - y0
    strength = (1.0 - nu) * dvolume / math.pi
    inv_r3 = (dx**2 + dy**2 + depth**2) ** -1.5
    return strength * dx * inv_r3, strength * dy * inv_r3, strength * depth * inv_r3


def los_vector(incidence: float, heading: float) -> np.ndarray:
    """Unit vector (east, north, up) from the ground to a right-looking satellite.

    incidence: angle from the vertical (rad); heading: flight direction, clockwise
    from north (rad). The radar looks at azimuth heading + 90 deg, so the ground sees
    the satellite in the opposite horizontal direction. LOS displacement = u . vector
    (positive: motion towards the satellite).
    """
    look_azimuth = heading + math.pi / 2
    return np.array(
        [
            -math.sin(incidence) * math.sin(look_azimuth),
            -math.sin(incidence) * math.cos(look_azimuth),
            math.cos(incidence),
        ]
    )


def power_law_field(rng: np.random.Generator, size: int, exponent: float = 8.0 / 3.0) -> np.ndarray:
    """Zero-mean, unit-rms stationary Gaussian field with power spectrum ~ |k|^(-exponent).

    White noise filtered in Fourier space (periodic; the mean mode removed).
    """
    noise = np.fft.rfft2(rng.standard_normal((size, size)))
    ky = np.fft.fftfreq(size)[:, None]
    kx = np.fft.rfftfreq(size)[None, :]
    k = np.sqrt(kx**2 + ky**2)
    k[0, 0] = np.inf  # drop the mean mode
    field = np.fft.irfft2(noise * k ** (-exponent / 2.0), s=(size, size))
    field -= field.mean()
    return field / field.std()


def _fringes_resolved(phase: np.ndarray, limit: float = 0.8 * math.pi) -> bool:
    """True when neighbouring pixels differ by less than `limit` radians (no aliasing)."""
    return max(np.abs(np.diff(phase, axis=0)).max(), np.abs(np.diff(phase, axis=1)).max()) < limit


def synthesize_interferogram(
    rng: np.random.Generator,
    size: int = INT_SIDE,
    frame_km: tuple[float, float] = (20.0, 40.0),
    depth_km: tuple[float, float] = (1.0, 5.0),
    dvolume: tuple[float, float] = (1e6, 1e7),
    incidence_deg: tuple[float, float] = (30.0, 45.0),
    atmosphere_rms: tuple[float, float] = (0.5, 3.0),
    ramp_rad: tuple[float, float] = (0.0, 2.0),
    coherence: tuple[float, float] = (0.3, 0.9),
    nu: float = 0.25,
    wavelength: float = C_BAND_WAVELENGTH,
    return_components: bool = False,
):
    """One wrapped interferogram, complex64 (size, size) with |z| ~ 1.

    Every range is (low, high), drawn uniformly (the volume change log-uniformly, with
    a random sign). The model:
      * Mogi source at a random position in the central 70% of a square frame of
        width frame_km, depth depth_km, volume change +-dvolume (m^3); the draw is
        repeated (up to 50 times, then the volume is halved until it fits) until the
        deformation fringes are resolved by the pixel grid;
      * line-of-sight projection for incidence_deg and an ascending or descending
        heading (-12 or 192 deg, +-5 deg);
      * phase = 4 pi / wavelength * LOS + atmospheric delay (power-law GRF,
        ~k^(-8/3), rms atmosphere_rms radians) + a linear orbital ramp (total change
        ramp_rad across the frame, random direction) + a constant offset;
      * decorrelation: z = g exp(i phase) + sqrt(1 - g^2) (n1 + i n2) / sqrt(2) with
        coherence g.
    With return_components, also returns a dict of the unwrapped parts and parameters.
    """
    width = rng.uniform(*frame_km) * 1e3
    coords = (np.arange(size) + 0.5) * (width / size)
    east, north = np.meshgrid(coords, coords[::-1], indexing="xy")  # row 0 is the north edge

    incidence = math.radians(rng.uniform(*incidence_deg))
    heading = math.radians((-12.0 if rng.random() < 0.5 else 192.0) + rng.uniform(-5.0, 5.0))
    look = los_vector(incidence, heading)
    to_phase = 4.0 * math.pi / wavelength

    for attempt in range(50):
        x0, y0 = rng.uniform(0.15 * width, 0.85 * width, size=2)
        depth = rng.uniform(*depth_km) * 1e3
        dv = math.exp(rng.uniform(math.log(dvolume[0]), math.log(dvolume[1])))
        dv *= 1.0 if rng.random() < 0.5 else -1.0
        u_e, u_n, u_z = mogi_displacement(east, north, x0, y0, depth, dv, nu)
        deformation = to_phase * (u_e * look[0] + u_n * look[1] + u_z * look[2])
        if _fringes_resolved(deformation):
            break
    while not _fringes_resolved(deformation):
        dv /= 2.0
        deformation /= 2.0

    atmosphere = rng.uniform(*atmosphere_rms) * power_law_field(rng, size)
    ramp_angle = rng.uniform(0.0, 2.0 * math.pi)
    ramp_total = rng.uniform(*ramp_rad)
    ramp = ramp_total * ((east - width / 2) * math.cos(ramp_angle) + (north - width / 2) * math.sin(ramp_angle)) / width
    offset = rng.uniform(-math.pi, math.pi)
    phase = deformation + atmosphere + ramp + offset

    gamma = rng.uniform(*coherence)
    noise = (rng.standard_normal((size, size)) + 1j * rng.standard_normal((size, size))) / math.sqrt(2.0)
    z = (gamma * np.exp(1j * phase) + math.sqrt(max(1.0 - gamma**2, 0.0)) * noise).astype(np.complex64)

    if not return_components:
        return z
    parts = {
        "phase": phase,
        "deformation": deformation,
        "atmosphere": atmosphere,
        "ramp": ramp + offset,
        "coherence": gamma,
        "source": {"x0": x0, "y0": y0, "depth": depth, "dvolume": dv},
        "width": width,
        "incidence": incidence,
        "heading": heading,
    }
    return z, parts


def write_synthetic_dataset(
    out_dir,
    n: int,
    seed: int,
    size: int = INT_SIDE,
    overwrite: bool = False,
    progress: bool = False,
) -> list[pathlib.Path]:
    """Write n synthetic interferograms to `out_dir/subset_128/synthetic/<index:05d>.int`.

    File i depends only on (seed, i) (one spawned generator per file). Refuses with a
    UserError when out_dir/subset_128 already holds .int files, unless overwrite; even
    then it only replaces the synthetic/ folder's .int files and refuses when other
    (real) .int files are there, so real data are never mixed with synthetic ones.
    size must be 128, the only side the .int loader reads.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise UserError(f"number of files must be a positive integer, got {n!r}")
    if size != INT_SIDE:
        raise UserError(f"synthetic .int files must be {INT_SIDE} px to match the real format, got size={size}")
    subset = pathlib.Path(out_dir) / SUBSET
    target = subset / SYNTHETIC
    existing = _int_files_under(subset) if subset.is_dir() else []
    if existing:
        foreign = [p for p in existing if p.parent != target]
        if foreign:
            raise UserError(
                f"{subset} already holds {len(foreign)} .int files outside {SYNTHETIC}/ (real data?); "
                "choose another output folder"
            )
        if not overwrite:
            raise UserError(f"{target} already holds {len(existing)} .int files; use --force to replace them")
        for p in existing:
            p.unlink()
    target.mkdir(parents=True, exist_ok=True)

    children = np.random.SeedSequence(int(seed)).spawn(int(n))
    paths = []
    bar = tqdm(range(n), desc="writing .int files", unit="file", disable=None if progress else True)
    for i in bar:
        z = synthesize_interferogram(np.random.default_rng(children[i]), size=size)
        path = target / f"{i:05d}.int"
        tmp = path.with_suffix(".int.tmp")
        z.astype(INT_DTYPE).tofile(tmp)
        os.replace(tmp, path)
        paths.append(path)
    return paths
