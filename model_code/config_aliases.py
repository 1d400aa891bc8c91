"""The older config spellings, mapped onto the one schema (schema.py) at the input edge.

Three dialects stay valid, so every published experiment file and every older YAML reads
as it was written:

- `published`: the flat JSON keys of the published function-space code (`sigma_1`, `L`, `T`,
  `Ntest`, `d_co_domain`, `mult_dims`, `white_noise`, `rbf_scale`, ...);
- `levels`: the heat-dissipation YAML (`system: levels`, `model.forward`, `training.n_iters`, ...);
- `toy`: the two-atom YAML (`system: toy`, `train.lr`, `regularizer.kind`, ...).

A dialect is a table {old key: new key or (new key, value map)} and a preset: the defaults
the old schema had where they differ from the new one's. Keys that are not in the table pass
through unchanged, so schema keys can be mixed in freely.
"""
from __future__ import annotations

from typing import Callable, Dict, Tuple, Union

Target = Union[str, Tuple[str, ...], Tuple[Tuple[str, ...], Callable]]


def _bool(v) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"expected bool (true or false), got {v!r}")
    return v


def _flips(on):
    return 0.5 if _bool(on) else 0.0


def _zero_is_none(v):
    return None if v in (0, 0.0) else v


class Mapped:
    """A published key that is converted, or has no effect, rather than renamed.

    `convert(value) -> ({schema key: value}, note)`; the note (one line) is recorded in the
    run's config.json under `mapped_keys.<key>` and printed when training starts, so a
    published file is read as it is and nothing about it happens silently.
    """

    def __init__(self, convert: Callable, targets: Tuple[str, ...] = ()):
        self.convert = convert
        self.targets = targets          # the schema keys it may set


def _number(v, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"expected {what}, got {v!r}")
    return float(v)


def _variance(target: str, name: str) -> Mapped:
    # The published json files give sigma_1 / sigma_L as variances (train.py: "variance of
    # largest noise distribution"; the training noise was sqrt(sigma) z); the schema's
    # sigmas are standard deviations.
    def convert(v):
        v = _number(v, "a positive variance")
        if not v > 0:
            raise ValueError(f"expected a positive variance, got {v!r}")
        std = v ** 0.5
        return {target: std}, (f"{name} = {v:g} is a variance in the published code: "
                               f"{target} = sqrt({v:g}) = {std:.6g} (a standard deviation)")
    return Mapped(convert, (target,))


def _no_effect(name: str, why: str) -> Mapped:
    return Mapped(lambda v: ({}, f"{name} = {v!r}: no effect ({why})"))


def _legacy(field: str, note: Callable) -> Mapped:
    return Mapped(lambda v: ({f"net.legacy.{field}": v}, note(v)), (f"net.legacy.{field}",))


# Published keys that are not plain renames (docs/differences.md, "Published config files").
PUBLISHED_MAPPED: Dict[str, Mapped] = {
    "sigma_1": _variance("process.sigma_max", "sigma_1"),
    "sigma_L": _variance("process.sigma_min", "sigma_L"),
    "fmult": _legacy("fmult", lambda v: (
        f"fmult = {v!r}: net.legacy.fmult: the published network keeps int({v!r} x grid) Fourier modes per axis "
        "in each block, the grid being that block's input size at the file's resolution (training resolution + "
        "npad); no effect on net.type uno / fno, whose modes are net.n_modes")),
    "groups": _legacy("groups", lambda v: (
        f"groups = {v!r}: net.legacy.groups: " + ("no normalisation in the published blocks" if v == 0 else
                                                   f"GroupNorm with {v!r} groups in the published blocks"))),
    "num_freqs_input": _no_effect("num_freqs_input", "the published network never used it either"),
    "scale_factor": _no_effect("scale_factor", "the published code never read it; set resolution to train at "
                                               "another resolution"),
    "num_workers": _no_effect("num_workers", "the data are held in memory; there are no loader workers"),
    "tau": _no_effect("tau", "published GANO's input-noise GRF; the project's GANO draws its inputs from the "
                             "configured noise (kernel, rbf_scale)"),
    "sigma_x0": _no_effect("sigma_x0", "published GANO's input-noise scale; the project's GANO draws its inputs "
                                       "from the configured noise"),
    # Geometric spacing is the same for variances and standard deviations; linear is not.
    "schedule": Mapped(lambda v: ({"process.schedule": v}, None if v != "linear" else (
        "schedule = 'linear': process.schedule linear spaces the standard deviations evenly; the published code "
        "spaced the variances evenly")), ("process.schedule",)),
    "alpha": _no_effect("alpha", "published GANO's input-noise GRF; the project's GANO draws its inputs from the "
                                 "configured noise (kernel, rbf_scale)"),
}


PUBLISHED: Dict[str, object] = {
    "dataset": "data.dataset", "resolution": "data.resolution", "val_size": "data.val_size",
    "split_seed": "data.split_seed", "max_examples": "data.max_examples",
    "augment": (("data.hflip", "data.vflip"), _flips),
    "grf_n_train": "data.grf_n_train", "grf_n_valid": "data.grf_n_valid", "grf_alpha": "data.grf_alpha",
    "grf_tau": "data.grf_tau",
    "white_noise": (("noise.type",), lambda v: "white" if _bool(v) else "grf"),
    "kernel": "noise.kernel", "rbf_scale": "noise.length_scale", "rbf_eps": "noise.eps",
    "process": "process.type", "interpolant": "process.interpolant",
    "npad": "data.npad", "sigma_max": "process.sigma_max", "sigma_min": "process.sigma_min", "L": "process.num_levels",
    "level_sampling": "process.level_sampling", "sigma_data": "process.sigma_data",
    "model_output": "objective.model_output", "loss_target": "objective.loss_target",
    "time_sampler": "objective.time_sampler", "loss_weighting": "objective.loss_weighting",
    "arch": "net.type", "d_co_domain": "net.width", "mult_dims": "net.channel_multipliers",
    "n_layers": "net.n_layers", "n_modes": "net.n_modes", "factorization": "net.factorization", "rank": "net.rank",
    "domain_padding": "net.domain_padding", "embedding_dim": "net.embedding_dim",
    "batch_size": "train.batch_size", "epochs": "train.epochs", "lr": "optim.lr", "grad_clip": "optim.grad_clip",
    "ema_rate": "optim.ema_rate", "max_minutes": "train.max_minutes", "record_interval": "train.record_interval",
    "device": "train.device", "threads": "train.threads", "tensorboard": "train.tensorboard",
    "Ntest": "eval.n_samples", "val_batch_size": "eval.batch_size", "val_seed": "eval.seed", "n_plot": "eval.n_plot",
    "sampler": "sampler.name", "ode_steps": "sampler.steps", "rho": "sampler.rho", "S_churn": "sampler.S_churn",
    "T": "sampler.T", "epsilon": "sampler.epsilon", "final_denoise": "sampler.final_denoise",
    "n_critic": "process.adversarial.n_critic", "lambda_grad": "process.adversarial.lambda_grad",
    **PUBLISHED_MAPPED,
}

LEVELS: Dict[str, object] = {
    "data.image_size": "data.resolution", "data.num_channels": "data.channels",
    "data.random_flip": (("data.hflip",), _flips), "data.valid_fraction": "data.val_size",
    "model.forward": "process.levels.forward", "model.K": "process.levels.K",
    "model.blur_sigma_min": "process.levels.blur_sigma_min", "model.blur_sigma_max": "process.levels.blur_sigma_max",
    "model.map_seed": "process.levels.map_seed", "model.sigma": "process.levels.sigma",
    "model.prior": "process.levels.prior", "model.prior_fit_max": "process.levels.prior_fit_max",
    "model.residual": "process.levels.residual", "model.delta": "sampler.delta", "model.net": "net.type",
    "model.ema_rate": "optim.ema_rate", "model.unet": "net.unet",
    # The heat YAML's model.fno.* / model.uno.* sections hold the neural-operator keys of `net`.
    "model.fno": "net", "model.uno": "net",
    "training.batch_size": "train.batch_size", "training.n_iters": "train.steps",
    "training.log_freq": "train.log_interval", "training.eval_freq": "train.record_interval",
    "training.snapshot_freq": "train.snapshot_interval",
    "training.snapshot_freq_for_preemption": "train.checkpoint_interval",
    "training.sampling_freq": "train.figure_interval", "training.n_samples": "eval.n_plot",
    "training.n_eval": "eval.n_valid", "training.max_minutes": "train.max_minutes",
    "training.device": "train.device", "training.threads": "train.threads",
    "optim.warmup": "optim.warmup", "optim.grad_clip": "optim.grad_clip",
    "eval.batch_size": "eval.batch_size",
}

TOY: Dict[str, object] = {
    "data.mu": "data.atoms.mu", "data.sigma_d": "data.atoms.sigma_d", "data.symmetrize": "data.atoms.symmetrize",
    "process.schedule": "process.wrapped_ve.schedule", "process.sigma_min": "process.wrapped_ve.sigma_min",
    "process.sigma_max": "process.wrapped_ve.sigma_max", "process.prior": "process.wrapped_ve.prior",
    "process.prior_tolerance": "process.wrapped_ve.prior_tolerance",
    "process.n_images": "process.wrapped_ve.n_images",
    "net.n_frequencies": "net.mlp.n_frequencies", "net.hidden": "net.mlp.hidden", "net.depth": "net.mlp.depth",
    "net.noise_dim": "net.mlp.noise_dim", "regularizer": "objective.regularizer",
    "train.lr": "optim.lr", "train.lr_schedule": "optim.schedule",
    "train.grad_clip": (("optim.grad_clip",), _zero_is_none), "train.ema_rate": "optim.ema_rate",
    "train.t_min": "process.wrapped_ve.t_min", "train.log_every": "train.log_interval",
    "train.figure_every": "train.record_interval", "train.checkpoint_every": "train.checkpoint_interval",
    "train.num_threads": (("train.threads",), _zero_is_none),
}

# What the old schemas defaulted to, where the new schema's default differs.
PRESETS = {
    "published": {},
    "levels": {
        "data.dataset": "digits", "data.npad": 0, "data.val_size": 0.15, "data.hflip": 0.0, "data.vflip": 0.0,
        "process.type": "levels", "net.type": "unet", "net.width": 32, "net.n_modes": 8,
        "optim.name": "adamw", "optim.warmup": 200,
        "train.epochs": None, "train.steps": 2000, "train.batch_size": 64, "train.log_interval": 50,
        "train.record_interval": 250, "train.checkpoint_interval": 250, "train.snapshot_interval": 1000,
        "train.figure_interval": 500, "eval.n_plot": 36, "eval.n_valid": 256, "eval.batch_size": 256,
    },
    "toy": {
        "data.dataset": "two_atoms", "data.hflip": 0.0, "data.vflip": 0.0, "process.type": "wrapped_ve",
        "net.type": "mlp", "optim.lr": 1e-3, "optim.schedule": "cosine", "train.epochs": None,
        "train.steps": 12000, "train.batch_size": 256, "train.log_interval": 100, "train.record_interval": 2000,
        "train.checkpoint_interval": 1000, "train.threads": 1, "train.device": "cpu", "sampler.steps": 200,
        "eval.n_samples": 2000,
    },
}

TABLES = {"published": PUBLISHED, "levels": LEVELS, "toy": TOY, "schema": {}}
SCHEMA_TOP = {"seed", "data", "noise", "process", "net", "objective", "sampler", "optim", "train", "eval"}


def dialect_of(values: dict, previous: str | None = None) -> str:
    """Which spelling a file's top-level mapping uses ('system' decides when present)."""
    system = values.get("system")
    if system in ("levels", "toy"):
        return system
    if system is not None:
        from .errors import UserError
        raise UserError(f"unknown system '{system}' (levels | toy; files in the one schema need no system key)")
    if previous is not None:
        return previous
    keys = set(values)
    if keys & {"model", "training"}:
        return "levels"
    if "regularizer" in keys:
        return "toy"
    if keys - SCHEMA_TOP and keys & set(PUBLISHED):
        return "published"
    return "schema"


def flatten(values: dict, prefix: str = "") -> Dict[str, object]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists stay values."""
    out = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def unflatten(flat: Dict[str, object]) -> dict:
    out: dict = {}
    for key, value in flat.items():
        node = out
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def _target(table: dict, key: str):
    """The table entry for `key` or for its closest mapped parent section ('model.unet.x' via 'model.unet')."""
    if key in table:
        return table[key], ""
    parts = key.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        head = ".".join(parts[:cut])
        # a group name (process, sampler) is never an alias section: process.x is the schema key itself
        if head in table and isinstance(table[head], str) and head not in SCHEMA_TOP:
            return table[head], "." + ".".join(parts[cut:])
    return None, ""


def translate(values: dict, dialect: str) -> Dict[str, object]:
    """A (nested) mapping in `dialect` as flat schema keys; `system` and unmapped keys pass through."""
    table = TABLES[dialect]
    out = {}
    for key, value in flatten(values).items():
        if key == "system":
            continue
        target, rest = _target(table, key)
        if target is None and dialect == "schema" and "." not in key and key in PUBLISHED \
                and (key not in SCHEMA_TOP or not isinstance(value, dict)):
            target, rest = PUBLISHED[key], ""      # e.g. `Ntest=8` on the command line of a schema file
        if target is None:
            out[key] = value
        elif isinstance(target, Mapped):
            try:
                updates, note = target.convert(value)
            except ValueError as err:
                raise ValueError(f"config key '{key}': {err}") from None
            out.update(updates)
            if note is not None:
                out[f"mapped_keys.{key}"] = note
        elif isinstance(target, str):
            out[target + rest] = value
        else:
            names, convert = target
            try:
                converted = convert(value)
            except ValueError as err:
                raise ValueError(f"config key '{key}': {err}") from None
            for name in names:
                out[name] = converted
    if dialect == "published" and "fmult" in values and "arch" not in values:
        # A file as the published code wrote it names no network: it meant the published UNO.
        out["net.type"] = "legacy_uno"
        out["mapped_keys.arch"] = ("no arch key (a file of the published code): net.type = legacy_uno, the "
                                   "published UNO")
        if values.get("process", "ve") == "ve" and "sampler" not in values:
            # Validation as published: annealed Langevin on every training level (L T + 1 evaluations).
            out["eval.sampler"] = None
            out["mapped_keys.validation"] = (
                "a file of the published code validates as published: eval.sampler = null, the sampler group's "
                "annealed Langevin on the L training levels (L x T + 1 network evaluations per sample); "
                "eval.sampler=dpm_solver_2m validates with eval.sampler_steps (10) evaluations instead")
        if "kernel" not in values and "rbf_scale" in values:
            # The published GaussianRF_RBF computed exp(-|x - y| / (2 l^2)), not the squared distance.
            out["noise.kernel"] = "exponential"
            out["mapped_keys.kernel"] = ("no kernel key (a file of the published code): noise.kernel = exponential, "
                                         "exp(-|x - y| / (2 rbf_scale^2)), which the published 'RBF' noise computed")
    return out
