"""The one place that maps configuration names to objects.

Library modules take plain arguments; this module reads `Arguments` and builds them.
Checkpoints store the descriptions returned here, so eval.py rebuilds a run's network,
noise and noise levels from the checkpoint alone.
"""
from __future__ import annotations

import torch

from . import config as config_mod
from .denoiser import Denoiser
from .ema import EMA
from .errors import UserError
from .processes.ve import VEProcess
from .samplers import SAMPLERS, network_evaluations  # noqa: F401  (re-exported)
from .schedules import edm_sigmas, sigma_levels

GRF_DEFAULT_RESOLUTION = 32


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device '{name}' requested but CUDA is not available (use device=cpu or auto)")
    return torch.device(name)


# ----------------------------------------------------------------------- data
def build_data(args, data_dir, resolution_factor: int = 1):
    """(train, valid, kind) tensors; `resolution_factor` > 1 gives the same split on a finer grid."""
    if args.dataset == "volcano":
        from .data.volcano import load_volcano
        if data_dir is None:
            raise UserError("the volcano dataset needs DATA_DIR (set it in exps/env.sh or the environment)")
        if args.resolution is None and resolution_factor == 1:
            resolution = None                      # the files' own 128 px
        else:
            resolution = (args.resolution or 128) * resolution_factor
        train, valid = load_volcano(data_dir, resolution=resolution, npad=args.npad * resolution_factor,
                                    val_size=args.val_size, seed=args.split_seed, max_files=args.max_examples)
        return train, valid, "phase"
    if args.dataset == "grf":
        from .data.grf import make_grf_dataset
        res = (args.resolution or GRF_DEFAULT_RESOLUTION) * resolution_factor - args.npad * resolution_factor
        train, valid = make_grf_dataset(args.grf_n_train, args.grf_n_valid, res, seed=args.split_seed,
                                        alpha=args.grf_alpha, tau=args.grf_tau)
        return train, valid, "real"
    raise UserError(f"unknown dataset '{args.dataset}'")


# ---------------------------------------------------------------------- noise
def build_noise(args, channels: int):
    from .noise import GaussianRandomField, WhiteNoise
    if args.white_noise:
        return WhiteNoise(channels=channels)
    return GaussianRandomField(channels=channels, kernel=args.kernel, length_scale=args.rbf_scale,
                               eps=args.rbf_eps)


def noise_from_description(desc: dict):
    from .noise import GaussianRandomField, WhiteNoise
    desc = dict(desc)
    kind = desc.pop("type")
    classes = {"white": WhiteNoise, "grf": GaussianRandomField}
    if kind not in classes:
        raise UserError(f"checkpoint names an unknown noise type '{kind}'")
    return classes[kind](**desc)


# -------------------------------------------------------------------- process
def build_process(args) -> VEProcess:
    return VEProcess(sigma_levels(args.sigma_1, args.sigma_L, args.L, args.schedule), args.level_sampling)


# -------------------------------------------------------------------- network
def build_net(args, channels: int):
    from .nets.neuralop_nets import ConditionedFNO, ConditionedUNO
    common = dict(in_channels=channels, out_channels=channels, width=args.d_co_domain, n_modes=args.n_modes,
                  embedding_dim=args.embedding_dim, factorization=args.factorization, rank=args.rank,
                  domain_padding=args.domain_padding)
    if args.arch == "fno":
        return ConditionedFNO(n_layers=args.n_layers, **common)
    return ConditionedUNO(channel_multipliers=list(args.mult_dims), **common)


def build_model(args, net):
    """The trained module: an EDM-preconditioned denoiser (VE) or an interpolant model."""
    if args.process == "interpolant":
        from .denoiser import InterpolantDenoiser
        from .processes.interpolant import build_interpolant
        return InterpolantDenoiser(net, build_interpolant(args.interpolant), args.model_output)
    return Denoiser(net, sigma_data=args.sigma_data)


def build_objective(args, process, noise):
    from .losses import InterpolantObjective, VEObjective
    if args.process == "interpolant":
        return InterpolantObjective(noise, args.time_sampler, args.loss_target)
    return VEObjective(process, noise, args.loss_weighting)


def describe_net(net) -> dict:
    return {"type": type(net).__name__, "config": dict(net.config)}


def net_from_description(desc: dict):
    from .nets.neuralop_nets import ConditionedFNO, ConditionedUNO
    classes = {"ConditionedFNO": ConditionedFNO, "ConditionedUNO": ConditionedUNO}
    if desc.get("type") not in classes:
        raise UserError(f"checkpoint names an unknown network type '{desc.get('type')}'")
    return classes[desc["type"]](**desc["config"])


def sampler_setup(args, name: str | None = None, steps: int | None = None, sigma_min: float | None = None):
    """(sampler function, its sigma grid, its options) for the config's sampler.

    `name` / `steps` override the config (eval.py --sampler / --steps): steps are the
    Langevin steps per level (T) or the number of ODE levels (ode_steps). `sigma_min` moves
    the end of the EDM grid of the other samplers (default sigma_L): their last step is a
    pure denoise D(x, sigma_min), which an imperfect network may do better from higher up.
    """
    name = name or args.sampler
    if name not in SAMPLERS:
        raise UserError(f"unknown sampler '{name}' (one of: {', '.join(SAMPLERS)})")
    if name == "annealed_langevin":
        sigmas = sigma_levels(args.sigma_1, args.sigma_L, args.L, args.schedule)
        return SAMPLERS[name], sigmas, {"T": steps or args.T, "epsilon": args.epsilon,
                                         "final_denoise": args.final_denoise}
    # Every other sampler walks an EDM sigma grid with its own default options.
    if sigma_min is not None and not 0 < sigma_min < args.sigma_1:
        raise UserError(f"sigma_min must lie in (0, sigma_1 = {args.sigma_1}); got {sigma_min}")
    sigmas = edm_sigmas(args.sigma_1, sigma_min or args.sigma_L, steps or args.ode_steps, args.rho)
    options = {"S_churn": args.S_churn} if name == "edm_stochastic" else {}
    return SAMPLERS[name], sigmas, options


# -------------------------------------------------------------------- trainer
def build_trainer(args, savedir, data_dir, progress: bool = True, dist=None, device=None, log_lines: bool = False):
    """The Trainer of a VE / interpolant run; `dist` (distributed.Context) for multi-process runs.

    progress: tqdm bars (a terminal); log_lines: plain progress lines instead (a log file).
    """
    from .trainer import Trainer, TrainSettings

    device = device if device is not None else resolve_device(args.device)
    torch.manual_seed(args.seed)
    train, valid, kind = build_data(args, data_dir)
    channels = train.shape[1]
    noise = build_noise(args, channels)
    net = build_net(args, channels)
    denoiser = build_model(args, net).to(device)
    optimizer = torch.optim.Adam(denoiser.parameters(), lr=args.lr)
    ema = EMA(denoiser, args.ema_rate) if args.ema_rate is not None else None
    sampler, sampling_sigmas, options = sampler_setup(args)
    # Interpolants have no VE levels of their own: the sampler's grid stands in (figures only).
    process = build_process(args) if args.process == "ve" else VEProcess(sampling_sigmas)
    settings = TrainSettings(
        epochs=args.epochs, batch_size=args.batch_size, record_interval=args.record_interval,
        Ntest=args.Ntest, val_batch_size=args.val_batch_size, val_seed=args.val_seed, n_plot=args.n_plot,
        augment=args.augment, grad_clip=args.grad_clip, seed=args.seed,
        kind=kind, sampler_options=options, sampling_sigmas=sampling_sigmas, tensorboard=args.tensorboard,
        progress=progress, log_lines=log_lines, max_minutes=args.max_minutes)
    meta = {
        "config": config_mod.to_dict(args),
        "net": describe_net(net),
        "noise": noise.describe(),
        "sigmas": process.sigmas.tolist(),
        "kind": kind,
        "data_shape": list(train.shape[1:]),
    }
    trainer = Trainer(denoiser, optimizer, ema, process, build_objective(args, process, noise), noise, sampler,
                      train, valid, savedir, settings, device, meta, dist=dist)
    # The weights start equal on every rank (same seed, then broadcast from rank 0); what
    # draws from torch's global stream after that (dropout, say) differs per rank.
    torch.manual_seed(args.seed + (dist.rank if dist is not None else 0))
    return trainer


def denoiser_from_checkpoint(state: dict, device, use_ema: bool = True) -> Denoiser:
    """Rebuild the network from the checkpoint's own description and load its weights."""
    denoiser = build_model(args_from_checkpoint(state), net_from_description(state["net"]))
    weights = state["model"]
    if use_ema and state.get("ema") is not None:
        weights = state["ema"]["shadow"]
    denoiser.load_state_dict(weights)
    return denoiser.to(device).eval()


def args_from_checkpoint(state: dict):
    return config_mod.from_dict(state["config"], source="the checkpoint's config")
