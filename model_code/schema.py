"""The one configuration schema of every run: groups data, noise, process, net, objective,
sampler, optim, train and eval, each field with its documentation.

Defaults are those of the function-space score model of the published code (VE process,
GRF noise, UNO, annealed Langevin on the volcano data). The older spellings (the published
flat JSON keys, the heat YAML's `model.* / training.*`, the toy YAML's `train.lr`, ...) are
aliases mapped onto these fields by config_aliases.py. docs/config.md is generated from
this file (scripts/config_reference.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional


def _f(default, help, choices=None):
    """A schema field with its documentation (and allowed values) attached."""
    meta = {"help": help}
    if choices is not None:
        meta["choices"] = tuple(choices)
    if isinstance(default, list):
        return field(default_factory=lambda d=default: list(d), metadata=meta)
    if isinstance(default, dict):
        return field(default_factory=lambda d=default: dict(d), metadata=meta)
    return field(default=default, metadata=meta)


def _group(cls, help):
    return field(default_factory=cls, metadata={"help": help})


DATASETS = ("volcano", "grf", "digits", "mnist", "cifar10", "folder", "two_atoms")
PROCESSES = ("ve", "interpolant", "levels", "wrapped_ve", "adversarial")
NETS = ("uno", "fno", "unet", "mlp", "legacy_uno")
SAMPLER_NAMES = ("annealed_langevin", "heun_ode", "euler_ode", "dpm_solver_2m", "euler_maruyama",
                 "predictor_corrector", "edm_stochastic")
PREDICTIONS = ("x0", "noise", "score", "velocity", "v")


# ============================================================================ data
@dataclass
class AtomsConfig:
    """The toy's two pseudo-atoms."""

    mu: List[float] = _f([0.25, 0.75], "two_atoms: mean position of each pseudo-atom on the periodic unit interval")
    sigma_d: float = _f(0.05, "two_atoms: standard deviation of each atom around its position")
    symmetrize: bool = _f(True, "two_atoms: indistinguishable atoms (both orderings equally likely)")


@dataclass
class DataConfig:
    """Where the training and validation examples come from, and their augmentation."""

    dataset: str = _f("volcano", "training data: volcano (.int InSAR files under $DATA_DIR/subset_128), grf "
                      "(periodic Gaussian random fields with known statistics), digits (scikit-learn 8x8, offline), "
                      "mnist, cifar10 (torchvision), folder (an image folder), two_atoms (the toy problem)",
                      choices=DATASETS)
    root: Optional[str] = _f(None, "images: torchvision download folder, or the image folder (dataset=folder); "
                             "null: $DATA_DIR (else data/)")
    resolution: Optional[int] = _f(None, "pixels per side, >= 8: fields are resized to it before cropping (null: "
                                   "the files' 128 px for volcano, 32 px for grf); images are resized to it (null: "
                                   "the dataset's own size). train.py refuses a run whose data set and one batch "
                                   "cannot fit in the memory this machine has")
    channels: Optional[int] = _f(None, "images: 1 (grey) or 3 (RGB); null: the dataset's own")
    npad: int = _f(8, "fields: pixels cropped in total from each spatial axis, half from each side "
                   "(published: 128 px - 8 = 120 px)")
    val_size: float = _f(0.1, "fraction held out for validation (volcano, grf, digits, folder; mnist and cifar10 "
                         "use their test sets); the real statistics of the metrics come from this split")
    split_seed: int = _f(0, "seed of the train / validation split")
    max_examples: Optional[int] = _f(None, "use only the first N >= 1 training examples (null = all); for quick "
                                     "runs (volcano: the first N files, split into train and validation)")
    download: bool = _f(True, "mnist / cifar10: let torchvision download the data when absent")
    grf_n_train: int = _f(1024, "grf: number of training fields")
    grf_n_valid: int = _f(512, "grf: number of validation fields")
    grf_alpha: float = _f(2.5, "grf: smoothness exponent alpha of (-Laplacian + tau^2)^-alpha")
    grf_tau: float = _f(7.0, "grf: inverse length scale tau of the covariance operator")
    hflip: float = _f(0.5, "probability of a horizontal flip of each training example")
    vflip: float = _f(0.5, "probability of a vertical flip of each training example (fields; not for digits)")
    rot90: float = _f(0.0, "probability of a quarter-turn rotation of each training example (square grids)")
    dequantize: bool = _f(False, "8-bit images: uniform dequantization x <- (x (L-1) + u) / L, u ~ U[0, 1)")
    conditional: bool = _f(False, "feed class labels to the network (digits, mnist, cifar10)")
    atoms: AtomsConfig = _group(AtomsConfig, "the two-atom toy data")


# ============================================================================ noise
@dataclass
class NoiseConfig:
    """The Gaussian noise N(0, C) of the VE and interpolant processes (and GANO's input functions)."""

    type: str = _f("grf", "noise of the VE / interpolant processes: white N(0, I) or grf N(0, C)",
                   choices=("grf", "white"))
    kernel: str = _f("rbf", "covariance kernel of the GRF noise: rbf exp(-d^2/(2 l^2)) or exponential "
                     "exp(-d/(2 l^2)) (what the published code computed)", choices=("rbf", "exponential"))
    length_scale: float = _f(0.05, "kernel length scale l, in units of the domain [0,1] (larger = smoother)")
    eps: float = _f(0.01, "nugget: C = K + eps^2 I (standard deviation of an added white part)")


# ============================================================================ process
@dataclass
class LevelsProcessConfig:
    """Heat dissipation and the linear maps u_k = T(k) u_0 + N(0, sigma^2 I)."""

    forward: str = _f("heat", "the forward map T(k): heat | identity | constant_velocity | constant_deceleration | "
                      "fixed_random | random_product")
    K: int = _f(20, "number of levels (level 0 = data, K = most degraded)")
    blur_sigma_min: float = _f(0.5, "heat: blur of level 1 (pixels)")
    blur_sigma_max: float = _f(8.0, "heat: blur of level K (pixels)")
    map_seed: int = _f(0, "seed of the random maps (fixed_random, random_product)")
    sigma: float = _f(0.01, "training noise std: q(u_k | u_0) = N(T(k) u_0, sigma^2 I)")
    prior: str = _f("auto", "Gaussian prior of u_K: full | dct_diag | auto (full when C H W <= 4096)",
                    choices=("auto", "full", "dct_diag"))
    prior_fit_max: int = _f(20000, "training examples used to fit the prior")
    residual: bool = _f(True, "the network predicts u_{k-1} - u_k (mu(x, k) = x + F(x, k))")


@dataclass
class WrappedVEConfig:
    """Variance-exploding diffusion on the periodic unit interval (the toy)."""

    schedule: str = _f("geometric", "sigma(t): geometric sigma_min (sigma_max/sigma_min)^t or linear",
                       choices=("geometric", "linear"))
    sigma_min: float = _f(0.005, "sigma(0)")
    sigma_max: float = _f(1.0, "sigma(1)")
    prior: str = _f("uniform", "x_1 ~ uniform (checked against prior_tolerance) or the exact wrapped p_1",
                    choices=("uniform", "exact"))
    prior_tolerance: float = _f(1e-3, "largest |p_1 - 1| allowed for the uniform prior")
    n_images: int = _f(0, "periodic images -K..K of the wrapped kernel (0: automatic)")
    t_min: float = _f(0.0, "training times t ~ U(t_min, 1)")


@dataclass
class AdversarialConfig:
    """GANO: a generator operator fed with the noise functions, a functional critic, WGAN-GP in function space."""

    n_critic: int = _f(10, "critic updates per generator update (the generator steps on every n-th step)")
    lambda_grad: float = _f(10.0, "weight of the gradient penalty E (||dD/du||_L2 - 1)^2, whose norm is a "
                            "quadrature over the grid (the same at every resolution)")
    critic_lr: Optional[float] = _f(None, "critic learning rate (null: optim.lr, the generator's)")
    critic_betas: Optional[List[float]] = _f(None, "critic Adam betas (null: optim.betas)")
    kernel_width: int = _f(16, "hidden width of the critic's weight function k(s) in D(u) = int k(s) f(u)(s) ds")
    output: str = _f("identity", "generator output map: identity, or tanh (values in [-1, 1], as published for the "
                     "cos / sin volcano fields)", choices=("identity", "tanh"))


@dataclass
class ProcessConfig:
    """The forward process; the flat keys are those of the VE levels and the interpolant."""

    type: str = _f("ve", "forward process: ve (annealed noise levels, score-based), interpolant "
                   "(x_t = alpha(t) x0 + sigma(t) x1), levels (heat dissipation and the linear maps), "
                   "wrapped_ve (VE on the torus, the toy problem), adversarial (GANO: generator and critic; "
                   "net is the generator, the critic is the same network type)", choices=PROCESSES)
    interpolant: str = _f("rectified_flow", "interpolant: rectified_flow (1-t, t), cosine (cos, sin of pi t/2), "
                          "linear_vp (beta 0.1..20)", choices=("rectified_flow", "cosine", "linear_vp"))
    schedule: str = _f("geometric", "spacing of the noise levels sigma_max > ... > sigma_min",
                       choices=("geometric", "linear"))
    sigma_max: float = _f(5.477, "ve: largest noise level (a standard deviation); interpolant: the start of the "
                          "sampler's grid in s = sigma(t) / alpha(t)")
    sigma_min: float = _f(0.1, "ve: smallest noise level (standard deviation); interpolant: the sampler grid's end")
    num_levels: int = _f(500, "number of noise levels L")
    level_sampling: str = _f("discrete", "ve training levels: discrete (uniform over the L levels), continuous "
                             "(log-uniform) or edm_lognormal (ln sigma ~ N(-1.2, 1.2^2), clipped)",
                             choices=("discrete", "continuous", "edm_lognormal"))
    sigma_data: float = _f(0.7, "ve: typical data standard deviation of the EDM preconditioning")
    levels: LevelsProcessConfig = _group(LevelsProcessConfig, "levels process (type: levels)")
    wrapped_ve: WrappedVEConfig = _group(WrappedVEConfig, "wrapped VE process of the toy (type: wrapped_ve)")
    adversarial: AdversarialConfig = _group(AdversarialConfig, "GANO baseline (type: adversarial)")


# ============================================================================ network
@dataclass
class UNetConfig:
    """Improved-diffusion U-Net (ResBlocks with time embedding, attention at chosen levels)."""

    model_channels: int = _f(64, "unet: width of the first level")
    channel_mult: List[int] = _f([1, 2, 2], "unet: width multipliers per level")
    num_res_blocks: int = _f(2, "unet: residual blocks per level")
    attention_levels: List[int] = _f([1], "unet: levels (0 = full resolution) with self-attention")
    dropout: float = _f(0.1, "unet: dropout in the residual blocks")
    num_heads: int = _f(4, "unet: attention heads")


@dataclass
class MLPConfig:
    """Permutation-equivariant MLP of the toy."""

    n_frequencies: int = _f(4, "mlp: cos/sin(2 pi k x), k = 1..K, per atom")
    hidden: int = _f(128, "mlp: hidden width")
    depth: int = _f(3, "mlp: hidden layers")
    noise_dim: int = _f(32, "mlp: size of the log-sigma embedding")


@dataclass
class LegacyNetConfig:
    """The published UNO of DiffusionOperators (net.type legacy_uno; docs/differences.md, "The published network").

    It also reads net.width (the published d_co_domain), net.channel_multipliers (mult_dims, 4 levels),
    net.factorization (null or tucker) and net.rank; its grid is the training resolution after cropping
    plus data.npad, and it pads the lifted field by data.npad px.
    """

    fmult: float = _f(0.5, "legacy_uno: each block keeps int(fmult x its nominal input size) Fourier modes per "
                      "axis, the sizes being those of the padded training grid (published fmult)")
    groups: int = _f(0, "legacy_uno: GroupNorm groups after each spectral convolution; 0 = no normalisation "
                     "(published groups; the published code crashed for groups > 0)")
    noise_conditioning: bool = _f(True, "legacy_uno: condition every block on the noise level through the "
                                  "published per-block mlp of the time embedding (scale and shift); false = ignore "
                                  "the noise level exactly as the published network did (converted checkpoints)")


@dataclass
class NetConfig:
    """The network; the flat keys are those of the neural operators."""

    type: str = _f("uno", "backbone: uno, fno (neuraloperator), unet, mlp (permutation-equivariant, toy), "
                   "legacy_uno (the published UNO, settings in net.legacy)", choices=NETS)
    width: int = _f(32, "fno / uno / legacy_uno: channels of the first hidden layer")
    channel_multipliers: List[int] = _f([1, 2, 4, 4], "uno / legacy_uno: channel multipliers of the encoder levels "
                                        "(each level halves the resolution after the first)")
    n_layers: int = _f(4, "fno: number of Fourier layers")
    n_modes: int = _f(16, "fno / uno: Fourier modes kept per axis at full resolution (a count, not a fraction, "
                      "so the model runs at any resolution)")
    factorization: Optional[str] = _f(None, "fno / uno / legacy_uno (null or tucker): tensor factorization of the spectral weights: null "
                                      "(dense), tucker, cp or tt")
    rank: float = _f(1.0, "fno / uno / legacy_uno: rank of the factorization, as a fraction of the dense size")
    domain_padding: Optional[float] = _f(None, "fno / uno: zero padding, a fraction of the resolution; null = none")
    embedding_dim: int = _f(128, "fno / uno: size of the noise-level embedding that conditions every block")
    unet: UNetConfig = _group(UNetConfig, "U-Net backbone (type: unet)")
    mlp: MLPConfig = _group(MLPConfig, "equivariant MLP (type: mlp)")
    legacy: LegacyNetConfig = _group(LegacyNetConfig, "the published UNO (type: legacy_uno)")


# ============================================================================ objective
@dataclass
class ConsistencyConfig:
    """The consistency regularizer's reverse-SDE trajectories."""

    delta_t: float = _f(0.1, "consistency: t' = max(t - delta_t, 0)")
    n_steps: int = _f(4, "consistency: reverse-SDE steps from t to t'")
    n_samples: int = _f(4, "consistency: trajectories per point (even; two half-means)")


@dataclass
class RegularizerConfig:
    """The toy's score regularizers, added to denoising score matching."""

    kind: str = _f("none", "toy regularizer added to the score-matching loss",
                   choices=("none", "analytic_regression", "fokker_planck", "consistency", "consistency_analytic"))
    weight: float = _f(1.0, "loss = DSM + weight * regularizer")
    burn_in: int = _f(0, "steps of plain DSM before the regularizer switches on")
    n_points: int = _f(64, "training points the regularizer uses per step (0: the whole batch)")
    laplacian: str = _f("exact", "Fokker-Planck divergence: exact | hutchinson", choices=("exact", "hutchinson"))
    weighting: str = _f("sigma", "Fokker-Planck weighting: sigma (|sigma^3 r|^2) | none (|g^2 r|^2)",
                        choices=("sigma", "none"))
    consistency: ConsistencyConfig = _group(ConsistencyConfig, "consistency regularizer")


@dataclass
class ObjectiveConfig:
    """What the loss regresses and how training times / levels are weighted."""

    model_output: str = _f("velocity", "interpolant: what the network predicts", choices=PREDICTIONS)
    loss_target: str = _f("velocity", "interpolant: the type the loss regresses on (the output is converted to "
                          "it; independent of model_output)", choices=PREDICTIONS)
    time_sampler: str = _f("uniform", "interpolant: training times t, uniform or logit_normal, clipped to "
                           "[0.001, 0.999]", choices=("uniform", "logit_normal"))
    loss_weighting: str = _f("edm", "ve: lambda(sigma) = 1/c_out^2 (edm) or 1/sigma^2 (score)",
                             choices=("edm", "score"))
    regularizer: RegularizerConfig = _group(RegularizerConfig, "toy regularizers (process wrapped_ve)")


# ============================================================================ sampler
@dataclass
class SamplerConfig:
    """How samples are drawn during training and by eval.py."""

    name: str = _f("annealed_langevin", "ve / interpolant sampler for validation and eval.py: annealed_langevin "
                   "(the published one, on the L training levels; L*T+1 network evaluations) or one on an EDM "
                   "grid of `steps` levels: heun_ode (2n-1 evaluations), euler_ode (n), dpm_solver_2m (n), "
                   "euler_maruyama (n), predictor_corrector (2n-1), edm_stochastic (2n-1)", choices=SAMPLER_NAMES)
    steps: int = _f(20, "EDM-grid samplers: number of sigma levels; wrapped_ve: reverse-SDE steps")
    rho: float = _f(7.0, "EDM grid exponent (larger = levels denser near sigma_min)")
    S_churn: float = _f(40.0, "edm_stochastic: total noise re-injected (Karras et al. 2022, Alg. 2)")
    T: int = _f(3, "annealed Langevin: steps per noise level")
    epsilon: float = _f(6e-6, "annealed Langevin step size at the smallest level: a_i = epsilon sigma_i^2/sigma_L^2")
    final_denoise: bool = _f(True, "end sampling with x <- D(x, sigma_min)")
    delta: float = _f(0.0125, "levels: sampling noise std (also the ELBO's p(u_{k-1} | u_k) std)")


# ============================================================================ optimiser
@dataclass
class OptimConfig:
    """Optimiser, learning-rate schedule and EMA of the weights."""

    name: str = _f("adam", "optimiser: adam or adamw (decoupled weight decay)", choices=("adam", "adamw"))
    lr: float = _f(2e-4, "peak learning rate (adversarial: the generator's)")
    betas: List[float] = _f([0.9, 0.999], "Adam / AdamW betas (adversarial: the generator's)")
    weight_decay: float = _f(0.0, "weight decay (adamw: decoupled); never applied to biases and norm weights")
    warmup: int = _f(0, "linear learning-rate warm-up over this many steps")
    schedule: str = _f("constant", "learning rate after warm-up: constant, or cosine decay to lr * min_lr_ratio "
                       "at the last step", choices=("constant", "cosine"))
    min_lr_ratio: float = _f(0.1, "cosine: final learning rate as a fraction of lr")
    grad_clip: Optional[float] = _f(1.0, "clip the gradient norm to this value (null = no clipping)")
    ema_rate: Optional[float] = _f(0.999, "EMA decay of the weights used for sampling, with warm-up "
                                   "min(rate, (1+t)/(10+t)); null disables EMA")
    ema_update_after: int = _f(0, "EMA: copy the weights (no averaging) for the first N steps")
    ema_update_every: int = _f(1, "EMA: update every N steps")


# ============================================================================ training loop
@dataclass
class TrainConfig:
    """The training loop: its length, its intervals and where it runs."""

    epochs: Optional[int] = _f(100, "passes over the training set (finite data); the intervals below then count "
                               "epochs. Set null and give `steps` to count optimiser steps instead")
    steps: Optional[int] = _f(None, "optimiser steps (streams such as the toy, or step-counted runs); used "
                              "when epochs is null")
    batch_size: int = _f(16, "global batch size (split between processes under torchrun / srun)")
    log_interval: int = _f(1, "one line of results.json every N units (epochs or steps)")
    record_interval: int = _f(100, "run the evaluators (metrics, figures, best checkpoints) every N units")
    checkpoint_interval: int = _f(1, "write model.pt (the resume point) every N units (and at stops and the end)")
    snapshot_interval: Optional[int] = _f(None, "keep a numbered copy snapshots/model.<step>.pt every N units "
                                          "(null = none)")
    figure_interval: Optional[int] = _f(None, "draw a sample grid samples/<unit>.png every N units "
                                        "(null: at every record_interval)")
    track: Optional[List[str]] = _f(None, "metrics that get a best checkpoint model.<metric>.pt (null: every "
                                    "metric the evaluators report)")
    select: str = _f("within_noise", "which record model.<metric>.pt keeps: within_noise, the latest whose value "
                     "is within the metric's sampling noise of the best so far (half the width of its real-vs-real "
                     "floor's 90% interval; metrics without one: the best), so a flat noisy curve keeps the most "
                     "trained model; best, the lowest value", choices=("within_noise", "best"))
    max_minutes: Optional[float] = _f(None, "stop at the first step past this many minutes (> 0) of this start, "
                                      "mid-epoch too, with a checkpoint and a final evaluation; the same command "
                                      "goes on; null = no limit")
    device: str = _f("auto", "auto (cuda when available, else cpu), cpu, cuda or cuda:N")
    threads: Optional[int] = _f(None, "CPU threads for torch, >= 1; null (automatic): OMP_NUM_THREADS if set, else "
                                "SLURM_CPUS_PER_TASK, else the available cores / processes on the node (0 is "
                                "refused: write null)")
    tensorboard: bool = _f(True, "write TensorBoard events into <savedir>/tb")
    precision: str = _f("fp32", "fp32, or bf16: the backbone network runs under bf16 autocast (CUDA or CPU) in "
                        "training and generation, its FFTs and spectral weight contractions in float32 / "
                        "complex64, its output in float32; noise, preconditioning, loss, optimiser and "
                        "checkpoints stay float32", choices=("fp32", "bf16"))
    tf32: bool = _f(True, "CUDA only: TF32 matrix products and convolutions (torch.backends.cuda.matmul / "
                    "cudnn.allow_tf32); no effect on a CPU")
    compile: Optional[str] = _f(None, "torch.compile the backbone network (of the trained model and its EMA "
                                "copy): null (off), default, reduce-overhead or max-autotune (inductor modes); "
                                "neuralop's spectral convolutions run uncompiled between the compiled parts; "
                                "checkpoints keep the uncompiled keys")
    compile_backend: str = _f("inductor", "torch.compile backend: inductor (needs a C compiler on a CPU), or "
                              "eager / aot_eager (no code generation: checks that the network compiles)")
    pin_memory: bool = _f(True, "CUDA only: copy each batch through pinned host memory, asynchronously "
                          "(non_blocking); no effect on a CPU")
    keep_freed_memory: bool = _f(True, "glibc keeps the memory a step frees for the next one (no mmap per large "
                                 "tensor, no heap trimming), so a CPU step does not fault its activations back in "
                                 "(the 120 px UNO step ran 1.16-1.49x faster; the resident size stays at its peak plus "
                                 "fragmentation, +20 %); false: glibc's defaults. Left alone under another "
                                 "allocator (LD_PRELOAD) or the user's MALLOC_* / GLIBC_TUNABLES settings")


# ============================================================================ evaluation
@dataclass
class EvalConfig:
    """Evaluations during training (and eval.py's defaults)."""

    evaluators: Optional[List[str]] = _f(None, "validation evaluators: field_stats (w_var, w_skew, w_total, "
                                         "mean_l2, mean_phase_l2), spectrum (fields: spectrum_error, the mean "
                                         "relative error of the radially averaged power spectrum), elbo (levels: "
                                         "bits/dim), frechet (digits classifier features), score_error (toy); null: "
                                         "the system's defaults")
    n_samples: int = _f(256, "samples generated per evaluation")
    n_valid: Optional[int] = _f(None, "validation examples used by the loss / ELBO evaluators (null = all)")
    batch_size: int = _f(128, "batch size of generation and evaluation")
    seed: int = _f(10_000, "sample k of every evaluation uses seed `seed + k` (runs compared on the same noise)")
    n_plot: int = _f(16, "samples drawn in each figure")
    sampler: Optional[str] = _f("dpm_solver_2m", "ve / interpolant: sampler of the validation samples during "
                                "training, on an EDM grid of eval.sampler_steps levels (a fast one: checkpoint "
                                "selection needs a ranking, not the final quality); null = the `sampler` group's, "
                                "what eval.py uses (published config files: annealed Langevin, as published)",
                                choices=SAMPLER_NAMES)
    sampler_steps: int = _f(10, "levels of the validation sampler's EDM grid (annealed_langevin: the training levels "
                             "and sampler.T instead)")
    sampler_sigma_min: Optional[float] = _f(None, "end of the validation sampler's EDM grid (null = process.sigma_min)")


@dataclass
class Config:
    """One run: every group."""

    seed: int = _f(0, "seed of initialisation, data order, augmentation and training noise")
    data: DataConfig = _group(DataConfig, "training and validation data")
    noise: NoiseConfig = _group(NoiseConfig, "the Gaussian noise of the VE / interpolant processes")
    process: ProcessConfig = _group(ProcessConfig, "the forward process")
    net: NetConfig = _group(NetConfig, "the network")
    objective: ObjectiveConfig = _group(ObjectiveConfig, "the training loss")
    sampler: SamplerConfig = _group(SamplerConfig, "generation")
    optim: OptimConfig = _group(OptimConfig, "optimiser, learning-rate schedule, EMA")
    train: TrainConfig = _group(TrainConfig, "the training loop")
    eval: EvalConfig = _group(EvalConfig, "validation during training and eval.py defaults")
    mapped_keys: Dict[str, str] = _f({}, "how each key of a published config file was read, one line per key "
                                     "(written by the loader, e.g. a variance converted to a standard deviation, "
                                     "or a key with no effect); not an input")


GROUPS = ("data", "noise", "process", "net", "objective", "sampler", "optim", "train", "eval")
