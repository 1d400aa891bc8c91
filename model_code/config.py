"""Loading, validating and saving the one configuration (schema.py) of every run.

    load([file, ...], ["key=value", ...]) -> Config

Schema defaults <- the first file's dialect preset <- each file in order <- `key=value`
overrides. Files are JSON or YAML, in the schema's groups or in one of the older spellings
(config_aliases.py). A wrong name or type is blamed on where it came from (file, or
command line with the argument as typed), with "did you mean" for a misspelt key.
Only build.py and the entry scripts read the resulting object.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
import typing
from pathlib import Path

from . import config_aliases as aliases
from .config_files import merge_checked, omegaconf_error, override_item, parse_with_overrides, read_file  # noqa: F401
from .errors import UserError
from .schema import GROUPS, Config


def load(paths=(), overrides=()) -> Config:
    from omegaconf import OmegaConf

    if isinstance(paths, (str, Path)):
        paths = [paths]
    conf = OmegaConf.structured(Config)
    dialect = None
    for path in paths:
        raw = read_file(path)
        here = aliases.dialect_of(raw, dialect)
        if dialect is None:
            conf = _merge_flat(conf, aliases.PRESETS.get(here, {}), "defaults")
        dialect = here
        conf = _merge_flat(conf, _translate(raw, here, str(path)), str(path), here)
    for item in overrides:
        # The heat seed's command lines spell overrides `config.training.n_iters=...`.
        key = item[len("config."):] if dialect == "levels" and item.startswith("config.") else item
        where = f"command line: {item}"
        conf = _merge_flat(conf, _translate(override_item(key), dialect or "schema", where), where,
                           dialect or "schema")
    cfg = finish(conf)
    _note_legacy_modes(cfg)
    return cfg


def _note_legacy_modes(cfg: Config) -> None:
    """fmult's note with the Fourier modes it gives at the file's resolution (the published UNO only)."""
    note = cfg.mapped_keys.get("fmult")
    if note is None or cfg.net.type != "legacy_uno":
        return
    from .nets.legacy_uno import legacy_layout

    # The published grid: the fields' size after cropping npad px, plus the npad px the net pads back.
    grid = cfg.data.resolution or 128
    blocks = legacy_layout(cfg.net.width, cfg.net.channel_multipliers, grid, cfg.net.legacy.fmult)
    modes = ", ".join(str(b["modes"]) for b in blocks)
    sizes = " -> ".join(str(b["in_size"]) for b in blocks) + f" -> {blocks[-1]['out_size']}"
    cfg.mapped_keys["fmult"] = (f"{note}; at grid {grid} px (blocks {sizes}) the modes per axis are {modes}")


def _translate(values: dict, dialect: str, where: str) -> dict:
    try:
        return aliases.translate(values, dialect)
    except ValueError as err:
        raise UserError(f"{where}: {err}") from None


def from_dict(values: dict, source: str = "config") -> Config:
    """A config saved by `save` (the schema's own spelling), validated."""
    from omegaconf import OmegaConf

    flat = aliases.flatten(values)
    # Runs saved before these ranges were checked: 0 meant what null means now (automatic / the data's own size).
    for key in ("train.threads", "data.resolution"):
        if flat.get(key) == 0:
            flat[key] = None
    return finish(_merge_flat(OmegaConf.structured(Config), flat, source, "schema"))


def finish(conf) -> Config:
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        cfg = OmegaConf.to_object(conf)
    except OmegaConfBaseException as err:   # e.g. an ${interpolation} that does not resolve
        raise UserError(f"config: {omegaconf_error(err, Config, {})}") from None
    validate(cfg)
    return cfg


def _merge_flat(conf, flat: dict, where: str, dialect: str = "schema"):
    for key in flat:
        if key not in SCHEMA_KEYS and not any(key.startswith(k + ".") for k in SCHEMA_KEYS):
            names = sorted(SCHEMA_KEYS | set(aliases.TABLES.get(dialect) or aliases.PUBLISHED))
            close = difflib.get_close_matches(key, names, n=1)
            raise UserError(f"{where}: unknown config key '{key}'"
                            + (f" (did you mean '{close[0]}'?)" if close else ""))
    return merge_checked(conf, aliases.unflatten(flat), Config, where)


def _leaf_keys(cls, prefix: str = "") -> set:
    keys = set()
    for f in dataclasses.fields(cls):
        tp = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            keys |= _leaf_keys(tp, f"{prefix}{f.name}.")
        else:
            keys.add(prefix + f.name)
    return keys


SCHEMA_KEYS = _leaf_keys(Config)


# ============================================================================ validation
def _need(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(f"config: {message}")


def _check_choices(obj, prefix: str = "") -> None:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            _check_choices(value, f"{prefix}{f.name}.")
        elif "choices" in f.metadata and value is not None:     # None: an Optional field's "unset"
            _need(value in f.metadata["choices"],
                  f"{prefix}{f.name} must be one of {', '.join(f.metadata['choices'])}; got '{value}'")


def validate(cfg: Config) -> None:
    """Range, choice and combination checks that a type alone does not express."""
    _check_choices(cfg)
    d, p, n, o, s, t, e = cfg.data, cfg.process, cfg.net, cfg.optim, cfg.sampler, cfg.train, cfg.eval
    toy = d.dataset == "two_atoms"
    _need(toy == (p.type == "wrapped_ve") == (n.type == "mlp"),
          "the toy problem is data.dataset=two_atoms with process.type=wrapped_ve and net.type=mlp (all three "
          f"or none); got {d.dataset}, {p.type}, {n.type}")
    _need((t.epochs is None) != (t.steps is None),
          f"give exactly one of train.epochs and train.steps (the other null); got {t.epochs}, {t.steps}")
    _need(not (toy and t.epochs is not None), "the toy data is a stream: set train.steps and train.epochs=null")
    for name in ("epochs", "steps", "snapshot_interval", "figure_interval"):
        value = getattr(t, name)
        _need(value is None or value >= 1, f"train.{name} must be >= 1 or null; got {value}")
    for name in ("batch_size", "log_interval", "record_interval", "checkpoint_interval"):
        _need(getattr(t, name) >= 1, f"train.{name} must be >= 1; got {getattr(t, name)}")
    for name in ("n_samples", "batch_size", "n_plot"):
        _need(getattr(e, name) >= 1, f"eval.{name} must be >= 1; got {getattr(e, name)}")
    _need(e.n_valid is None or e.n_valid >= 1, f"eval.n_valid must be >= 1 or null; got {e.n_valid}")
    _need(e.sampler_steps >= 1, f"eval.sampler_steps must be >= 1; got {e.sampler_steps}")
    _need(e.sampler_sigma_min is None or 0 < e.sampler_sigma_min < p.sigma_max,
          f"eval.sampler_sigma_min must lie in (0, process.sigma_max = {p.sigma_max}) or be null; "
          f"got {e.sampler_sigma_min}")
    _need(p.sigma_max > p.sigma_min > 0, f"noise levels must satisfy process.sigma_max > process.sigma_min > 0 "
                                         f"(standard deviations); got {p.sigma_max}, {p.sigma_min}")
    for name, value in (("process.num_levels", p.num_levels), ("sampler.T", s.T), ("sampler.steps", s.steps),
                        ("net.width", n.width), ("net.n_layers", n.n_layers), ("net.n_modes", n.n_modes),
                        ("net.embedding_dim", n.embedding_dim), ("data.grf_n_train", d.grf_n_train),
                        ("data.grf_n_valid", d.grf_n_valid), ("process.levels.K", p.levels.K),
                        ("optim.ema_update_every", o.ema_update_every)):
        _need(value >= 1, f"{name} must be >= 1; got {value}")
    for name, value in (("optim.lr", o.lr), ("sampler.epsilon", s.epsilon), ("noise.length_scale", cfg.noise.length_scale), ("process.sigma_data", p.sigma_data), ("net.rank", n.rank),
                        ("sampler.rho", s.rho), ("sampler.delta", s.delta), ("process.levels.sigma", p.levels.sigma)):
        _need(value > 0, f"{name} must be > 0; got {value}")
    _need(0 < d.val_size < 1, f"data.val_size must be in (0, 1); got {d.val_size}")
    _validate_ranges(cfg)
    for name in ("hflip", "vflip", "rot90"):
        _need(0 <= getattr(d, name) <= 1, f"data.{name} is a probability in [0, 1]; got {getattr(d, name)}")
    _need(o.ema_rate is None or 0 <= o.ema_rate < 1, f"optim.ema_rate must be in [0, 1) or null; got {o.ema_rate}")
    _need(o.grad_clip is None or o.grad_clip > 0, f"optim.grad_clip must be > 0 or null; got {o.grad_clip}")
    _need(o.warmup >= 0 and o.weight_decay >= 0 and 0 <= o.min_lr_ratio <= 1,
          "optim.warmup and optim.weight_decay must be >= 0 and optim.min_lr_ratio in [0, 1]")
    _need(d.npad >= 0 and cfg.noise.eps >= 0, "data.npad and noise.eps must be >= 0")
    _need(n.factorization in (None, "tucker", "cp", "tt"),
          f"net.factorization must be null, tucker, cp or tt; got '{n.factorization}'")
    _need(bool(n.channel_multipliers) and min(n.channel_multipliers) >= 1,
          f"net.channel_multipliers must be a non-empty list of positive integers; got {n.channel_multipliers}")
    _need(0 < p.levels.blur_sigma_min <= p.levels.blur_sigma_max,
          "need 0 < process.levels.blur_sigma_min <= process.levels.blur_sigma_max")
    _need(not d.conditional or (d.dataset in ("digits", "mnist", "cifar10") and n.type == "unet"),
          f"data.conditional needs labelled images (digits, mnist, cifar10) and net.type=unet; got {d.dataset}, "
          f"{n.type}")
    _need(len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas), f"optim.betas must be two numbers in [0, 1); "
                                                                   f"got {o.betas}")
    _validate_accelerator(cfg)
    if n.type == "legacy_uno":
        _validate_legacy(cfg)
    if p.type == "adversarial":
        _validate_adversarial(cfg)
    if toy:
        _validate_toy(cfg)


# The smallest grid (px per side) a run may ask for: the digits' own 8 x 8, where every backbone at its default
# depth still has a grid at its coarsest level (the UNO's 4 levels halve 8 px to 1 px; below, neuralop's
# resampling fails with a traceback).
MIN_RESOLUTION = 8


def _validate_ranges(cfg: Config) -> None:
    """Fields whose range no combination decides; each message names the key and the value."""
    d, p, n, o, s, t, e = cfg.data, cfg.process, cfg.net, cfg.optim, cfg.sampler, cfg.train, cfg.eval
    _need(d.resolution is None or d.resolution >= MIN_RESOLUTION,
          f"data.resolution must be >= {MIN_RESOLUTION} (px per side) or null (the data's own size); "
          f"got {d.resolution}")
    _need(d.max_examples is None or d.max_examples >= 1,
          f"data.max_examples must be >= 1 or null (all examples); got {d.max_examples}")
    _need(d.channels in (None, 1, 3), f"data.channels must be 1 (grey), 3 (RGB) or null (the data's own); "
                                      f"got {d.channels}")
    # 0 used to mean "automatic" by accident (a falsy count); null is the one spelling of that.
    _need(t.threads is None or t.threads >= 1,
          f"train.threads must be >= 1 or null (null = automatic: OMP_NUM_THREADS, else SLURM_CPUS_PER_TASK, "
          f"else the available cores / processes); got {t.threads}")
    _need(t.max_minutes is None or t.max_minutes > 0,
          f"train.max_minutes must be > 0 or null (no limit); got {t.max_minutes}")
    # numpy's generators (the volcano split, the data order) take no negative seed.
    for name, value in (("seed", cfg.seed), ("data.split_seed", d.split_seed), ("eval.seed", e.seed),
                        ("process.levels.map_seed", p.levels.map_seed)):
        _need(value >= 0, f"{name} must be >= 0; got {value}")
    for name, value in (("net.unet.model_channels", n.unet.model_channels), ("net.unet.num_res_blocks",
                        n.unet.num_res_blocks), ("net.unet.num_heads", n.unet.num_heads),
                        ("net.mlp.n_frequencies", n.mlp.n_frequencies), ("net.mlp.hidden", n.mlp.hidden),
                        ("net.mlp.depth", n.mlp.depth), ("net.mlp.noise_dim", n.mlp.noise_dim),
                        ("process.levels.prior_fit_max", p.levels.prior_fit_max)):
        _need(value >= 1, f"{name} must be >= 1; got {value}")
    for name, value in (("optim.ema_update_after", o.ema_update_after), ("sampler.S_churn", s.S_churn),
                        ("process.wrapped_ve.n_images", p.wrapped_ve.n_images)):
        _need(value >= 0, f"{name} must be >= 0; got {value}")
    _need(p.wrapped_ve.prior_tolerance > 0,
          f"process.wrapped_ve.prior_tolerance must be > 0; got {p.wrapped_ve.prior_tolerance}")
    _need(n.domain_padding is None or n.domain_padding >= 0,
          f"net.domain_padding must be >= 0 or null (none); got {n.domain_padding}")
    # The GRF data's pointwise variance sum_k (4 pi^2 |k|^2 + tau^2)^-alpha is finite in 2-D only for alpha > 1.
    _need(d.grf_alpha > 1, f"data.grf_alpha must be > 1; got {d.grf_alpha}")
    _need(d.grf_tau > 0, f"data.grf_tau must be > 0; got {d.grf_tau}")
    u = n.unet
    _need(bool(u.channel_mult) and min(u.channel_mult) >= 1,
          f"net.unet.channel_mult must be a non-empty list of positive integers; got {u.channel_mult}")
    _need(all(0 <= a < len(u.channel_mult) for a in u.attention_levels),
          f"net.unet.attention_levels must lie in 0..{len(u.channel_mult) - 1} (levels of net.unet.channel_mult); "
          f"got {u.attention_levels}")
    _need(0 <= u.dropout < 1, f"net.unet.dropout must be in [0, 1); got {u.dropout}")


def _validate_accelerator(cfg: Config) -> None:
    from .precision import COMPILE_MODES

    t = cfg.train
    _need(t.compile is None or t.compile in COMPILE_MODES,
          f"train.compile must be null (off) or one of {', '.join(COMPILE_MODES)}; got '{t.compile}'")
    _need(bool(t.compile_backend), "train.compile_backend must name a torch.compile backend (e.g. inductor)")
    _need(t.compile in (None, "default") or t.compile_backend == "inductor",
          f"train.compile={t.compile} is an inductor mode; train.compile_backend={t.compile_backend} takes none "
          f"(use train.compile=default)")
    # The toy's regularizers differentiate the network twice, which compiled autograd does not support.
    _need(t.compile is None or cfg.process.type != "wrapped_ve",
          "train.compile is not available for the toy (process.type=wrapped_ve): set train.compile=null")


def _validate_legacy(cfg: Config) -> None:
    n, lg = cfg.net, cfg.net.legacy
    _need(len(n.channel_multipliers) == 4, f"net.type=legacy_uno has 4 levels: net.channel_multipliers needs 4 "
                                           f"values; got {n.channel_multipliers}")
    _need(n.factorization in (None, "tucker"), f"net.type=legacy_uno stores its spectral weights dense (null) or "
                                               f"as tucker; got net.factorization={n.factorization}")
    _need(0 < lg.fmult <= 1, f"net.legacy.fmult is a fraction of each block's grid in (0, 1]; got {lg.fmult}")
    _need(lg.groups >= 0, f"net.legacy.groups must be >= 0; got {lg.groups}")


def _validate_adversarial(cfg: Config) -> None:
    a = cfg.process.adversarial
    _need(cfg.net.type in ("uno", "fno") and cfg.data.dataset in ("volcano", "grf"),
          f"process.type=adversarial (GANO) needs neural operators (net.type uno or fno) on fields (data.dataset "
          f"volcano or grf); got {cfg.net.type}, {cfg.data.dataset}")
    _need(a.n_critic >= 1 and a.kernel_width >= 1, "process.adversarial.n_critic and kernel_width must be >= 1")
    _need(a.lambda_grad >= 0, f"process.adversarial.lambda_grad must be >= 0; got {a.lambda_grad}")
    _need(a.critic_lr is None or a.critic_lr > 0, f"process.adversarial.critic_lr must be > 0 or null; got {a.critic_lr}")
    _need(a.critic_betas is None or (len(a.critic_betas) == 2 and all(0 <= b < 1 for b in a.critic_betas)),
          f"process.adversarial.critic_betas must be two numbers in [0, 1) or null; got {a.critic_betas}")


def _validate_toy(cfg: Config) -> None:
    from .processes.wrapped_ve import uniform_deviation_bound

    a, w, r = cfg.data.atoms, cfg.process.wrapped_ve, cfg.objective.regularizer
    _need(len(a.mu) >= 1 and a.sigma_d > 0, "data.atoms.mu needs >= 1 atom and data.atoms.sigma_d > 0")
    _need(0 < w.sigma_min < w.sigma_max, f"need 0 < process.wrapped_ve.sigma_min < sigma_max; got {w.sigma_min}, "
                                         f"{w.sigma_max}")
    _need(0 <= w.t_min < 1, f"process.wrapped_ve.t_min must be in [0, 1); got {w.t_min}")
    if w.prior == "uniform":
        def deviation(sigma_max):
            return uniform_deviation_bound(math.sqrt(a.sigma_d ** 2 + sigma_max ** 2), len(a.mu))

        if deviation(w.sigma_max) > w.prior_tolerance:
            lo, hi = w.sigma_max, 10.0           # bisection for the smallest sufficient sigma_max
            for _ in range(40):
                mid = 0.5 * (lo + hi)
                lo, hi = (lo, mid) if deviation(mid) <= w.prior_tolerance else (mid, hi)
            _need(False, f"p_1 deviates from uniform by up to {deviation(w.sigma_max):.2g} > "
                         f"process.wrapped_ve.prior_tolerance={w.prior_tolerance:g}; set process.wrapped_ve.sigma_max "
                         f">= {hi:.3f} or process.wrapped_ve.prior=exact")
    _need(r.weight >= 0 and r.burn_in >= 0 and r.n_points >= 0,
          "objective.regularizer.weight, burn_in and n_points must be >= 0")
    c = r.consistency
    _need(0 < c.delta_t <= 1 and c.n_steps >= 1 and c.n_samples >= 2 and c.n_samples % 2 == 0,
          "objective.regularizer.consistency needs 0 < delta_t <= 1, n_steps >= 1 and an even n_samples >= 2")
    _need(cfg.train.batch_size >= 2, "train.batch_size must be >= 2 for the toy")


# ============================================================================ saving and help
def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def save(cfg: Config, path) -> None:
    """Write the resolved config (every field, defaults included) as config.json."""
    from .files import atomic_write_text, json_text

    atomic_write_text(path, json_text(to_dict(cfg), indent=2, sort_keys=True) + "\n")


def differences(old: dict, new: dict, ignore=()) -> list:
    """Dotted keys whose values differ between two saved configs (keys in `ignore` skipped)."""
    a, b = aliases.flatten(old), aliases.flatten(new)
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and k not in ignore)


def field_help(cls=Config, prefix: str = "") -> list:
    """(dotted name, type, default, help) of every field, for --help and docs/config.md."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows.append((prefix + f.name, "group", "", f.metadata.get("help", "")))
            rows += field_help(tp, f"{prefix}{f.name}.")
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        doc = f.metadata["help"]
        if "choices" in f.metadata:
            doc += f" (one of: {', '.join(f.metadata['choices'])})"
        name = tp.__name__ if isinstance(tp, type) else str(tp).replace("typing.", "")
        rows.append((prefix + f.name, name, json.dumps(default), doc))
    return rows


__all__ = ["Config", "GROUPS", "load", "from_dict", "finish", "validate", "to_dict", "save", "differences",
           "field_help", "parse_with_overrides"]
