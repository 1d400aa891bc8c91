"""Evaluators: what the Trainer measures at every evaluation (docs/maths.md).

An evaluator is called with a context ``ctx`` and returns {metric name: float}. The context
(trainer.EvalContext; a types.SimpleNamespace does in tests) holds

    model          the trained module with the EMA weights, in eval mode
    process        the Process (levels: its elbo_terms)
    valid          validation tensor (N, C, H, W), valid_labels (N,) or None
    generate(n)    n samples from fixed seeds (the same seeds at every evaluation), CPU
    device, step
    dist           optional distributed.Context (LevelsELBO shares its batches out over the ranks)

``metrics`` names the keys of the returned dict that are lower-is-better and worth tracking
(a checkpoint model.<metric>.pt per new minimum); the other keys (floors, ratios, counts)
are for the log only. ``last_samples`` keeps what the evaluator generated last (figures).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch

from . import metrics as M


class Evaluator:
    metrics: tuple = ()
    last_samples: Optional[torch.Tensor] = None

    def __call__(self, ctx) -> dict:
        raise NotImplementedError


class FieldStats(Evaluator):
    """Per-sample statistics of generated vs validation fields (metrics.validation_metrics).

    Reports w_var, w_skew, w_total, mean_l2 (and mean_phase_l2 for phase data), n_nonfinite,
    each W1 as a multiple of the real-vs-real floor (<name>_x_floor), and the floor with its
    bootstrap interval (floor_<name>, floor_<name>_p05 / _p95). The real statistics and the
    floor are computed once, here. n: samples generated per evaluation (default len(valid)).
    kind "image" is treated as real-valued data.
    """

    def __init__(self, kind: str, valid: torch.Tensor, seed: int = 0, n: Optional[int] = None, warn: bool = True):
        self.kind = "real" if kind == "image" else kind
        if self.kind not in M.KINDS:
            raise ValueError(f"FieldStats needs phase, real or image data, got {kind!r}")
        self.valid = valid
        self.n = len(valid) if n is None else int(n)
        self.real_stats = M.sample_stats(valid, self.kind)
        self.floor = M.floor_metrics(valid, self.kind, seed=seed)
        self.floor_columns = M.floor_columns(self.floor, M.floor_interval(
            valid, self.kind, seed=seed, real_stats_cached=self.real_stats, warn=warn))
        self.metrics = M.METRIC_NAMES if self.kind == "phase" else M.METRIC_NAMES[:-1]

    def __call__(self, ctx) -> dict:
        samples = ctx.generate(self.n)
        self.last_samples = samples
        return self.values(samples)

    def values(self, samples: torch.Tensor) -> dict:
        """The metrics of `samples` against the validation fields, with the floor columns."""
        values = M.validation_metrics(self.valid, samples, self.kind, self.real_stats)
        values.update(M.relative_to_floor(values, self.floor))
        values.update(self.floor_columns)
        return values


class LevelsELBO(Evaluator):
    """Negative ELBO of the first n_images validation images in bits per dimension ("val_bpd").

    ctx.process.elbo_terms(model, u0, generator, delta) gives per-image terms (B, K + 1) in
    nats. Batch j draws its noise from a generator seeded with batch_seed(j), so every
    evaluation uses the same noise and the batches can be shared out over ranks (ctx.dist,
    when present: each rank its contiguous share of the batches, then gathered).
    bpd = mean over images of the summed terms / (D ln 2), D = C H W.
    """

    metrics = ("val_bpd",)

    def __init__(self, n_images: int = 512, batch_size: int = 128, seed: int = 0, delta: Optional[float] = None):
        self.n_images = None if n_images is None else int(n_images)       # None: every validation image
        self.batch_size, self.seed, self.delta = int(batch_size), int(seed), delta

    def batch_seed(self, j: int) -> int:
        return self.seed * 1_000_003 + j

    @torch.no_grad()
    def __call__(self, ctx) -> dict:
        from .processes.levels import elbo_summary

        valid = ctx.valid[:self.n_images]
        starts = list(range(0, len(valid), self.batch_size))
        dist = getattr(ctx, "dist", None)
        mine = range(len(starts))[dist.shard(len(starts))] if dist is not None else range(len(starts))
        terms = [torch.empty(0, 0, dtype=torch.float64)]
        for j in mine:
            u0 = valid[starts[j]:starts[j] + self.batch_size].to(ctx.device)
            generator = torch.Generator().manual_seed(self.batch_seed(j))
            labels = getattr(ctx, "valid_labels", None)
            extra = {} if labels is None else {
                "labels": labels[:self.n_images][starts[j]:starts[j] + self.batch_size].to(ctx.device)}
            terms.append(ctx.process.elbo_terms(ctx.model, u0, generator, delta=self.delta, **extra).double().cpu())
        terms = torch.cat([t for t in terms if t.numel()] or terms)
        if dist is not None:
            terms = dist.gather_cat(terms)
        summary = elbo_summary(terms, valid[0].numel())
        return {"val_bpd": summary["bpd"], "val_neg_elbo_nats": summary["neg_elbo_nats"]}


class Frechet(Evaluator):
    """Frechet distance in the digits classifier's features (digits_classifier.py).

    "frechet": n generated images vs the whole validation set; "frechet_floor": two disjoint
    halves of the validation set (seeded), the value a perfect model would get at about
    len(valid) / 2 generated images.
    """

    metrics = ("frechet",)

    def __init__(self, n: int = 1000, seed: int = 0, cache_dir=None):
        self.n, self.seed, self.cache_dir = int(n), int(seed), cache_dir
        self._floor = None

    def __call__(self, ctx) -> dict:
        from .digits_classifier import frechet_digits, frechet_floor

        samples = ctx.generate(self.n)
        self.last_samples = samples
        if self._floor is None:
            self._floor = frechet_floor(ctx.valid, self.seed, cache_dir=self.cache_dir)
        return {"frechet": frechet_digits(samples, ctx.valid, cache_dir=self.cache_dir),
                "frechet_floor": self._floor}


TOY_ERROR_TS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


class ToyScoreError(Evaluator):
    """p_t-weighted error of the learned toy score against the analytic one (toy_score.score_error).

    score_error = mean over ts of E_{x ~ p_t} sigma_t^2 |s_theta(x, sigma_t) - s*(x, sigma_t)|^2
    (n exact draws per t from a generator seeded with `seed`: the same draws every time);
    score_error_relative = the mean over ts of that error divided by the zero score's error.
    """

    metrics = ("score_error",)

    def __init__(self, analytic, data, schedule, ts: Sequence[float] = TOY_ERROR_TS, n: int = 2000, seed: int = 0):
        self.analytic, self.data, self.schedule = analytic, data, schedule
        self.ts, self.n, self.seed = tuple(float(t) for t in ts), int(n), int(seed)

    @torch.no_grad()
    def __call__(self, ctx) -> dict:
        from .toy_score import score_error

        model, device = ctx.model, ctx.device
        weight = next(iter(model.parameters()), None)     # the analytic score has none: stays float64

        def score(x, sigma):
            dtype = x.dtype if weight is None else weight.dtype
            return model(x.to(device, dtype), sigma.to(device, dtype)).cpu()

        rows = score_error(score, self.analytic, self.data, self.schedule, self.ts, self.n,
                           torch.Generator().manual_seed(self.seed))
        weighted = [r["weighted"] for r in rows]
        relative = [r["relative"] for r in rows]
        return {"score_error": sum(weighted) / len(weighted),
                "score_error_relative": sum(relative) / len(relative) if all(map(math.isfinite, relative))
                else math.nan}
