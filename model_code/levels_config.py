"""The config schema of the heat-dissipation / linear-transform image runs (OmegaConf YAML).

`LevelsConfig` documents every key; a YAML file overrides it, `section.key=value` arguments
override the file (a leading `config.` is accepted, as in the seed's README). Unknown keys
and wrong types are errors naming the key.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from .config import load_yaml, merge_checked, override_item
from .errors import UserError


# ============================================================================ config schema

@dataclass
class DataConfig:
    dataset: str = "digits"            # digits | mnist | cifar10 | folder
    root: str = "data"                 # torchvision download folder, or the image folder (dataset=folder)
    image_size: int = 8                # pixels per side
    num_channels: int = 1              # 1 (grey) or 3 (RGB)
    random_flip: bool = False          # random horizontal flips of training images
    valid_fraction: float = 0.15       # digits / folder: held-out fraction (mnist / cifar10 use the test set)
    split_seed: int = 0                # digits / folder: seed of the train / validation split
    download: bool = True              # mnist / cifar10: let torchvision download when absent
    max_examples: Optional[int] = None  # use only the first N training images


@dataclass
class UNetConfig:
    model_channels: int = 64           # width of the first level
    channel_mult: List[int] = field(default_factory=lambda: [1, 2, 2])  # width multipliers per level
    num_res_blocks: int = 2            # residual blocks per level
    attention_levels: List[int] = field(default_factory=lambda: [1])   # levels (0 = full res) with attention
    dropout: float = 0.1
    num_heads: int = 4


@dataclass
class FNOConfig:
    width: int = 32
    n_layers: int = 4
    n_modes: int = 8                   # Fourier modes per axis (a fixed count)
    embedding_dim: int = 128


@dataclass
class UNOConfig:
    width: int = 16
    channel_multipliers: List[int] = field(default_factory=lambda: [1, 2, 2])
    n_modes: int = 8
    embedding_dim: int = 128


@dataclass
class ModelConfig:
    forward: str = "heat"              # the forward process: a key of processes.linear.FUNCTION_MAP
    K: int = 20                        # number of levels (level 0 = data, K = most degraded)
    blur_sigma_min: float = 0.5        # heat: blur of level 1 (pixels)
    blur_sigma_max: float = 8.0        # heat: blur of level K (pixels)
    map_seed: int = 0                  # seed of the random maps (fixed_random, random_product)
    sigma: float = 0.01                # training noise std: q(u_k | u_0) = N(T(k) u_0, sigma^2)
    delta: float = 0.0125              # sampling noise std delta (also the ELBO's p(u_{k-1} | u_k) std)
    prior: str = "auto"                # full | dct_diag | auto (full when C H W <= 4096)
    prior_fit_max: int = 20000         # training images used to fit the prior
    net: str = "unet"                  # unet | fno | uno
    residual: bool = True              # mu(x, k) = x + F(x, k)
    ema_rate: float = 0.999
    unet: UNetConfig = field(default_factory=UNetConfig)
    fno: FNOConfig = field(default_factory=FNOConfig)
    uno: UNOConfig = field(default_factory=UNOConfig)


@dataclass
class TrainingConfig:
    batch_size: int = 64
    n_iters: int = 2000                # optimisation steps
    log_freq: int = 50                 # steps between training-loss log lines
    eval_freq: int = 250               # steps between validation loss / negative ELBO
    snapshot_freq: int = 1000          # steps between numbered snapshots (checkpoints/)
    snapshot_freq_for_preemption: int = 250  # steps between checkpoints-meta/ updates
    sampling_freq: int = 500           # steps between sample grids (samples/)
    n_samples: int = 36                # images per sample grid
    n_eval: int = 256                  # validation images for the validation loss / ELBO
    max_minutes: Optional[float] = None  # stop (with a checkpoint) after this much training time
    device: str = "auto"               # auto | cpu | cuda | cuda:N
    threads: Optional[int] = None      # CPU threads; None: OMP_NUM_THREADS, SLURM_CPUS_PER_TASK, cores / processes


@dataclass
class OptimConfig:
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup: int = 200                  # linear learning-rate warm-up steps
    grad_clip: Optional[float] = 1.0


@dataclass
class EvalConfig:
    batch_size: int = 256


@dataclass
class LevelsConfig:
    system: str = "levels"
    seed: int = 0                      # seeds the training order and noise (torch.Generator)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


IDENTITY_SECTIONS = ("seed", "data", "model", "optim")   # what must match to resume a work folder


def load_config(path, overrides=()):
    """Schema <- YAML file <- `key=value` overrides; validated. Returns an OmegaConf DictConfig.

    A YAML syntax error names the file, line and column; a wrong key or type names the file,
    or the command line and the `key=value` argument as typed.
    """
    from omegaconf import OmegaConf

    cfg = OmegaConf.structured(LevelsConfig)
    if path is not None:
        cfg = merge_checked(cfg, load_yaml(path), LevelsConfig, str(path))
    for item in overrides:
        value = override_item(item[len("config."):] if item.startswith("config.") else item)
        cfg = merge_checked(cfg, value, LevelsConfig, f"command line: {item}")
    validate(cfg)
    return cfg


def validate(cfg) -> None:
    from .data.images import DATASETS
    from .processes.linear import FUNCTION_MAP

    def need(ok, message):
        if not ok:
            raise UserError(message)

    need(cfg.system == "levels", f"system must be 'levels', got '{cfg.system}'")
    need(cfg.data.dataset in DATASETS, f"data.dataset must be one of {', '.join(DATASETS)}; got '{cfg.data.dataset}'")
    need(cfg.model.forward in FUNCTION_MAP, f"model.forward must be one of {', '.join(sorted(FUNCTION_MAP))}; "
                                            f"got '{cfg.model.forward}'")
    need(cfg.model.net in ("unet", "fno", "uno"), f"model.net must be unet, fno or uno; got '{cfg.model.net}'")
    need(cfg.model.prior in ("auto", "full", "dct_diag"), f"model.prior must be auto, full or dct_diag; "
                                                         f"got '{cfg.model.prior}'")
    need(cfg.model.K >= 1, f"model.K must be >= 1, got {cfg.model.K}")
    need(cfg.model.sigma > 0 and cfg.model.delta > 0, "model.sigma and model.delta must be positive")
    need(0 < cfg.model.blur_sigma_min <= cfg.model.blur_sigma_max,
         "need 0 < model.blur_sigma_min <= model.blur_sigma_max")
    need(0 <= cfg.model.ema_rate < 1, f"model.ema_rate must be in [0, 1), got {cfg.model.ema_rate}")
    need(cfg.data.image_size >= 2 and cfg.data.num_channels >= 1, "data.image_size / num_channels too small")
    for key in ("batch_size", "n_iters", "log_freq", "eval_freq", "snapshot_freq", "snapshot_freq_for_preemption",
                "sampling_freq", "n_samples", "n_eval"):
        need(cfg.training[key] >= 1, f"training.{key} must be >= 1, got {cfg.training[key]}")
    need(cfg.optim.lr > 0, f"optim.lr must be positive, got {cfg.optim.lr}")
    need(cfg.eval.batch_size >= 1, "eval.batch_size must be >= 1")


def to_dict(cfg) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True)


def from_dict(values: dict):
    from omegaconf import OmegaConf

    return OmegaConf.merge(OmegaConf.structured(LevelsConfig), OmegaConf.create(values))
