"""Heat-dissipation / linear-transform image runs: config, training loop, evaluation (ARCHITECTURE §3.4-3.5).

    python train.py --config configs/mnist/default_mnist_configs.yaml --workdir runs/mnist/default \
        [training.snapshot_freq_for_preemption=100 training.sampling_freq=500 ...]
    python eval.py --mode=elbo|fid --config ... --workdir ... --checkpoint 0 --param_name NAME

The YAML file overrides the documented schema `LevelsConfig` (below); `key=value` arguments
override the file (a leading `config.` is accepted, as in the seed's README). Unknown keys and
wrong types are errors naming the key. The work folder holds

    config.yaml                     the resolved config of the run
    checkpoints-meta/checkpoint.pth the latest state (written every snapshot_freq_for_preemption
                                    steps, at the end and on SIGTERM / SIGUSR1): resume point
    checkpoints/checkpoint_N.pth    snapshot N, written at step N * snapshot_freq
    samples/iter_<step>.png         EMA samples every sampling_freq steps (fixed seeds)
    training_log.jsonl              one JSON object per log / eval event

Running the same command again resumes from checkpoints-meta (the data, model, optim and seed
sections must match; training.* may change, e.g. a larger n_iters).
"""
from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from . import checkpoint
from .ema import EMA
from .errors import UserError
from .files import atomic_write_text, trim_jsonl

from .levels_config import IDENTITY_SECTIONS, from_dict, load_config, to_dict

PREEMPTED_EXIT = 3
RUN_KIND = "levels"


# ============================================================================ building the parts

def resolve_device(name: str) -> torch.device:
    from .build import resolve_device as resolve

    return resolve(name)


def build_map(cfg, shape):
    from .processes.linear import build_map as build

    try:
        return build(cfg.model.forward, shape, cfg.model.K, seed=cfg.model.map_seed,
                     blur_sigma_min=cfg.model.blur_sigma_min, blur_sigma_max=cfg.model.blur_sigma_max)
    except ValueError as err:
        raise UserError(f"model.forward={cfg.model.forward}: {err}") from None


def net_description(cfg, channels: int) -> dict:
    """{'kind', 'config'}: enough to rebuild the network (stored in checkpoints)."""
    m = cfg.model
    if m.net == "unet":
        conf = dict(in_channels=channels, out_channels=channels, model_channels=m.unet.model_channels,
                    channel_mult=list(m.unet.channel_mult), num_res_blocks=m.unet.num_res_blocks,
                    attention_levels=list(m.unet.attention_levels), dropout=m.unet.dropout,
                    num_heads=m.unet.num_heads)
    elif m.net == "fno":
        conf = dict(in_channels=channels, out_channels=channels, width=m.fno.width, n_layers=m.fno.n_layers,
                    n_modes=m.fno.n_modes, embedding_dim=m.fno.embedding_dim)
    else:
        conf = dict(in_channels=channels, out_channels=channels, width=m.uno.width,
                    channel_multipliers=list(m.uno.channel_multipliers), n_modes=m.uno.n_modes,
                    embedding_dim=m.uno.embedding_dim)
    return {"kind": m.net, "config": conf}


def build_net(description: dict) -> torch.nn.Module:
    kind, conf = description["kind"], dict(description["config"])
    try:
        if kind == "unet":
            from .nets.unet import UNet
            return UNet(**conf)
        from .nets.neuralop_nets import ConditionedFNO, ConditionedUNO
        return (ConditionedFNO if kind == "fno" else ConditionedUNO)(**conf)
    except (TypeError, ValueError) as err:
        raise UserError(f"cannot build the {kind} network: {err}") from None


def prior_kind(cfg, shape) -> str:
    if cfg.model.prior != "auto":
        return cfg.model.prior
    return "full" if math.prod(shape) <= 4096 else "dct_diag"


def fit_prior(cfg, fmap, train: torch.Tensor, device):
    from .levels import GaussianPrior

    u = train[:cfg.model.prior_fit_max]
    top = torch.cat([fmap.apply(u[i:i + 1024].to(device), fmap.K).cpu() for i in range(0, len(u), 1024)])
    return GaussianPrior.fit(top, cfg.model.sigma, prior_kind(cfg, train.shape[1:]))


def load_data(cfg):
    from .data.images import load_images

    d = cfg.data
    return load_images(d.dataset, d.root, d.image_size, d.num_channels, d.valid_fraction, d.split_seed,
                       d.download, d.max_examples)


# ============================================================================ training

class Run:
    """Everything a training run holds; `state()` / `load_state()` are the checkpoint."""

    def __init__(self, cfg, data, device):
        from .levels import LevelModel

        self.cfg, self.data, self.device = cfg, data, device
        shape = tuple(data.train.shape[1:])
        self.fmap = build_map(cfg, shape)
        self.net_desc = net_description(cfg, shape[0])
        self.model = LevelModel(build_net(self.net_desc), cfg.model.residual).to(device)
        self.ema = EMA(self.model, cfg.model.ema_rate)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.optim.lr,
                                           weight_decay=cfg.optim.weight_decay)
        self.prior = fit_prior(cfg, self.fmap, data.train, device)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.step = 0
        self.order = torch.randperm(len(data.train), generator=self.generator)
        self.pos = 0

    def state(self) -> dict:
        return {
            "format_version": checkpoint.FORMAT_VERSION, "kind": RUN_KIND, "config": to_dict(self.cfg),
            "net": self.net_desc, "map": self.fmap.describe(), "prior": self.prior.state_dict(),
            "data_levels": self.data.levels, "data_shape": list(self.data.train.shape[1:]),
            "model": self.model.state_dict(), "ema": self.ema.state_dict(), "optimizer": self.optimizer.state_dict(),
            "step": self.step, "generator": self.generator.get_state(), "order": self.order, "pos": self.pos,
            "rng": checkpoint.rng_state(),
        }

    def load_state(self, state: dict) -> None:
        from .levels import GaussianPrior

        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.prior = GaussianPrior.from_state(state["prior"])
        self.step, self.pos, self.order = int(state["step"]), int(state["pos"]), state["order"]
        self.generator.set_state(state["generator"])
        checkpoint.set_rng_state(state["rng"])

    def next_batch(self) -> torch.Tensor:
        b = self.cfg.training.batch_size
        if self.pos + b > len(self.order):          # a new seeded permutation each epoch
            self.order = torch.randperm(len(self.data.train), generator=self.generator)
            self.pos = 0
        idx = self.order[self.pos:self.pos + b]
        self.pos += b
        u = self.data.train[idx]
        if self.cfg.data.random_flip:
            from .data.images import random_hflip
            u = random_hflip(u, self.generator)
        return u.to(self.device)

    def train_step(self) -> float:
        from .levels import training_loss

        o = self.cfg.optim
        for group in self.optimizer.param_groups:   # linear warm-up
            group["lr"] = o.lr * min(1.0, (self.step + 1) / max(1, o.warmup))
        self.model.train()
        loss = training_loss(self.model, self.fmap, self.next_batch(), self.cfg.model.sigma, self.generator)
        if not torch.isfinite(loss):
            raise UserError(f"loss became {loss.item()} at step {self.step}; the last good checkpoint is kept")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if o.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), o.grad_clip)
        self.optimizer.step()
        self.ema.update(self.model)
        self.step += 1
        return loss.item()

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Validation loss (raw and EMA weights) and negative ELBO (EMA) on fixed images and noise."""
        from .levels import elbo_summary, negative_elbo_terms, training_loss

        t, m = self.cfg.training, self.cfg.model
        valid = self.data.valid[:t.n_eval].to(self.device)
        out = {}
        for name, net in (("val_loss", self.model), ("val_loss_ema", self.ema.shadow)):
            net.eval()
            g = torch.Generator().manual_seed(self.cfg.seed + 1)
            losses = [training_loss(net, self.fmap, valid[i:i + t.batch_size], m.sigma, g).item()
                      * len(valid[i:i + t.batch_size]) for i in range(0, len(valid), t.batch_size)]
            out[name] = sum(losses) / len(valid)
        g = torch.Generator().manual_seed(self.cfg.seed + 2)
        terms = torch.cat([negative_elbo_terms(self.ema.shadow, self.fmap, self.prior, valid[i:i + t.batch_size],
                                               m.sigma, m.delta, self.data.levels, g)
                           for i in range(0, len(valid), t.batch_size)])
        out["val_bpd"] = elbo_summary(terms, valid[0].numel())["bpd"]
        return out

    @torch.no_grad()
    def samples(self, n: int, seed: int) -> torch.Tensor:
        from .levels import initial_and_noise, sample_levels

        u_K, noise = initial_and_noise("random", self.prior, self.fmap.K, [seed + i for i in range(n)])
        self.ema.shadow.eval()
        u0, _ = sample_levels(self.ema.shadow, u_K, noise, self.cfg.model.delta, self.fmap.K, device=self.device)
        return u0


def parse_train_args(argv):
    p = argparse.ArgumentParser(prog="train.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="YAML experiment file (configs/<dataset>/*.yaml)")
    p.add_argument("--workdir", required=True, help="work folder (checkpoints, samples, logs)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress output (a bar on a terminal; plain lines, at most one a minute, in a log)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. training.n_iters=100")
    from .config import parse_with_overrides

    return parse_with_overrides(p, argv)


def _check_workdir(workdir: Path, cfg) -> Optional[Path]:
    """The checkpoint to resume from, or None; refuses a folder holding a different experiment."""
    meta = workdir / "checkpoints-meta" / "checkpoint.pth"
    saved = workdir / "config.yaml"
    if not meta.exists():
        return None
    if saved.exists():
        from omegaconf import OmegaConf
        old, new = to_dict(from_dict(OmegaConf.to_container(OmegaConf.load(saved)))), to_dict(cfg)
        diff = [k for k in IDENTITY_SECTIONS if old.get(k) != new.get(k)]
        if diff:
            keys = []
            for sec in diff:
                if isinstance(new[sec], dict):
                    keys += [f"{sec}.{k}" for k in new[sec] if old[sec].get(k) != new[sec][k]]
                else:
                    keys.append(sec)
            raise UserError(f"{workdir} already holds a run with a different config (differs in: "
                            f"{', '.join(keys)}); choose another --workdir")
    return meta


def _log(workdir: Path, row: dict) -> None:
    with open(workdir / "training_log.jsonl", "a") as fh:
        fh.write(json.dumps(row) + "\n")


def train_main(argv) -> int:
    from . import run_dir

    args = parse_train_args(list(argv))
    cfg = load_config(args.config, args.overrides)
    workdir = Path(args.workdir)
    _check_workdir(workdir, cfg)                  # a different experiment: refused before anything is made
    # One writer per work folder: a second launch on the same --workdir stops here.
    with run_dir.claim(workdir, "train.py"):
        return _train(args, cfg, workdir)


def _train(args, cfg, workdir: Path) -> int:
    from omegaconf import OmegaConf
    from tqdm.auto import tqdm

    from .plotting_images import save_grid
    from .progress import LogLines, enabled_for

    from . import provenance, threads

    resume_from = _check_workdir(workdir, cfg)     # again, now that this process holds the folder
    provenance.record(workdir, Path(__file__).resolve().parents[1], extra=threads.apply(cfg.training.threads))
    device = resolve_device(cfg.training.device)
    torch.manual_seed(cfg.seed)
    data = load_data(cfg)
    run = Run(cfg, data, device)
    if resume_from is not None:
        state = checkpoint.load(resume_from, map_location=device)
        if state.get("kind") != RUN_KIND:
            raise UserError(f"{resume_from} is not a checkpoint of a heat / linear-transform run")
        run.load_state(state)
        print(f"resuming {workdir} at step {run.step}", file=sys.stderr)
    for sub in ("checkpoints-meta", "checkpoints", "samples"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    atomic_write_text(workdir / "config.yaml", OmegaConf.to_yaml(cfg))
    trim_jsonl(workdir / "training_log.jsonl", "step", run.step)
    t = cfg.training

    stop = {"signal": False}
    old_handlers = {s: signal.signal(s, lambda *_: stop.update(signal=True)) for s in (signal.SIGTERM, signal.SIGUSR1)}
    meta_path = workdir / "checkpoints-meta" / "checkpoint.pth"
    began, running = time.time(), []
    if run.step == 0:
        row = {"step": 0, **run.evaluate()}
        _log(workdir, row)
    log = LogLines("train", "step", t.n_iters, done=run.step, enabled=enabled_for(args.quiet))
    try:
        bar = tqdm(total=t.n_iters, initial=run.step, desc="steps", disable=args.quiet or not sys.stderr.isatty())
        while run.step < t.n_iters:
            running.append(run.train_step())
            bar.update(1)
            step = run.step
            log.tick(t.batch_size, step, loss=sum(running) / len(running))      # at most one line a minute
            if step % t.log_freq == 0:
                _log(workdir, {"step": step, "loss": sum(running) / len(running),
                               "lr": run.optimizer.param_groups[0]["lr"], "time": round(time.time() - began, 2)})
                bar.set_postfix(loss=f"{sum(running) / len(running):.4g}")
                running = []
            if step % t.eval_freq == 0 or step == t.n_iters:
                values = run.evaluate()
                _log(workdir, {"step": step, **values})
                log.metrics(step, values)
            if step % t.sampling_freq == 0 or step == t.n_iters:
                save_grid(run.samples(t.n_samples, 10_000), workdir / "samples" / f"iter_{step:06d}.png")
            if step % t.snapshot_freq == 0:
                checkpoint.atomic_save(run.state(), workdir / "checkpoints" / f"checkpoint_{step // t.snapshot_freq}.pth")
            if step % t.snapshot_freq_for_preemption == 0 or step == t.n_iters:
                checkpoint.atomic_save(run.state(), meta_path)
            if stop["signal"]:
                checkpoint.atomic_save(run.state(), meta_path)
                print(f"train.py: stopped by signal at step {step}; run the same command to resume", file=sys.stderr)
                return PREEMPTED_EXIT
            if t.max_minutes is not None and time.time() - began > 60 * t.max_minutes:
                checkpoint.atomic_save(run.state(), meta_path)
                _log(workdir, {"step": step, **run.evaluate()})
                print(f"stopping at step {step}: training.max_minutes={t.max_minutes} reached", file=sys.stderr)
                break
        bar.close()
    finally:
        for s, h in old_handlers.items():
            signal.signal(s, h)
    print(f"done: {workdir} (step {run.step})")
    return 0


# ============================================================================ loading a trained run

@dataclass
class LoadedRun:
    cfg: Any
    state: dict
    model: torch.nn.Module          # EMA weights unless asked otherwise
    fmap: Any
    prior: Any
    levels: int
    step: int
    device: torch.device


def checkpoint_path(workdir: Path, number: int) -> Path:
    """0 = the latest (checkpoints-meta), N = snapshot N (checkpoints/checkpoint_N.pth)."""
    if number < 0:
        raise UserError(f"--checkpoint must be >= 0, got {number}")
    path = (workdir / "checkpoints-meta" / "checkpoint.pth" if number == 0
            else workdir / "checkpoints" / f"checkpoint_{number}.pth")
    if not path.exists():
        have = sorted(p.name for p in (workdir / "checkpoints").glob("checkpoint_*.pth"))
        raise UserError(f"checkpoint {path} not found" + (f" (snapshots: {', '.join(have)})" if have else ""))
    return path


def load_run(workdir, number: int = 0, device: str = "auto", use_ema: bool = True, config_path=None) -> LoadedRun:
    from .levels import GaussianPrior, LevelModel

    workdir = Path(workdir)
    if not workdir.is_dir():
        raise UserError(f"work folder not found: {workdir}")
    dev = resolve_device(device)
    state = checkpoint.load(checkpoint_path(workdir, number), map_location=dev)
    if state.get("kind") != RUN_KIND:
        raise UserError(f"{workdir}: not a heat / linear-transform checkpoint")
    cfg = from_dict(state["config"])
    if config_path is not None:
        given = load_config(config_path)
        for key in ("forward", "K"):
            if given.model[key] != cfg.model[key]:
                print(f"warning: {config_path} has model.{key}={given.model[key]}, the checkpoint "
                      f"{cfg.model[key]}; the checkpoint's config is used", file=sys.stderr)
    shape = tuple(state["data_shape"])
    model = LevelModel(build_net(state["net"]), cfg.model.residual).to(dev)
    if use_ema:
        model.load_state_dict(state["ema"]["shadow"])
    else:
        model.load_state_dict(state["model"])
    model.eval()
    return LoadedRun(cfg, state, model, build_map(cfg, shape), GaussianPrior.from_state(state["prior"]),
                     int(state["data_levels"]), int(state["step"]), dev)


# ============================================================================ evaluation (eval.py --mode elbo|fid)

EVAL_HELP = """Evaluate a heat / linear-transform run (negative ELBO or FID).

  python eval.py --mode=elbo --config C.yaml --workdir runs/mnist/default --checkpoint 0 \\
      --experiment_name experiment1 --param_name default --delta 0.0125
  python eval.py --mode=fid --workdir runs/cifar10/default --fid_weights inception-2015-12-05.pt \\
      --experiment_name experiment1 --param_name delta0.013 --delta 0.013 --num_gen 50000

Results are added, keyed by --param_name, to
<results_root>/<dataset_name>/evaluation_results/<experiment_name>/{elbo,fid}_results.json
(results_root defaults to runs) and a line to {elbo,fid}.log next to it. Without --param_name
the key is made from the settings: ckpt<N>-delta<delta>-<split>[-n<n_images>][-gen<num_gen>]
[-raw][-seed<seed>], e.g. ckpt0-delta0.0125-valid. A key that is already in the table is never
replaced without --overwrite.
"""

# What each system's folder holds, and how eval.py evaluates it (for one-line errors).
SYSTEMS = {
    "field": ("a function-space (VE / interpolant) run folder (config.json, model*.pt)",
              "eval.py --mode generate | superres | plot --exp_name {f}"),
    "levels": ("a heat / linear-transform work folder (config.yaml, checkpoints-meta/checkpoint.pth)",
               "eval.py --mode elbo | fid --workdir {f} (sample.py draws samples from it)"),
    "toy": ("a two-atom toy run folder (config.yaml, model.pt, metrics.jsonl)",
            "scripts/analyse_toy.py --runs-dir {f.parent} --experiments {f.name} (eval.py has no mode for toy runs)"),
}


def folder_system(folder) -> Optional[str]:
    """Which system a run folder belongs to, from the files it holds: 'field', 'levels', 'toy' or None."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    if (folder / "checkpoints-meta").is_dir() or (folder / "checkpoints").is_dir() \
            or (folder / "training_log.jsonl").exists():
        return "levels"
    if (folder / "config.json").exists() or any(folder.glob("model.*.pt")):
        return "field"
    if (folder / "config.yaml").exists() and any((folder / f).exists() for f in ("model.pt", "metrics.jsonl",
                                                                                  "summary.json")):
        return "toy"
    if (folder / "model.pt").exists():
        return "field"
    return None


def wrong_system_message(folder, system: str, asked: str) -> str:
    what, use = SYSTEMS[system]
    folder = Path(folder)
    return f"{asked} does not apply to {folder}: it is {what}; evaluate it with {use.format(f=folder)}"


def parse_eval_args(argv):
    p = argparse.ArgumentParser(prog="eval.py", description=EVAL_HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", required=True, choices=("elbo", "fid"),
                   help="elbo: negative ELBO with its per-level breakdown (nats and bits/dim); "
                        "fid: Frechet distance between Inception features of generated and real images")
    p.add_argument("--config", default=None,
                   help="the run's YAML file (optional: the checkpoint holds the config; used to cross-check)")
    p.add_argument("--workdir", required=True, help="the run's work folder")
    p.add_argument("--checkpoint", type=int, default=0, help="0 = latest (checkpoints-meta), N = snapshot N")
    p.add_argument("--dataset_name", default=None, help="folder name under results_root (default: data.dataset)")
    p.add_argument("--experiment_name", default="default", help="upper-level name for a suite of evaluations")
    p.add_argument("--param_name", default=None,
                   help="key of this value within the experiment, e.g. delta0.013 (default: made from the settings, "
                        "e.g. ckpt0-delta0.0125-valid)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a result already stored under the same key (default: refuse)")
    p.add_argument("--results_root", default="runs", help="root of the evaluation results (default: runs)")
    p.add_argument("--delta", type=float, default=None, help="sampling / ELBO noise std (default: model.delta)")
    p.add_argument("--dataset_split", default="valid", choices=("train", "valid"),
                   help="real images: the training or validation (test) split (default valid)")
    p.add_argument("--batch_size", type=int, default=None, help="batch size, > 0 (default: eval.batch_size)")
    p.add_argument("--n_images", type=int, default=None, help="elbo: evaluate only the first N images (default all)")
    p.add_argument("--num_gen", type=int, default=10000, help="fid: number of generated images (default 10000)")
    p.add_argument("--fid_weights", default=None,
                   help="fid: local Inception feature extractor, a TorchScript file mapping (B, 3, 299, 299) "
                        "images in [0, 255] to features (e.g. clean-fid's inception-2015-12-05.pt); it cannot "
                        "be downloaded here, so fid mode requires it")
    p.add_argument("--seed", type=int, default=0, help="seed of the ELBO noise / generated samples")
    p.add_argument("--no_ema", action="store_true", help="use the raw weights instead of the EMA weights")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--quiet", action="store_true", help="no progress lines (printed when stderr is a log file)")
    return p.parse_args(argv)


def result_key(args, delta: float) -> str:
    """--param_name, or a key made from the settings that change the result."""
    if args.param_name is not None:
        return args.param_name
    parts = [f"ckpt{args.checkpoint}", f"delta{delta:g}", args.dataset_split]
    if args.mode == "elbo" and args.n_images:
        parts.append(f"n{args.n_images}")
    if args.mode == "fid":
        parts.append(f"gen{args.num_gen}")
    if args.no_ema:
        parts.append("raw")
    if args.seed != 0:
        parts.append(f"seed{args.seed}")
    return "-".join(parts)


def _refuse_existing_result(path: Path, mode: str, key: str, overwrite: bool) -> None:
    if overwrite or not path.exists():
        return
    try:
        table = json.loads(path.read_text())
    except ValueError:
        raise UserError(f"{path} is not a JSON results table; move it away or choose another --experiment_name") \
            from None
    if key in table:
        raise UserError(f"{path} already holds the {mode} result '{key}'; nothing was written: pass --overwrite to "
                        f"replace it, or --param_name NAME to keep both")


def _write_result(out_dir: Path, mode: str, param_name: str, result: dict, overwrite: bool = False,
                  wait: float = 120.0) -> Path:
    """Add `result` under `param_name` to out_dir/<mode>_results.json and a line to <mode>.log.

    The read-modify-write holds the folder's writer lock (evaluations of one experiment run in
    parallel: a busy folder is retried for `wait` seconds, as each write takes milliseconds).
    """
    from . import run_dir

    path = out_dir / f"{mode}_results.json"
    deadline = time.time() + wait
    while True:
        try:
            with run_dir.claim(out_dir, owner="eval.py"):
                _refuse_existing_result(path, mode, param_name, overwrite)
                table = json.loads(path.read_text()) if path.exists() else {}
                table[param_name] = result
                atomic_write_text(path, json.dumps(table, indent=2) + "\n")
                summary = {k: v for k, v in result.items() if not isinstance(v, (list, dict))}
                with open(out_dir / f"{mode}.log", "a") as fh:
                    fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {param_name}: {json.dumps(summary)}\n")
            return path
        except run_dir.RunFolderBusy:
            if time.time() > deadline:
                raise
            time.sleep(0.5)


@torch.no_grad()
def elbo_of(run: LoadedRun, images: torch.Tensor, delta: float, batch_size: int, seed: int,
            log_lines: bool = False) -> dict:
    from .levels import elbo_summary, negative_elbo_terms
    from .progress import LogLines

    g = torch.Generator().manual_seed(seed)
    starts = range(0, len(images), batch_size)
    log = LogLines("elbo", "batch", len(starts), enabled=log_lines)
    terms = []
    for done, i in enumerate(starts):
        batch = images[i:i + batch_size]
        terms.append(negative_elbo_terms(run.model, run.fmap, run.prior, batch.to(run.device),
                                         run.cfg.model.sigma, delta, run.levels, g))
        log.tick(len(batch), done + 1)
    return elbo_summary(torch.cat(terms), images[0].numel())


@torch.no_grad()
def generate(run: LoadedRun, n: int, delta: float, batch_size: int, seed: int, log_lines: bool = False) -> torch.Tensor:
    from .levels import initial_and_noise, sample_levels
    from .progress import LogLines

    out = []
    starts = range(0, n, batch_size)
    log = LogLines("generate", "batch", len(starts), enabled=log_lines)
    for done, i in enumerate(starts):
        seeds = [seed + j for j in range(i, min(n, i + batch_size))]
        u_K, noise = initial_and_noise("random", run.prior, run.fmap.K, seeds)
        out.append(sample_levels(run.model, u_K, noise, delta, run.fmap.K, device=run.device)[0])
        log.tick(len(seeds), done + 1)
    return torch.cat(out)


def eval_main(argv) -> int:
    from . import threads
    from .progress import enabled_for

    args = parse_eval_args(list(argv))
    threads.apply()                 # the allocation's CPU threads, not every core of the node
    for flag in ("batch_size", "n_images", "num_gen"):
        value = getattr(args, flag)
        if value is not None and value <= 0:
            raise UserError(f"--{flag} must be a positive integer; got {value}")
    if args.mode == "fid" and not args.fid_weights:
        raise UserError("--mode=fid needs --fid_weights FILE: a local Inception feature extractor (TorchScript, "
                        "e.g. clean-fid's inception-2015-12-05.pt); Inception weights cannot be downloaded here")
    system = folder_system(args.workdir)
    if system in ("field", "toy"):
        raise UserError(wrong_system_message(args.workdir, system, f"--mode {args.mode}"))
    run = load_run(args.workdir, args.checkpoint, args.device, use_ema=not args.no_ema, config_path=args.config)
    delta = run.cfg.model.delta if args.delta is None else args.delta
    if delta <= 0:
        raise UserError(f"--delta must be positive, got {delta}")
    key = result_key(args, delta)
    out_dir = Path(args.results_root) / (args.dataset_name or run.cfg.data.dataset) / "evaluation_results" \
        / args.experiment_name
    _refuse_existing_result(out_dir / f"{args.mode}_results.json", args.mode, key, args.overwrite)  # before work
    data = load_data(run.cfg)
    real = data.valid if args.dataset_split == "valid" else data.train
    batch = args.batch_size or run.cfg.eval.batch_size
    common = {"workdir": str(args.workdir), "checkpoint": args.checkpoint, "step": run.step,
              "forward": run.cfg.model.forward, "delta": delta, "split": args.dataset_split, "ema": not args.no_ema}
    if args.mode == "elbo":
        images = real[:args.n_images] if args.n_images else real
        result = {**common, **elbo_of(run, images, delta, batch, args.seed, log_lines=enabled_for(args.quiet))}
        print(f"negative ELBO {result['neg_elbo_nats']:.3f} nats = {result['bpd']:.4f} bits/dim "
              f"over {result['n_images']} images")
        per = result["per_level_bpd"]
        print(f"  per level (bits/dim): L_0 {per[0]:.4f}, L_1..L_{len(per) - 2} {sum(per[1:-1]):.4f} "
              f"(largest L_{1 + max(range(len(per) - 2), key=lambda i: per[1 + i]) if len(per) > 2 else 0}), "
              f"prior L_{len(per) - 1} {per[-1]:.4f}")
    else:
        from . import fid

        extractor = fid.load_extractor(args.fid_weights, run.device)
        fake = generate(run, args.num_gen, delta, batch, args.seed, log_lines=enabled_for(args.quiet))
        value = fid.fid_from_images(extractor, fake, real, batch, run.device)
        result = {**common, "fid": value, "num_gen": args.num_gen, "num_real": len(real),
                  "fid_weights": str(args.fid_weights)}
        print(f"FID {value:.4f} ({args.num_gen} generated vs {len(real)} real images)")
    print(f"wrote {_write_result(out_dir, args.mode, key, result, overwrite=args.overwrite)} ['{key}']")
    return 0
