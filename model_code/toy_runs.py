"""Training runs of the two-atom toy problem (seed 003): config, loop, logs, checkpoints.

    python train.py --config configs/toy/base_config.yaml --config configs/toy/EXP/specific_config.yaml \
                    --workdir runs/toy/EXP [key=value ...]

The YAML files are merged in order over the documented defaults of ``ToyConfig``, then
the ``key=value`` overrides (OmegaConf dot-list); unknown keys and wrong types are user
errors naming the key. Every step draws fresh data, a fresh continuous t ~ U(t_min, 1)
and fresh noise (the published code froze its pairs and used a 50-level time grid).

The workdir receives config.yaml (the resolved config), model.pt (atomic; model, EMA,
optimiser, step, generator and RNG states, config: enough to resume or to rebuild the
net), metrics.jsonl (one line per log interval) and tb/ (TensorBoard: losses, the
p_t-weighted score error at a few t, and a figure of the learned vs analytic score
field). A workdir with model.pt resumes when the config is the same and is refused
otherwise.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List

import torch

from . import checkpoint
from . import regularizers as reg
from .data.toy import TwoAtomData
from .ema import EMA
from .errors import UserError
from .files import trim_jsonl
from .nets.mlp import PermutationEquivariantMLP
from .processes.wrapped_ve import PRIORS, SCHEDULES, SigmaSchedule, WrappedVE, uniform_deviation_bound
from .toy_score import AnalyticScore, score_error


# --------------------------------------------------------------------------- configuration

@dataclass
class DataConfig:
    mu: List[float] = field(default_factory=lambda: [0.25, 0.75])  # atom positions (mean configuration)
    sigma_d: float = 0.05            # standard deviation of each atom around its position
    symmetrize: bool = True          # atoms indistinguishable: both orderings equally likely


@dataclass
class ProcessConfig:
    schedule: str = "geometric"      # sigma(t): geometric | linear
    sigma_min: float = 0.005         # sigma(0)
    sigma_max: float = 1.0           # sigma(1)
    prior: str = "uniform"           # x_1 ~ uniform (checked against prior_tolerance) | exact
    prior_tolerance: float = 1e-3    # max |p_1 - 1| allowed for the uniform prior
    n_images: int = 0                # periodic images -K..K of the wrapped kernel (0: automatic)


@dataclass
class NetConfig:
    n_frequencies: int = 4           # cos/sin(2 pi k x), k = 1..K, per atom
    hidden: int = 128
    depth: int = 3
    noise_dim: int = 32              # size of the log-sigma embedding


@dataclass
class ConsistencyConfig:
    delta_t: float = 0.1             # t' = max(t - delta_t, 0)
    n_steps: int = 4                 # reverse-SDE steps from t to t'
    n_samples: int = 4               # trajectories per point (even; two half-means)


@dataclass
class RegularizerConfig:
    kind: str = "none"               # none | analytic_regression | fokker_planck | consistency | consistency_analytic
    weight: float = 1.0              # loss = DSM + weight * regularizer
    burn_in: int = 0                 # steps of plain DSM before the regularizer switches on
    n_points: int = 64               # training points the regularizer uses per step (0: whole batch)
    laplacian: str = "exact"         # Fokker-Planck divergence: exact | hutchinson
    weighting: str = "sigma"         # Fokker-Planck weighting: sigma (|sigma^3 r|^2) | none (|g^2 r|^2)
    consistency: ConsistencyConfig = field(default_factory=ConsistencyConfig)


@dataclass
class TrainConfig:
    steps: int = 12000
    batch_size: int = 256
    lr: float = 1e-3
    lr_schedule: str = "cosine"      # cosine (to lr / 10) | constant
    grad_clip: float = 1.0           # max gradient norm (0: off)
    ema_rate: float = 0.999
    t_min: float = 0.0               # t ~ U(t_min, 1)
    log_every: int = 100             # metrics.jsonl + TensorBoard scalars
    figure_every: int = 2000         # TensorBoard score-field figure and score error (and at the end)
    checkpoint_every: int = 1000
    num_threads: int = 1             # CPU threads (the tiny MLP is fastest on one); 0: from the allocation
                                     # (OMP_NUM_THREADS, SLURM_CPUS_PER_TASK, cores / processes)
    device: str = "cpu"              # cpu | cuda | cuda:N (every random draw is made on this device)


@dataclass
class ToyConfig:
    system: str = "toy"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    process: ProcessConfig = field(default_factory=ProcessConfig)
    net: NetConfig = field(default_factory=NetConfig)
    regularizer: RegularizerConfig = field(default_factory=RegularizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def load_config(paths, overrides=()):
    """Merge the YAML files and key=value overrides over ToyConfig; validate. Returns a DictConfig.

    A YAML syntax error names the file, line and column; a wrong key or type names the file,
    or the command line and the `key=value` argument as typed.
    """
    from omegaconf import OmegaConf

    from .config import load_yaml, merge_checked, override_item

    cfg = OmegaConf.structured(ToyConfig)
    for p in paths:
        cfg = merge_checked(cfg, load_yaml(p), ToyConfig, str(p))
    for item in overrides:
        cfg = merge_checked(cfg, override_item(item), ToyConfig, f"command line: {item}")
    validate(cfg)
    return cfg


def validate(cfg) -> None:
    def need(cond, msg):
        if not cond:
            raise UserError(f"config: {msg}")

    need(cfg.system == "toy", f"system must be 'toy', got {cfg.system!r}")
    need(len(cfg.data.mu) >= 1 and cfg.data.sigma_d > 0, "data.mu needs >= 1 atom and data.sigma_d > 0")
    p = cfg.process
    need(p.schedule in SCHEDULES, f"process.schedule must be one of {', '.join(SCHEDULES)}, got {p.schedule!r}")
    need(p.prior in PRIORS, f"process.prior must be one of {', '.join(PRIORS)}, got {p.prior!r}")
    need(0 < p.sigma_min < p.sigma_max, f"need 0 < process.sigma_min < process.sigma_max, got {p.sigma_min}, {p.sigma_max}")
    if p.prior == "uniform":
        dev = uniform_deviation_bound(math.sqrt(cfg.data.sigma_d ** 2 + p.sigma_max ** 2), len(cfg.data.mu))
        if dev > p.prior_tolerance:
            lo, hi = p.sigma_max, 10.0                   # bisection for the smallest sufficient sigma_max
            for _ in range(40):
                mid = 0.5 * (lo + hi)
                ok = uniform_deviation_bound(math.sqrt(cfg.data.sigma_d ** 2 + mid ** 2), len(cfg.data.mu))
                lo, hi = (lo, mid) if ok <= p.prior_tolerance else (mid, hi)
            need(False, f"p_1 deviates from uniform by up to {dev:.2g} > process.prior_tolerance="
                        f"{p.prior_tolerance:g}; set process.sigma_max >= {hi:.3f} or process.prior=exact")
    r = cfg.regularizer
    need(r.kind in reg.KINDS, f"regularizer.kind must be one of {', '.join(reg.KINDS)}, got {r.kind!r}")
    need(r.laplacian in reg.LAPLACIANS, f"regularizer.laplacian must be exact or hutchinson, got {r.laplacian!r}")
    need(r.weighting in reg.FP_WEIGHTINGS, f"regularizer.weighting must be sigma or none, got {r.weighting!r}")
    need(r.weight >= 0 and r.burn_in >= 0 and r.n_points >= 0, "regularizer.weight, burn_in, n_points must be >= 0")
    c = r.consistency
    need(0 < c.delta_t <= 1 and c.n_steps >= 1 and c.n_samples >= 2 and c.n_samples % 2 == 0,
         "regularizer.consistency needs 0 < delta_t <= 1, n_steps >= 1 and an even n_samples >= 2")
    t = cfg.train
    need(t.steps >= 1 and t.batch_size >= 2 and t.lr > 0, "train.steps >= 1, train.batch_size >= 2, train.lr > 0")
    need(t.lr_schedule in ("cosine", "constant"), f"train.lr_schedule must be cosine or constant, got {t.lr_schedule!r}")
    need(0 <= t.t_min < 1, f"train.t_min must be in [0, 1), got {t.t_min}")
    need(t.log_every >= 1 and t.figure_every >= 1 and t.checkpoint_every >= 1, "train.*_every must be >= 1")
    try:
        dev = torch.device(t.device)
    except RuntimeError:
        raise UserError(f"config: train.device: unknown device {t.device!r}") from None
    need(dev.type != "cuda" or torch.cuda.is_available(), f"train.device={t.device} but CUDA is not available")


def to_plain(cfg) -> dict:
    from omegaconf import OmegaConf
    return OmegaConf.to_container(cfg, resolve=True)


def with_defaults(saved: dict | None) -> dict | None:
    """A checkpoint's config completed with today's defaults (keys added since it was written)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if saved is None:
        return None
    try:
        return to_plain(OmegaConf.merge(OmegaConf.structured(ToyConfig), saved))
    except OmegaConfBaseException:
        return saved


# --------------------------------------------------------------------------- parts

def build_parts(cfg: dict):
    """(data, process, analytic score, network) from a plain config dict."""
    d, p = cfg["data"], cfg["process"]
    data = TwoAtomData(d["mu"], d["sigma_d"], d["symmetrize"])
    process = WrappedVE(SigmaSchedule(p["schedule"], p["sigma_min"], p["sigma_max"]), p["prior"], p["n_images"])
    analytic = AnalyticScore(d["mu"], d["sigma_d"], d["symmetrize"], p["n_images"])
    net = PermutationEquivariantMLP(**cfg["net"])
    return data, process, analytic, net


def load_model(workdir, use_ema: bool = True):
    """The trained network (EMA weights by default) and the config of a finished or running run."""
    payload = checkpoint.load(Path(workdir) / "model.pt")
    net = PermutationEquivariantMLP(**payload["net_args"])
    net.load_state_dict(payload["ema"]["shadow"] if use_ema else payload["model"])
    return net.eval(), with_defaults(payload["config"])


@torch.no_grad()
def score_field_arrays(score_model, sigmas, n_grid: int = 21):
    """grid (n, n, 2) of cell centres and sigma * s(x, sigma) on it for each sigma: (T, n, n, 2)."""
    g = (torch.arange(n_grid, dtype=torch.float64) + 0.5) / n_grid
    grid = torch.stack(torch.meshgrid(g, g, indexing="ij"), dim=-1)
    flat = grid.reshape(-1, 2)
    out = []
    for s in sigmas:
        sig = torch.full((len(flat),), float(s), dtype=torch.float64)
        out.append((float(s) * score_model(flat, sig).double()).reshape(n_grid, n_grid, 2))
    return grid.numpy(), torch.stack(out).numpy()


# --------------------------------------------------------------------------- training

FIGURE_TS = (0.0, 0.25, 0.5, 0.75)
ERROR_TS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


def regularizer_loss(cfg: dict, net, analytic, process, xt, t, sigma, generator):
    r = cfg["regularizer"]
    kind = r["kind"]
    if r["n_points"]:
        xt, t, sigma = xt[: r["n_points"]], t[: r["n_points"]], sigma[: r["n_points"]]
    if kind == "analytic_regression":
        return reg.analytic_regression(net, analytic, xt, sigma)
    if kind == "fokker_planck":
        return reg.fokker_planck(net, xt, sigma, process.schedule, r["laplacian"], r["weighting"], generator)
    if kind in ("consistency", "consistency_analytic"):
        guide = analytic if kind == "consistency_analytic" else net
        c = r["consistency"]
        return reg.consistency(net, guide, xt, t, process.schedule, generator, c["delta_t"], c["n_steps"],
                               c["n_samples"])
    raise ValueError(kind)


def _lr_factor(cfg: dict, step: int) -> float:
    t = cfg["train"]
    if t["lr_schedule"] == "constant":
        return 1.0
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(step / t["steps"], 1.0)))


def _save(workdir: Path, net, ema, opt, step, generator, cfg, seconds):
    checkpoint.atomic_save({
        "format_version": checkpoint.FORMAT_VERSION, "kind": "toy", "config": cfg, "step": step,
        "seconds": float(seconds),
        "net_args": dict(net.config), "model": net.state_dict(), "ema": ema.state_dict(),
        "optimizer": opt.state_dict(), "generator": generator.get_state(), "rng": checkpoint.rng_state(),
    }, workdir / "model.pt")


def _log_figure(writer, net_eval, analytic, process, data, generator, step):
    from . import plotting_toy

    sched = process.schedule
    sigmas = [float(sched.sigma(torch.tensor(t, dtype=torch.float64))) for t in FIGURE_TS]
    grid, learned = score_field_arrays(net_eval, sigmas)
    _, exact = score_field_arrays(analytic, sigmas)
    modes = data.modes().numpy()
    fig = plotting_toy.score_field_figure(grid, {"learned": learned, "analytic": exact}, sigmas, modes, FIGURE_TS)
    writer.add_figure("score_field", fig, step)
    rows = score_error(net_eval, analytic, data, sched, ERROR_TS, 2000, generator)
    for row in rows:
        writer.add_scalar(f"score_error/t={row['t']:.1f}", row["weighted"], step)
    writer.add_scalar("score_error/mean", sum(r["weighted"] for r in rows) / len(rows), step)


def train(cfg: dict, workdir: Path, quiet: bool = False) -> dict:
    """Train (or resume) in workdir; returns a summary dict."""
    from torch.utils.tensorboard import SummaryWriter
    from tqdm.auto import tqdm

    from .progress import LogLines, enabled_for

    tc = cfg["train"]
    from . import provenance, threads

    provenance.record(workdir, Path(__file__).resolve().parents[1], extra=threads.apply(tc["num_threads"] or None))
    torch.manual_seed(cfg["seed"])
    device = torch.device(tc["device"])
    data, process, analytic, net = build_parts(cfg)
    net, analytic = net.to(device), analytic.to(device)
    ema = EMA(net, tc["ema_rate"])
    opt = torch.optim.Adam(net.parameters(), lr=tc["lr"])
    generator = torch.Generator(device=device).manual_seed(int(cfg["seed"]))
    eval_generator = torch.Generator()
    step, seconds_before = 0, 0.0
    ckpt_path = workdir / "model.pt"
    if ckpt_path.exists():
        payload = checkpoint.load(ckpt_path)              # CPU; load_state_dict moves it
        if payload.get("kind") != "toy" or with_defaults(payload["config"]) != cfg:
            raise UserError(f"{workdir} already holds a run with a different config; choose another --workdir")
        net.load_state_dict(payload["model"])
        ema.load_state_dict(payload["ema"])
        opt.load_state_dict(payload["optimizer"])
        generator.set_state(payload["generator"].cpu())
        checkpoint.set_rng_state(payload["rng"])
        step = int(payload["step"])
        seconds_before = float(payload.get("seconds", 0.0))
        print(f"resuming {workdir} at step {step}", file=sys.stderr)
    metrics_path = workdir / "metrics.jsonl"
    trim_jsonl(metrics_path, "step", step)
    writer = SummaryWriter(log_dir=str(workdir / "tb"), purge_step=step if step else None)
    rc, schedule = cfg["regularizer"], process.schedule
    bar = tqdm(total=tc["steps"], initial=step, desc=f"toy/{rc['kind']}", leave=False,
               disable=quiet or not sys.stderr.isatty())
    log = LogLines("train", "step", tc["steps"], done=step, enabled=enabled_for(quiet))
    sums, count, first_loss, last = {}, 0, None, {}
    t0 = time.time() - seconds_before                 # wall time accumulates over resumes
    if metrics_path.exists() and metrics_path.read_text().strip():
        first_loss = json.loads(metrics_path.read_text().splitlines()[0])["dsm"]
        last = {k: v for k, v in json.loads(metrics_path.read_text().splitlines()[-1]).items()
                if k not in ("step", "seconds")}
    while step < tc["steps"]:
        for group in opt.param_groups:
            group["lr"] = tc["lr"] * _lr_factor(cfg, step)
        # fresh data, fresh continuous time, fresh noise at every step
        x0 = data.sample(tc["batch_size"], generator)
        t = tc["t_min"] + (1 - tc["t_min"]) * torch.rand(tc["batch_size"], generator=generator,
                                                         dtype=torch.float64, device=device)
        sigma = schedule.sigma(t).float()
        z = torch.randn(x0.shape, generator=generator, device=device)
        loss_dsm, xt = reg.dsm_loss(net, process, x0, sigma, z)
        loss = loss_dsm
        terms = {"dsm": float(loss_dsm.detach())}
        if rc["kind"] != "none" and step >= rc["burn_in"] and rc["weight"] > 0:
            loss_reg = regularizer_loss(cfg, net, analytic, process, xt.detach(), t, sigma, generator)
            loss = loss + rc["weight"] * loss_reg
            terms["regularizer"] = float(loss_reg.detach())
        terms["total"] = float(loss.detach())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if tc["grad_clip"] > 0:
            torch.nn.utils.clip_grad_norm_(net.parameters(), tc["grad_clip"])
        opt.step()
        ema.update(net)
        step += 1
        bar.update(1)
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + v
        count += 1
        log.tick(tc["batch_size"], step, **{k: v / count for k, v in sums.items()})   # at most one line a minute
        if step % tc["log_every"] == 0 or step == tc["steps"]:
            last = {k: v / count for k, v in sums.items()}
            first_loss = last["dsm"] if first_loss is None else first_loss
            for k, v in last.items():
                writer.add_scalar(f"loss/{k}", v, step)
            writer.add_scalar("lr", opt.param_groups[0]["lr"], step)
            with metrics_path.open("a") as fh:
                fh.write(json.dumps({"step": step, **last, "seconds": round(time.time() - t0, 2)}) + "\n")
            sums, count = {}, 0
        if step % tc["figure_every"] == 0 or step == tc["steps"]:
            eval_generator.manual_seed(1234)
            _log_figure(writer, copy.deepcopy(ema.shadow).cpu(), analytic.cpu(), process, data, eval_generator, step)
            analytic.to(device)
        if step % tc["checkpoint_every"] == 0 or step == tc["steps"]:
            _save(workdir, net, ema, opt, step, generator, cfg, time.time() - t0)
    bar.close()
    writer.close()
    return {"step": step, "first_logged_dsm": first_loss, "last": last, "seconds": round(time.time() - t0, 2)}


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="train.py", description="Train the two-atom toy problem (configs/toy/).",
        epilog="Config keys: see model_code/toy_runs.py (ToyConfig) and configs/toy/base_config.yaml.")
    parser.add_argument("--config", action="append", required=True,
                        help="YAML file; repeat to merge (later files override earlier ones)")
    parser.add_argument("--workdir", required=True, help="run folder (checkpoint, logs, TensorBoard)")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress output (a bar on a terminal; plain lines, at most one a minute, in a log)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, applied last")
    return parser.parse_args(argv)


def train_main(argv) -> int:
    """Entry point used by train.py for configs with ``system: toy``."""
    args = parse_args(list(argv))
    cfg_dc = load_config(args.config, args.overrides)
    cfg = to_plain(cfg_dc)
    workdir = Path(args.workdir)
    from . import run_dir
    # One writer per run folder: a second launch on the same --workdir stops here.
    with run_dir.claim(workdir, "train.py"):
        return _train_in(workdir, cfg_dc, cfg, args.quiet)


def _train_in(workdir: Path, cfg_dc, cfg: dict, quiet: bool) -> int:
    from omegaconf import OmegaConf
    if (workdir / "model.pt").exists():
        old = with_defaults(checkpoint.load(workdir / "model.pt").get("config"))
        if old != cfg:
            diff = sorted(k for k in cfg if old is None or old.get(k) != cfg[k])
            raise UserError(f"{workdir} already holds a run with a different config (differs in: "
                            f"{', '.join(diff) or 'format'}); choose another --workdir")
    OmegaConf.save(cfg_dc, workdir / "config.yaml")
    summary = train(cfg, workdir, quiet=quiet)
    (workdir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"done: {workdir} (step {summary['step']}, {summary['seconds']} s)")
    return 0
