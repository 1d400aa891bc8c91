"""Sample-quality metrics: per-sample statistics and distances between their distributions.

Every input is a batch of fields, a tensor of shape (N, C, H, W).

* Phase data has C = 2 channels (cos phi, sin phi). Each sample is summarised by its
  circular variance and circular skewness over all grid points (Mardia / Fisher):

      R_p e^{i T_p} = mean over points of e^{i p phi}
      variance      = 1 - R_1
      skewness      = R_2 sin(T_2 - 2 T_1) / (1 - R_1)^{3/2}

* Real data (any C) is summarised by its population variance and biased skewness,
  pooled over all channels and points of one sample.

The validation metrics compare the distributions of these per-sample values with the
1-D Wasserstein distance W1 (``scipy.stats.wasserstein_distance``), plus the squared
distance between the mean fields. A real-vs-real "floor" (W1 between two disjoint halves
of the real set) tells how small a W1 can be made at that sample size; `floor_interval`
gives the bootstrap 5th-95th percentile range of that floor (keys floor_<name>_p05 /
floor_<name>_p95 in results.json and metrics.json), which tells whether a ratio to the
floor can carry a verdict at all (with tens of fields it cannot: a warning says so).

All statistics are computed in float64 and returned as float64 tensors (or floats).
"""

import math
import sys

import numpy as np
import scipy.stats
import torch

METRIC_NAMES = ("w_var", "w_skew", "w_total", "mean_l2", "mean_phase_l2")
W1_NAMES = ("w_var", "w_skew", "w_total")
KINDS = ("phase", "real")

# Below this variance the skewness is 0/0; it is reported as 0 (a constant field is
# not skewed) instead of NaN, so one degenerate sample cannot break W1.
_DEGENERATE_VAR = 1e-12


def _check_batch(x, name="x"):
    if not torch.is_tensor(x):
        raise TypeError(f"{name} must be a torch tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name} must have shape (N, C, H, W), got {tuple(x.shape)}")


def _check_phase(x, name="x"):
    _check_batch(x, name)
    if x.shape[1] != 2:
        raise ValueError(f"phase data {name} must have 2 channels (cos, sin), got {x.shape[1]}")


def finite_samples(x):
    """(the samples of x (N, C, H, W) without NaN or inf, how many were left out)."""
    _check_batch(x, "generated")
    finite = torch.isfinite(x).reshape(x.shape[0], -1).all(dim=1)
    return x[finite], int((~finite).sum())


def _phase(x):
    """Angles phi = atan2(sin, cos) of phase data (N, 2, H, W) -> (N, H, W), float64."""
    x = x.double()
    return torch.atan2(x[:, 1], x[:, 0])


# ---------------------------------------------------------------------------
# Per-sample statistics
# ---------------------------------------------------------------------------


def circular_moments(phi, p):
    """p-th trigonometric moment of each sample: R_p e^{i T_p} = mean_points e^{i p phi}.

    phi: angles of shape (N, ...) (usually (N, H, W)); p: the moment order.
    Returns (R_p, T_p), each of shape (N,): the mean resultant length in [0, 1] and the
    mean direction in (-pi, pi].
    """
    phi = phi.double().reshape(phi.shape[0], -1)
    c = torch.cos(p * phi).mean(dim=1)
    s = torch.sin(p * phi).mean(dim=1)
    return torch.sqrt(c * c + s * s), torch.atan2(s, c)


def circular_stats(x):
    """Circular variance and skewness of each sample of phase data x (N, 2, H, W).

    The angle at each point is atan2(x[:, 1], x[:, 0]), so the amplitude of a point
    does not matter. Returns {"var": (N,), "skew": (N,)}.
    """
    _check_phase(x)
    phi = _phase(x)
    r1, t1 = circular_moments(phi, 1)
    r2, t2 = circular_moments(phi, 2)
    var = 1.0 - r1
    degenerate = var <= _DEGENERATE_VAR
    denom = torch.where(degenerate, torch.ones_like(var), var).pow(1.5)
    skew = torch.where(degenerate, torch.zeros_like(var), r2 * torch.sin(t2 - 2.0 * t1) / denom)
    return {"var": var, "skew": skew}


def real_stats(x):
    """Population variance (ddof 0) and biased skewness of each sample of x (N, C, H, W).

    Pooled over all channels and points of a sample; the skewness m3 / m2^{3/2} is
    scipy.stats.skew's default, except that a constant sample gets 0 instead of NaN.
    Returns {"var": (N,), "skew": (N,)}.
    """
    _check_batch(x)
    flat = x.double().reshape(x.shape[0], -1)
    centred = flat - flat.mean(dim=1, keepdim=True)
    m2 = centred.pow(2).mean(dim=1)
    m3 = centred.pow(3).mean(dim=1)
    # Constant up to rounding (relative to the sample's scale, like scipy's check).
    degenerate = m2 <= (1e-12 * flat.abs().amax(dim=1)) ** 2
    denom = torch.where(degenerate, torch.ones_like(m2), m2).pow(1.5)
    skew = torch.where(degenerate, torch.zeros_like(m2), m3 / denom)
    return {"var": m2, "skew": skew}


def sample_stats(x, kind):
    """Per-sample statistics for a data kind: "phase" -> circular_stats, "real" -> real_stats."""
    if kind == "phase":
        return circular_stats(x)
    if kind == "real":
        return real_stats(x)
    raise ValueError(f"unknown data kind {kind!r}; expected one of {KINDS}")


# ---------------------------------------------------------------------------
# Mean fields and distances
# ---------------------------------------------------------------------------


def mean_phase(x):
    """Mean direction at each point over the samples of phase data x (N, 2, H, W) -> (H, W).

    atan2(mean sin phi, mean cos phi), with phi = atan2(x[:, 1], x[:, 0]) so that samples
    off the unit circle count with unit weight.
    """
    _check_phase(x)
    phi = _phase(x)
    return torch.atan2(torch.sin(phi).mean(dim=0), torch.cos(phi).mean(dim=0))


def circular_difference(a, b):
    """a - b wrapped into (-pi, pi] (works elementwise on tensors, broadcasting)."""
    a = torch.as_tensor(a, dtype=torch.float64)
    b = torch.as_tensor(b, dtype=torch.float64)
    # remainder(., 2 pi) lies in [0, 2 pi), so pi - remainder(pi - d) lies in (-pi, pi].
    d = math.pi - torch.remainder(math.pi - (a - b), 2.0 * math.pi)
    # Guard the rounding edge where remainder returns 2 pi itself.
    return torch.where(d <= -math.pi, d + 2.0 * math.pi, d)


def _to_numpy_1d(v, name):
    if torch.is_tensor(v):
        v = v.detach().cpu().double().numpy()
    arr = np.asarray(v, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains {int(np.sum(~np.isfinite(arr)))} non-finite values")
    return arr


def wasserstein(a, b):
    """1-D Wasserstein-1 distance between the empirical distributions of a and b.

    a, b: tensors, arrays or sequences (flattened). Non-finite values raise ValueError.
    """
    return float(scipy.stats.wasserstein_distance(_to_numpy_1d(a, "a"), _to_numpy_1d(b, "b")))


# ---------------------------------------------------------------------------
# Validation metrics
# ---------------------------------------------------------------------------


def validation_metrics(real, generated, kind, real_stats_cached=None):
    """Compare generated samples with real ones; returns a dict of floats.

    w_var, w_skew: W1 between the per-sample variances (skewnesses) of the two sets;
    w_total = w_var + w_skew; mean_l2: mean over channels and points of the squared
    difference of the mean fields; mean_phase_l2 (phase data only): mean over points of
    the squared circular difference of the mean phases. Generated samples holding NaN
    or inf are left out, and their number is reported as n_nonfinite (always present).
    If no generated sample is finite, every metric is NaN.

    real_stats_cached: sample_stats(real, kind), if already computed.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown data kind {kind!r}; expected one of {KINDS}")
    _check_batch(real, "real")
    _check_batch(generated, "generated")
    if real.shape[1:] != generated.shape[1:]:
        raise ValueError(
            f"real and generated samples differ in shape: {tuple(real.shape[1:])} "
            f"vs {tuple(generated.shape[1:])}"
        )
    if real.shape[0] == 0:
        raise ValueError("real set is empty")
    if not torch.isfinite(real).all():
        raise ValueError("real samples contain non-finite values")

    generated, n_nonfinite = finite_samples(generated)

    names = METRIC_NAMES if kind == "phase" else METRIC_NAMES[:-1]  # no mean_phase_l2
    if generated.shape[0] == 0:
        out = {name: float("nan") for name in names}
        out["n_nonfinite"] = n_nonfinite
        return out

    s_real = real_stats_cached if real_stats_cached is not None else sample_stats(real, kind)
    s_gen = sample_stats(generated, kind)
    out = {
        "w_var": wasserstein(s_real["var"], s_gen["var"]),
        "w_skew": wasserstein(s_real["skew"], s_gen["skew"]),
    }
    out["w_total"] = out["w_var"] + out["w_skew"]
    diff = real.double().mean(dim=0) - generated.double().mean(dim=0)
    out["mean_l2"] = float(diff.pow(2).mean())
    if kind == "phase":
        dphi = circular_difference(mean_phase(real), mean_phase(generated))
        out["mean_phase_l2"] = float(dphi.pow(2).mean())
    out["n_nonfinite"] = n_nonfinite
    return out


def split_halves(n, seed=0):
    """Two disjoint random index sets of size n // 2 each (seeded; the odd one out is dropped)."""
    if n < 2:
        raise ValueError(f"need at least 2 samples to split into halves, got {n}")
    g = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=g)
    half = n // 2
    return perm[:half], perm[half : 2 * half]


def floor_metrics(real, kind, seed=0):
    """Real-vs-real floor: validation_metrics between two disjoint seeded random halves of real."""
    _check_batch(real, "real")
    idx_a, idx_b = split_halves(real.shape[0], seed)
    idx_a = idx_a.to(real.device)
    idx_b = idx_b.to(real.device)
    return validation_metrics(real[idx_a], real[idx_b], kind)


# Bootstrap of the floor: resamples, the percentiles reported, and the size of the real set
# below which the floor is too noisy to judge a model by (a one-line warning, once per process).
FLOOR_RESAMPLES = 500
FLOOR_PERCENTILES = (5, 95)
FLOOR_MIN_FIELDS = 100
_few_fields_warned = False


def warn_if_few_fields(n, stream=None) -> bool:
    """One line on stderr (once per process) when the floor rests on fewer than FLOOR_MIN_FIELDS fields.

    Returns whether it printed.
    """
    global _few_fields_warned
    if n >= FLOOR_MIN_FIELDS or _few_fields_warned:
        return False
    _few_fields_warned = True
    print(f"warning: the real-vs-real floor rests on only {n} validation fields (fewer than {FLOOR_MIN_FIELDS}); "
          f"its 90% bootstrap interval (floor_*_p05 .. floor_*_p95) is wide, so W1 / floor ratios cannot carry a "
          f"verdict", file=stream or sys.stderr)
    return True


def floor_interval(real, kind, seed=0, n_resamples=FLOOR_RESAMPLES, real_stats_cached=None, warn=True):
    """Bootstrap interval of the real-vs-real floor of each W1 metric: {"w_var": (p05, p95), ...}.

    Each resample draws len(real) fields with replacement from `real` (numpy Generator seeded
    with `seed`: deterministic), splits them into two halves of len(real) // 2 and computes the
    W1 floor statistic between the halves, as floor_metrics does on the real set itself
    (w_total = w_var + w_skew per resample). The interval is the FLOOR_PERCENTILES (5th and
    95th) percentiles over the resamples: the range of floors a real set of this size gives,
    so its width shrinks like 1 / sqrt(n). Works on the per-sample statistics only (500
    resamples of 512 fields take a few milliseconds). warn: call warn_if_few_fields.
    """
    _check_batch(real, "real")
    n = real.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 samples to split into halves, got {n}")
    if warn:
        warn_if_few_fields(n)
    stats = real_stats_cached if real_stats_cached is not None else sample_stats(real, kind)
    half = n // 2
    rng = np.random.default_rng(int(seed))
    idx = rng.integers(0, n, size=(int(n_resamples), 2 * half))
    out, total = {}, 0.0
    for name, key in (("w_var", "var"), ("w_skew", "skew")):
        values = _to_numpy_1d(stats[key], f"real {key}")
        # W1 between two empirical distributions of equal size = mean |sorted a - sorted b|.
        a = np.sort(values[idx[:, :half]], axis=1)
        b = np.sort(values[idx[:, half:]], axis=1)
        w = np.abs(a - b).mean(axis=1)
        total = total + w
        out[name] = w
    out["w_total"] = total
    return {name: tuple(float(v) for v in np.percentile(w, FLOOR_PERCENTILES)) for name, w in out.items()}


def floor_columns(floor, interval):
    """Flat JSON-friendly columns: floor_<name>, floor_<name>_p05, floor_<name>_p95 for each W1 metric."""
    lo_tag, hi_tag = (f"p{p:02d}" for p in FLOOR_PERCENTILES)
    out = {}
    for name in W1_NAMES:
        if name in floor:
            out[f"floor_{name}"] = float(floor[name])
        if name in interval:
            out[f"floor_{name}_{lo_tag}"], out[f"floor_{name}_{hi_tag}"] = (float(v) for v in interval[name])
    return out


def relative_to_floor(metrics, floor):
    """Each W1 metric as a multiple of its real-vs-real floor: {"w_var_x_floor": ..., ...}.

    Only the ratio keys are returned (merge them into metrics with dict.update). A metric
    whose floor is missing, zero or non-finite gets no ratio.
    """
    out = {}
    for name in W1_NAMES:
        if name not in metrics or name not in floor:
            continue
        f = float(floor[name])
        if not math.isfinite(f) or f <= 0.0:
            continue
        out[f"{name}_x_floor"] = float(metrics[name]) / f
    return out


# ---------------------------------------------------------------------------
# Wording a value against its floor (every title, summary and log line)
# ---------------------------------------------------------------------------
# The floor is itself one noisy draw (two halves of the real set), and a perfect model, compared on
# n generated fields against all real ones, scores about 0.7x it (spectrum.py's docstring). A
# multiple below 1 therefore says "as good as real data", never "better", and a value inside the
# floor's 90% interval cannot be told from it either: both are worded as being at the floor, with
# the value and the floor shown instead of a multiple that reads as a score.

# The numbers a result is judged by, in the order titles and summary lines give them; the ones a
# row lacks (older rows, image and toy runs have no spectrum error) are left out.
HEADLINE_NAMES = ("w_total", "spectrum_error", "spectrum_error_high", "frechet")
_COMPANION_SUFFIXES = ("_x_floor", "_floor_p05", "_floor_p95", "_floor", "_p05", "_p95")


def _number(values: dict, key: str):
    v = values.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v)


def floor_of(values: dict, name: str) -> tuple:
    """(floor, (p05, p95) or None) of metric `name` in a metrics row, or (None, None).

    The floor is floor_<name> (W1 metrics, spectrum errors) or <name>_floor (frechet), its 90%
    interval the same key with _p05 / _p95. A row with the value and its multiple <name>_x_floor
    but not the floor (training's log line) gets floor = value / multiple, without an interval.
    """
    for key in (f"floor_{name}", f"{name}_floor"):
        f = _number(values, key)
        if f is not None:
            lo, hi = _number(values, f"{key}_p05"), _number(values, f"{key}_p95")
            return f, ((lo, hi) if lo is not None and hi is not None else None)
    v, x = _number(values, name), _number(values, f"{name}_x_floor")
    if v is not None and x is not None and math.isfinite(v) and math.isfinite(x) and x > 0:
        return v / x, None
    return None, None


def has_floor(values: dict, name: str) -> bool:
    """Whether the row says anything about `name` relative to its floor (the floor or the multiple)."""
    return floor_of(values, name)[0] is not None or _number(values, f"{name}_x_floor") is not None


def floor_verdict(value, floor, interval=None):
    """'at' (value <= floor), 'within' (above the floor but not above its interval's 95th percentile),
    'above', or None when there is nothing to judge (no finite value, no positive finite floor)."""
    if value is None or floor is None or not (math.isfinite(value) and math.isfinite(floor)) or floor <= 0:
        return None
    if value <= floor:
        return "at"
    if interval is not None and math.isfinite(interval[1]) and value <= interval[1]:
        return "within"
    return "above"


def floor_caption(values: dict, name: str) -> str:
    """Metric `name` of a metrics row against its real-vs-real floor, in words (the one wording of the project).

        above the floor (and its interval):  'spectrum_error 0.31 = 6.13x floor (floor 0.0506)'
        at or below the floor:               'w_total 0.127: at the real-vs-real floor (floor 0.17, 90% interval 0.05-0.21)'
        above the floor, inside its interval: 'w_total 0.19: within the floor's noise (floor 0.17, 90% interval 0.05-0.21)'
        no floor in the row:                 'w_var 0.5'

    Uses the keys of `name` the row has: the value, <name>_x_floor, the floor and its interval
    (floor_of), and the value's own sampling interval <name>_p05 / _p95 (frechet), shown after the
    value. A row with the multiple only gives the verdict alone ('spectrum_error 6.13x floor');
    a row with nothing of `name` gives ''.
    """
    value = _number(values, name)
    x = _number(values, f"{name}_x_floor")
    if value is None:
        if x is None:
            return ""
        return f"{name}: at the real-vs-real floor" if x <= 1 else f"{name} {x:.3g}x floor"
    text = f"{name} {value:.3g}"
    lo, hi = _number(values, f"{name}_p05"), _number(values, f"{name}_p95")
    if lo is not None and hi is not None:
        text += f" (resampled 90% interval {lo:.3g}-{hi:.3g})"
    floor, interval = floor_of(values, name)
    if floor is None:
        return text
    where = f"floor {floor:.3g}" + (f", 90% interval {interval[0]:.3g}-{interval[1]:.3g}" if interval else "")
    verdict = floor_verdict(value, floor, interval)
    if verdict == "at":
        return f"{text}: at the real-vs-real floor ({where})"
    if verdict == "within":
        return f"{text}: within the floor's noise ({where})"
    if verdict == "above":
        return f"{text} = {(x if x is not None else value / floor):.3g}x floor ({where})"
    return f"{text} ({where})"


def headline(values: dict, names=HEADLINE_NAMES, sep: str = "; ") -> str:
    """floor_caption of each of `names` the row has, joined by sep ('' when it has none of them)."""
    return sep.join(c for c in (floor_caption(values, name) for name in names) if c)


def caption_names(values: dict) -> list:
    """The metric names of a row in order, each key that belongs to another metric (its floor, interval,
    multiple: <name>_x_floor, floor_<name>[_p05|_p95], <name>_floor[_p05|_p95], <name>_p05 / _p95) folded
    into that metric; a multiple whose metric the row lacks stands for it, at its place."""
    present = set(values)
    candidates = present | {k[:-len("_x_floor")] for k in present if k.endswith("_x_floor")}

    def owner(key):
        for suffix in _COMPANION_SUFFIXES:
            if key.endswith(suffix) and key[:-len(suffix)] in candidates - {key}:
                return key[:-len(suffix)]
        if key.startswith("floor_"):
            rest = key[len("floor_"):]
            for suffix in ("_p05", "_p95", ""):
                base = rest[:len(rest) - len(suffix)]
                if rest.endswith(suffix) and base in candidates - {key}:
                    return base
        return None

    names = []
    for key in values:
        name = key
        while owner(name) is not None:          # floor_w_total_p05 -> floor_w_total -> w_total
            name = owner(name)
        if name not in names:
            names.append(name)
    return names


# ---------------------------------------------------------------------------
# Spectra
# ---------------------------------------------------------------------------


def radial_power_spectrum(x):
    """Azimuthally averaged power spectrum of x (N, C, H, W) -> (min(H, W) // 2 + 1,).

    The domain is taken as the unit square, so the wavenumber of a mode is counted in
    cycles per domain on each axis (independent of the resolution). |c_k|^2, with c_k the
    Fourier coefficients (FFT divided by H W, so that a resolved mode has the same power
    at every resolution), is averaged over samples, channels and the modes whose radial
    wavenumber |k| rounds to each integer bin. Modes beyond min(H, W) // 2 (the corners)
    are left out. For phase data the two channels (cos, sin) are simply averaged.
    """
    _check_batch(x)
    n, c, h, w = x.shape
    power = torch.fft.fft2(x.double(), norm="forward").abs().pow(2).mean(dim=(0, 1))  # (H, W)
    ky = torch.fft.fftfreq(h, d=1.0 / h, dtype=torch.float64, device=power.device)
    kx = torch.fft.fftfreq(w, d=1.0 / w, dtype=torch.float64, device=power.device)
    k = torch.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2)
    bins = torch.round(k).long().reshape(-1)
    n_bins = min(h, w) // 2 + 1
    keep = bins < n_bins
    total = torch.zeros(n_bins, dtype=torch.float64, device=power.device)
    count = torch.zeros(n_bins, dtype=torch.float64, device=power.device)
    total.index_add_(0, bins[keep], power.reshape(-1)[keep])
    count.index_add_(0, bins[keep], torch.ones_like(power.reshape(-1)[keep]))
    return total / count
