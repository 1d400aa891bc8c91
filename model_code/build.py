"""The one place that maps configuration names to objects (every system).

Library modules take plain arguments; this module reads the `Config` (schema.py) and builds
the data source, noise, process, network, optimiser, evaluators and the Trainer. Checkpoints
store the parts' descriptions, so `load_run` rebuilds any run from its checkpoint alone.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Optional

import torch

from . import config as config_mod
from .errors import UserError
from .samplers import SAMPLERS
from .schedules import edm_sigmas, sigma_levels

GRF_DEFAULT_RESOLUTION = 32
IMAGE_DATASETS = ("digits", "mnist", "cifar10", "folder")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device '{name}' requested but CUDA is not available (use device=cpu or auto)")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device '{name}' (auto, cpu, cuda or cuda:N)") from None


# ----------------------------------------------------------------------- data
def data_folder(cfg, data_dir: Optional[str]) -> Optional[str]:
    """The folder, made absolute, that build_dataset reads the config's data set from with `data_dir`
    ($DATA_DIR); None for data that reads no folder (GRF, digits, the toy) or when none is given."""
    from .data.folder import absolute

    d = cfg.data
    if d.dataset == "volcano":
        return absolute(data_dir)
    if d.dataset in IMAGE_DATASETS and d.dataset != "digits":
        # mnist / cifar10 fall back to data/ as their loader does; an image folder has no default.
        return absolute(d.root or data_dir or (None if d.dataset == "folder" else "data"))
    return None


def build_dataset(cfg, data_dir: Optional[str], resolution_factor: int = 1, replaces_root: bool = False):
    """The train / validation split (data.Dataset); `resolution_factor` > 1: the same split on a finer grid.
    replaces_root: `data_dir` is the very folder to read (an evaluation's --data_dir, or the folder the run
    recorded), also for image data sets whose data.root would otherwise win."""
    from .data import load_dataset

    d = cfg.data
    if d.dataset == "two_atoms":
        return None
    if d.dataset == "volcano":
        resolution = None if d.resolution is None and resolution_factor == 1 else \
            (d.resolution or 128) * resolution_factor
        return load_dataset("volcano", data_dir=data_dir, resolution=resolution, npad=d.npad * resolution_factor,
                            val_size=d.val_size, split_seed=d.split_seed, max_examples=d.max_examples)
    if d.dataset == "grf":
        return load_dataset("grf", n_train=d.grf_n_train, n_valid=d.grf_n_valid,
                            resolution=(d.resolution or GRF_DEFAULT_RESOLUTION) * resolution_factor,
                            npad=d.npad * resolution_factor, split_seed=d.split_seed, alpha=d.grf_alpha,
                            tau=d.grf_tau)
    root = data_dir if replaces_root and data_dir is not None else d.root or data_dir
    return load_dataset(d.dataset, root=root, image_size=None if d.resolution is None else
                        d.resolution * resolution_factor, num_channels=d.channels, valid_fraction=d.val_size,
                        split_seed=d.split_seed, download=d.download, max_examples=d.max_examples)


def build_source(cfg, data):
    from .data.sources import StreamSource, TensorSource

    d = cfg.data
    if data is None:
        from .data.toy import TwoAtomData

        atoms = TwoAtomData(d.atoms.mu, d.atoms.sigma_d, d.atoms.symmetrize)
        return StreamSource(atoms.sample)
    return TensorSource(data.train, data.train_labels if d.conditional else None, hflip=d.hflip, vflip=d.vflip,
                        rot90=d.rot90, dequantize_levels=data.levels if d.dequantize else None)


# ---------------------------------------------------------------------- noise
def build_noise(cfg, channels: int):
    from .noise import GaussianRandomField, WhiteNoise

    n = cfg.noise
    if n.type == "white":
        return WhiteNoise(channels=channels)
    return GaussianRandomField(channels=channels, kernel=n.kernel, length_scale=n.length_scale, eps=n.eps)


def noise_from_description(desc: dict):
    from .noise import GaussianRandomField, WhiteNoise

    desc = dict(desc)
    kind = desc.pop("type")
    classes = {"white": WhiteNoise, "grf": GaussianRandomField}
    if kind not in classes:
        raise UserError(f"checkpoint names an unknown noise type '{kind}'")
    return classes[kind](**desc)


# -------------------------------------------------------------------- process
def build_process(cfg, data, noise):
    """The forward process (processes/), the toy's regularizer wrapped around its VE."""
    p = cfg.process
    if p.type == "ve":
        from .processes.ve import VE

        return VE(noise, sigma_levels(p.sigma_max, p.sigma_min, p.num_levels, p.schedule), p.level_sampling,
                  p.sigma_data, cfg.objective.loss_weighting)
    if p.type == "interpolant":
        from .processes.interpolant import InterpolantProcess, build_interpolant

        o = cfg.objective
        return InterpolantProcess(noise, build_interpolant(p.interpolant), o.model_output, o.loss_target,
                                  o.time_sampler)
    if p.type == "adversarial":
        from .nets import describe_net
        from .processes.adversarial import AdversarialProcess

        a = p.adversarial
        # The critic is the generator's network type with one output channel (GANO uses one architecture).
        critic = describe_net(build_net(cfg, data.shape, out_channels=1))
        return AdversarialProcess(noise, critic, a.n_critic, a.lambda_grad, a.kernel_width, a.output)
    if p.type == "levels":
        from .processes.linear import build_map
        from .processes.levels import LevelsProcess

        lv = p.levels
        try:
            fmap = build_map(lv.forward, data.shape, lv.K, seed=lv.map_seed, blur_sigma_min=lv.blur_sigma_min,
                             blur_sigma_max=lv.blur_sigma_max)
        except (KeyError, ValueError) as err:
            raise UserError(f"process.levels.forward={lv.forward}: {err}") from None
        return LevelsProcess(fmap, lv.sigma, cfg.sampler.delta, lv.prior, lv.prior_fit_max, lv.residual,
                             data.levels)
    from .processes.wrapped_ve import SigmaSchedule, WrappedVEProcess
    from .regularizers import Regularized

    w, r, a = p.wrapped_ve, cfg.objective.regularizer, cfg.data.atoms
    process = WrappedVEProcess(SigmaSchedule(w.schedule, w.sigma_min, w.sigma_max), w.prior, w.n_images, w.t_min,
                               len(a.mu))
    if r.kind == "none":
        return process
    return Regularized(process, r.kind, r.weight, r.burn_in, r.n_points, analytic=analytic_score(cfg),
                       laplacian=r.laplacian, weighting=r.weighting,
                       consistency=config_mod.to_dict(cfg)["objective"]["regularizer"]["consistency"])


def toy_modes(cfg):
    """The toy's atom configurations (both orderings when symmetrized), as a numpy array."""
    from .data.toy import TwoAtomData

    a = cfg.data.atoms
    return TwoAtomData(a.mu, a.sigma_d, a.symmetrize).modes().numpy()


def analytic_score(cfg):
    from .toy_score import AnalyticScore

    a = cfg.data.atoms
    return AnalyticScore(a.mu, a.sigma_d, a.symmetrize, cfg.process.wrapped_ve.n_images)


# -------------------------------------------------------------------- network
def build_net(cfg, shape, num_classes: int = 0, out_channels: Optional[int] = None):
    """The config's backbone for data of one-sample `shape` (out_channels: default the data's channels)."""
    from .nets import build_net as make

    n = cfg.net
    channels = shape[0]
    out = channels if out_channels is None else out_channels
    if n.type == "mlp":
        return make("mlp", **config_mod.to_dict(cfg)["net"]["mlp"])
    if n.type == "unet":
        return make("unet", in_channels=channels, out_channels=channels, num_classes=num_classes,
                    **config_mod.to_dict(cfg)["net"]["unet"])
    if n.type == "legacy_uno":
        # The published sdim: the cropped training size plus the padding the net puts back.
        if len(shape) != 3 or shape[1] != shape[2]:
            raise UserError(f"net.type=legacy_uno needs square fields (C, H, H); the data have shape {tuple(shape)}")
        return make("legacy_uno", in_channels=channels, out_channels=out, width=n.width,
                    channel_multipliers=list(n.channel_multipliers), grid=int(shape[1]) + cfg.data.npad,
                    pad=cfg.data.npad, factorization=n.factorization, rank=n.rank,
                    **config_mod.to_dict(cfg)["net"]["legacy"])
    common = dict(in_channels=channels, out_channels=out, width=n.width, n_modes=n.n_modes,
                  embedding_dim=n.embedding_dim, factorization=n.factorization, rank=n.rank,
                  domain_padding=n.domain_padding)
    if n.type == "fno":
        return make("fno", n_layers=n.n_layers, **common)
    return make("uno", channel_multipliers=list(n.channel_multipliers), **common)


# -------------------------------------------------------------------- sampler
def sampler_setup(cfg, name: str | None = None, steps: int | None = None, sigma_min: float | None = None) -> dict:
    """The options of process.sample for the config's sampler (eval.py may override name / steps / sigma_min).

    ve / interpolant: the sampler function's name, its sigma grid and options; steps are the
    Langevin steps per level (T) or the number of EDM-grid levels. levels: delta. wrapped_ve: steps.
    """
    p, s = cfg.process, cfg.sampler
    if p.type == "adversarial":
        return {}                        # one generator evaluation, nothing to choose
    if p.type == "levels":
        return {"delta": s.delta}
    if p.type == "wrapped_ve":
        return {"n_steps": steps or s.steps}
    name = name or s.name
    if name not in SAMPLERS:
        raise UserError(f"unknown sampler '{name}' (one of: {', '.join(SAMPLERS)})")
    if name == "annealed_langevin":
        return {"sampler": name, "sigmas": sigma_levels(p.sigma_max, p.sigma_min, p.num_levels, p.schedule),
                "T": steps or s.T, "epsilon": s.epsilon, "final_denoise": s.final_denoise}
    if sigma_min is not None and not 0 < sigma_min < p.sigma_max:
        raise UserError(f"sigma_min must lie in (0, sigma_max = {p.sigma_max}); got {sigma_min}")
    options = {"S_churn": s.S_churn} if name == "edm_stochastic" else {}
    return {"sampler": name, "sigmas": edm_sigmas(p.sigma_max, sigma_min or p.sigma_min, steps or s.steps, s.rho),
            **options}


def validation_sampler_setup(cfg) -> dict:
    """process.sample's options for the validation samples drawn during training.

    eval.sampler (ve / interpolant): a fast sampler ranks checkpoints for a small share of the
    training time; null keeps the `sampler` group's (eval.py's default), as published files do.
    """
    e = cfg.eval
    if e.sampler is None or cfg.process.type not in ("ve", "interpolant"):
        return sampler_setup(cfg)
    if e.sampler == "annealed_langevin":
        return sampler_setup(cfg, e.sampler)       # the training levels and the sampler group's T
    return sampler_setup(cfg, e.sampler, e.sampler_steps, e.sampler_sigma_min)


def sampler_label(options: dict) -> tuple:
    """(sampler name, steps word) for folder names: e.g. ('annealed_langevin', 'T3'), ('heun_ode', 'steps20')."""
    if not options:
        return "generator", "nfe1"
    if "delta" in options:
        return "levels", f"delta{options['delta']:g}"
    if "n_steps" in options:
        return options.get("sampler", "reverse_sde"), f"steps{options['n_steps']}"
    if options["sampler"] == "annealed_langevin":
        return options["sampler"], f"T{options['T']}"
    return options["sampler"], f"steps{len(options['sigmas'])}"


# ----------------------------------------------------------------- evaluators
def default_evaluators(cfg) -> list:
    if cfg.process.type == "wrapped_ve":
        return ["score_error"]
    if cfg.data.dataset not in IMAGE_DATASETS:
        return ["field_stats"]
    names = ["elbo"] if cfg.process.type == "levels" else []
    return names + (["frechet"] if cfg.data.dataset == "digits" else [])


def build_evaluators(cfg, data, kind: str, warn: bool = True) -> list:
    from . import evaluators as ev

    names = cfg.eval.evaluators if cfg.eval.evaluators is not None else default_evaluators(cfg)
    out = []
    for name in names:
        if name == "field_stats":
            out.append(ev.FieldStats(kind, data.valid, seed=cfg.seed, n=cfg.eval.n_samples, warn=warn))
        elif name == "elbo":
            if cfg.process.type != "levels":
                raise UserError("eval.evaluators: elbo needs process.type=levels")
            out.append(ev.LevelsELBO(cfg.eval.n_valid, cfg.eval.batch_size, seed=cfg.seed + 2))
        elif name == "frechet":
            out.append(ev.Frechet(cfg.eval.n_samples))
        elif name == "spectrum":
            from .spectrum import SpectrumError

            if kind not in ("phase", "real"):
                raise UserError("eval.evaluators: spectrum needs field data (volcano, grf)")
            out.append(SpectrumError(data.valid, n=cfg.eval.n_samples, seed=cfg.seed))
        elif name == "score_error":
            from .data.toy import TwoAtomData
            from .processes.wrapped_ve import SigmaSchedule

            a, w = cfg.data.atoms, cfg.process.wrapped_ve
            out.append(ev.ToyScoreError(analytic_score(cfg), TwoAtomData(a.mu, a.sigma_d, a.symmetrize),
                                        SigmaSchedule(w.schedule, w.sigma_min, w.sigma_max)))
        else:
            raise UserError(f"eval.evaluators: unknown evaluator '{name}' (field_stats, spectrum, elbo, frechet, "
                            f"score_error)")
    known = [m for e in out for m in e.metrics]
    for name in cfg.train.track or []:
        if name not in known:
            raise UserError(f"train.track: '{name}' is not reported by the evaluators ({', '.join(known) or 'none'})")
    return out


# ------------------------------------------------------------------ optimiser
def decay_groups(parameters, weight_decay: float, **settings) -> list:
    """Parameter groups: weight decay on weight matrices and kernels, never on biases, norm or output scales."""
    params = [p for p in parameters if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay, **settings},
              {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0, **settings}]
    return [g for g in groups if g["params"]]


def build_optimizer(cfg, model):
    """Adam / AdamW over decay groups; GANO's generator and critic have their own learning rates and betas."""
    o = cfg.optim
    cls = torch.optim.AdamW if o.name == "adamw" else torch.optim.Adam
    if cfg.process.type != "adversarial":
        return cls(decay_groups(model.parameters(), o.weight_decay), lr=o.lr, betas=tuple(o.betas))
    a = cfg.process.adversarial
    critic = dict(lr=a.critic_lr or o.lr, betas=tuple(a.critic_betas or o.betas))
    return cls(decay_groups(model.generator_parameters(), o.weight_decay, lr=o.lr, betas=tuple(o.betas))
               + decay_groups(model.critic.parameters(), o.weight_decay, **critic), lr=o.lr)


def lr_factor(step: int, warmup: int, total: int, schedule: str, min_ratio: float) -> float:
    """Linear warm-up to 1 over `warmup` steps, then constant or cosine down to min_ratio at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


# -------------------------------------------------------------------- trainer
@dataclass
class Parts:
    data: Any
    kind: str
    shape: tuple
    noise: Any
    process: Any
    net: Any
    model: Any


def build_parts(cfg, data_dir, device):
    torch.manual_seed(cfg.seed)
    data = build_dataset(cfg, data_dir)
    if data is None:
        kind, shape, num_classes = "atoms", (len(cfg.data.atoms.mu),), 0
    else:
        kind, shape = data.kind, data.shape
        num_classes = data.num_classes if cfg.data.conditional else 0
    noise = build_noise(cfg, shape[0]) if cfg.process.type in ("ve", "interpolant", "adversarial") else None
    process = build_process(cfg, data, noise)
    net = build_net(cfg, shape, num_classes)
    model = process.wrap(net).to(device)
    return Parts(data, kind, shape, noise, process, net, model)


def meta_of(cfg, parts) -> dict:
    from .nets import describe_net

    data = parts.data
    return {"kind": "run", "config": config_mod.to_dict(cfg), "net": describe_net(parts.net),
            "process": parts.process.describe(), "data": {
                "kind": parts.kind, "shape": list(parts.shape), "levels": None if data is None else data.levels,
                "num_classes": parts.net.config.get("num_classes", 0) if hasattr(parts.net, "config") else 0}}


def build_trainer(cfg, savedir, data_dir, dist=None, device=None, progress: bool = False, log_lines: bool = False):
    """The Trainer of any run; `dist` (distributed.Context) for multi-process runs."""
    from . import figures
    from .ema import EMA
    from .trainer import LoopSettings, Trainer

    from . import precision

    device = device if device is not None else resolve_device(cfg.train.device)
    precision.set_tf32(device, cfg.train.tf32)
    parts = build_parts(cfg, data_dir, device)
    data, t, o, e = parts.data, cfg.train, cfg.optim, cfg.eval
    # Before the EMA copy, which then runs in the same precision.
    precision.apply_precision(parts.net, t.precision)
    source = build_source(cfg, data)
    if data is not None:
        parts.process.fit(data.train)
    unit = "epoch" if t.epochs is not None else "step"
    per_unit = source.batches_per_epoch(t.batch_size) if unit == "epoch" else 1
    length = t.epochs if unit == "epoch" else t.steps
    meta = meta_of(cfg, parts)
    # Every checkpoint remembers where its data came from, so an evaluation needs no DATA_DIR.
    meta["data_dir"] = data_folder(cfg, data_dir)
    settings = LoopSettings(
        unit=unit, length=length, steps_per_unit=per_unit, batch_size=t.batch_size, log_interval=t.log_interval,
        record_interval=t.record_interval, checkpoint_interval=t.checkpoint_interval,
        snapshot_interval=t.snapshot_interval, figure_interval=t.figure_interval, grad_clip=o.grad_clip,
        ema_update_after=o.ema_update_after, ema_update_every=o.ema_update_every, seed=cfg.seed,
        max_minutes=t.max_minutes, track=t.track, select=t.select, n_samples=e.n_samples, n_plot=e.n_plot,
        eval_batch_size=e.batch_size, eval_seed=e.seed, n_valid=e.n_valid, sample_shape=parts.shape,
        sample_options=validation_sampler_setup(cfg), num_classes=meta["data"]["num_classes"], tensorboard=t.tensorboard,
        progress=progress, log_lines=log_lines, pin_memory=t.pin_memory)
    optimizer = build_optimizer(cfg, parts.model)
    ema = EMA(parts.model, o.ema_rate) if o.ema_rate is not None else None
    if t.compile is not None:
        # After the EMA copy: deepcopy would share the compiled function of the original module.
        precision.compile_net(parts.net, t.compile, t.compile_backend)
        if ema is not None:
            path = precision.submodule_path(parts.model, parts.net)
            precision.compile_net(ema.shadow.get_submodule(path), t.compile, t.compile_backend)
    valid = (None, None) if data is None else (data.valid, data.valid_labels if cfg.data.conditional else None)
    start = None
    if cfg.process.type in ("ve", "interpolant") and parts.kind in ("phase", "real"):
        p = cfg.process
        sigmas = sigma_levels(p.sigma_max, p.sigma_min, p.num_levels, p.schedule)
        start = partial(figures.noise_figures, parts.noise, sigmas, data.train[0], cfg.seed)
    evaluators = build_evaluators(cfg, data, parts.kind, warn=dist is None or dist.is_main)
    trainer = Trainer(parts.model, parts.process, source, optimizer, ema, evaluators, valid, savedir, settings,
                      device, meta, dist=dist,
                      lr_factor=partial(lr_factor, warmup=o.warmup, total=settings.total_steps,
                                        schedule=o.schedule, min_ratio=o.min_lr_ratio),
                      figure=figures.for_kind(parts.kind, toy_modes(cfg) if data is None else None),
                      start_figures=start)
    # The weights start equal on every rank (same seed, then broadcast from rank 0); what
    # draws from torch's global stream after that (dropout, say) differs per rank.
    torch.manual_seed(cfg.seed + (dist.rank if dist is not None else 0))
    return trainer


# ------------------------------------------------------------ loading a run
@dataclass
class LoadedRun:
    cfg: Any
    state: dict
    model: Any                      # EMA weights unless asked otherwise, eval mode
    process: Any
    shape: tuple
    kind: str
    num_classes: int
    device: torch.device


def checkpoint_path(folder, name: str = "model.pt") -> Path:
    """A checkpoint of a run folder: a file name (model.pt, model.w_total.pt, snapshots/model.N.pt) or a number
    N (snapshot N: snapshots/model.N.pt); a missing one lists what the folder holds."""
    folder = Path(folder)
    name = str(name)
    path = folder / "snapshots" / f"model.{name}.pt" if name.isdigit() else folder / name
    if not path.is_file():
        have = sorted(p.name for p in folder.glob("model*.pt")) + sorted(
            f"snapshots/{p.name}" for p in (folder / "snapshots").glob("model.*.pt"))
        raise UserError(f"checkpoint {path} not found" + (f" (the run folder holds: {', '.join(have)})"
                                                           if have else " (the run folder holds no checkpoint)"))
    return path


def load_run(folder, name: str = "model.pt", device: str = "auto", use_ema: bool = True) -> LoadedRun:
    """Rebuild a run's model and process from one of its checkpoints alone."""
    from . import checkpoint
    from .nets import net_from_description
    from .processes import process_from_description

    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"run folder not found: {folder}")
    dev = resolve_device(device)
    path = checkpoint_path(folder, name)
    state = checkpoint.load(path, map_location=dev)
    if state.get("kind") != "run":
        raise UserError(f"{path} was written by an older version of this project; retrain, or convert it")
    checkpoint.require(state, checkpoint.RUN_KEYS, path, "an evaluation")
    cfg = config_mod.from_dict(state["config"], source=f"the config in {path}")
    with checkpoint.fitting(path, "the network and process it describes"):
        process = process_from_description(state["process"])
        process.load_state_dict(state["process_state"])
        net = net_from_description(state["net"])
        model = process.wrap(net)
        weights = state["ema"]["shadow"] if use_ema and state.get("ema") is not None else state["model"]
        model.load_state_dict(weights)
        d = state["data"]
        shape, kind, classes = tuple(d["shape"]), d["kind"], int(d.get("num_classes") or 0)
    # Evaluations sample in the precision the run trained in.
    from .precision import apply_precision
    apply_precision(net, cfg.train.precision)
    return LoadedRun(cfg, state, model.to(dev).eval(), process, shape, kind, classes, dev)
