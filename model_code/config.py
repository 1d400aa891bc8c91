"""The experiment configuration: one documented schema, files that override it, CLI last.

`Arguments` keeps the published field names (seeds 000/001: `sigma_1`, `d_co_domain`,
`mult_dims`, `npad`, `Ntest`, ...) so the published json files read as they were,
with two deliberate differences documented in README.org: sigmas are standard
deviations (the published files held variances), and Fourier modes are a fixed count
(`n_modes`) instead of a fraction (`fmult`), so one model runs at any resolution.

Only build.py and the entry scripts read this object.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from .errors import UserError


def _f(default, help, choices=None, **kw):
    """A schema field with its documentation (and allowed values) attached."""
    meta = {"help": help}
    if choices is not None:
        meta["choices"] = tuple(choices)
    if isinstance(default, list):
        return field(default_factory=lambda d=default: list(d), metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


@dataclass
class Arguments:
    # --- data -----------------------------------------------------------------
    dataset: str = _f("volcano", "training data: 'volcano' (.int files under $DATA_DIR/subset_128) "
                      "or 'grf' (periodic Gaussian random fields with known statistics)",
                      choices=("volcano", "grf"))
    resolution: Optional[int] = _f(None, "grid size (pixels per side) the data is resized to before "
                                   "cropping; null keeps the files' 128 px (volcano) / 32 px (grf)")
    npad: int = _f(8, "pixels cropped in total from each spatial axis after resizing, half from each "
                   "side (published: 128 px - 8 = 120 px)")
    val_size: float = _f(0.1, "fraction of the (sorted) files held out for validation; the real "
                         "statistics of the metrics come from this split only")
    split_seed: int = _f(0, "seed of the train/validation split")
    max_examples: Optional[int] = _f(None, "use only the first N files of the sorted list "
                                     "(null = all); for quick runs")
    augment: bool = _f(True, "random horizontal and vertical flips of training fields")
    grf_n_train: int = _f(1024, "grf dataset: number of training fields")
    grf_n_valid: int = _f(512, "grf dataset: number of validation fields")
    grf_alpha: float = _f(2.5, "grf dataset: smoothness exponent alpha of (-Laplacian + tau^2)^-alpha")
    grf_tau: float = _f(7.0, "grf dataset: inverse length scale tau of the covariance operator")

    # --- noise ----------------------------------------------------------------
    white_noise: bool = _f(False, "true: white noise N(0, I); false: Gaussian random field N(0, C) "
                           "and the rbf_* fields apply")
    kernel: str = _f("rbf", "covariance kernel of the GRF noise: 'rbf' exp(-d^2/(2 l^2)) or "
                     "'exponential' exp(-d/(2 l^2)) (what the published code computed)",
                     choices=("rbf", "exponential"))
    rbf_scale: float = _f(0.05, "kernel length scale l, in units of the domain [0,1] (larger = smoother)")
    rbf_eps: float = _f(0.01, "nugget: C = K + rbf_eps^2 I (standard deviation of an added white part)")

    # --- forward process ---------------------------------------------------------
    process: str = _f("ve", "'ve': annealed noise levels, score-based (seeds 000/001); 'interpolant': "
                      "x_t = alpha(t) x0 + sigma(t) x1 with x1 ~ the noise above (rectified flow + GRF noise = "
                      "functional flow matching)", choices=("ve", "interpolant"))
    interpolant: str = _f("rectified_flow", "interpolant schedule: 'rectified_flow' (1-t, t), 'cosine' "
                          "(cos, sin of pi t/2), 'linear_vp' (beta 0.1..20)",
                          choices=("rectified_flow", "cosine", "linear_vp"))
    model_output: str = _f("velocity", "interpolant: what the network predicts",
                           choices=("x0", "noise", "score", "velocity", "v"))
    loss_target: str = _f("velocity", "interpolant: the type the loss regresses on (the output is converted "
                          "to it; independent of model_output)", choices=("x0", "noise", "score", "velocity", "v"))
    time_sampler: str = _f("uniform", "interpolant: training times t, 'uniform' or 'logit_normal', clipped "
                           "to [0.001, 0.999]", choices=("uniform", "logit_normal"))
    # VE noise levels (standard deviations); for interpolants, the sampler's grid in s = sigma(t) / alpha(t)
    schedule: str = _f("geometric", "spacing of the noise levels sigma_1 > ... > sigma_L",
                       choices=("geometric", "linear"))
    sigma_1: float = _f(5.477, "largest noise level (standard deviation)")
    sigma_L: float = _f(0.1, "smallest noise level (standard deviation)")
    L: int = _f(500, "number of noise levels")
    level_sampling: str = _f("discrete", "training noise levels: 'discrete' (uniform over the L levels, "
                             "with replacement), 'continuous' (log-uniform in [sigma_L, sigma_1]) or "
                             "'edm_lognormal' (ln sigma ~ N(-1.2, 1.2^2), clipped to [sigma_L, sigma_1])",
                             choices=("discrete", "continuous", "edm_lognormal"))
    sigma_data: float = _f(0.7, "typical standard deviation of the data per point, used by the EDM "
                           "preconditioning (cos/sin phase channels: about 0.7)")
    loss_weighting: str = _f("edm", "lambda(sigma) of the denoising loss: 'edm' = 1/c_out^2, "
                             "'score' = 1/sigma^2 (the classic sigma^2-weighted score matching)",
                             choices=("edm", "score"))

    # --- network ----------------------------------------------------------------
    arch: str = _f("uno", "score-network backbone from neuraloperator", choices=("uno", "fno"))
    d_co_domain: int = _f(32, "width: channels of the first hidden layer")
    mult_dims: List[int] = _f([1, 2, 4, 4], "UNO channel multipliers of the encoder levels "
                              "(each level halves the resolution after the first)")
    n_layers: int = _f(4, "FNO: number of Fourier layers")
    n_modes: int = _f(16, "Fourier modes kept per axis at full resolution (a count, not a fraction, "
                      "so the model runs at any resolution; published fmult=0.5 at 120 px ~ 30 modes)")
    factorization: Optional[str] = _f(None, "tensor factorization of the spectral weights: "
                                      "null (dense), 'tucker', 'cp' or 'tt'")
    rank: float = _f(1.0, "rank of the factorization, as a fraction of the dense size")
    domain_padding: Optional[float] = _f(None, "zero padding of the domain, as a fraction of the "
                                         "resolution (published 8 px at 120 px = 0.0667); null = none")
    embedding_dim: int = _f(128, "size of the noise-level embedding that conditions every block")

    # --- optimisation -----------------------------------------------------------
    batch_size: int = _f(16, "training batch size")
    epochs: int = _f(100, "number of passes over the training split")
    lr: float = _f(2e-4, "Adam learning rate")
    grad_clip: Optional[float] = _f(1.0, "clip the gradient norm to this value (null = no clipping)")
    ema_rate: Optional[float] = _f(0.999, "EMA decay of the weights used for sampling; warm-up "
                                   "min(rate, (1+t)/(10+t)); null disables EMA (published 0.1 averaged nothing)")
    seed: int = _f(0, "seed of initialisation, data order, augmentation and training noise")
    max_minutes: Optional[float] = _f(None, "stop training after this many minutes of wall time "
                                      "(after the epoch in progress, with a final validation round); "
                                      "null = run all epochs")

    # --- validation and sampling --------------------------------------------------
    record_interval: int = _f(100, "compute the validation metrics (and samples/<epoch>.png) every N epochs")
    Ntest: int = _f(256, "number of samples generated for the validation metrics")
    val_batch_size: int = _f(128, "batch size of generation")
    val_seed: int = _f(10_000, "sample k of every validation round uses seed val_seed + k, so epochs "
                       "are compared on the same noise")
    sampler: str = _f("annealed_langevin", "sampler for validation and eval.py: 'annealed_langevin' "
                      "(the published one, on the L training levels; L*T+1 network evaluations) or one on an "
                      "EDM grid of ode_steps levels: 'heun_ode' (2n-1 evaluations), 'euler_ode' (n), "
                      "'dpm_solver_2m' (n), 'euler_maruyama' (n), 'predictor_corrector' (2n-1), "
                      "'edm_stochastic' (2n-1)",
                      choices=("annealed_langevin", "heun_ode", "euler_ode", "dpm_solver_2m", "euler_maruyama",
                               "predictor_corrector", "edm_stochastic"))
    ode_steps: int = _f(20, "samplers other than annealed_langevin: number of sigma levels n from sigma_1 to "
                        "sigma_L on the EDM grid")
    rho: float = _f(7.0, "EDM grid exponent (larger = levels denser near sigma_L)")
    S_churn: float = _f(40.0, "edm_stochastic: total amount of noise re-injected (Karras et al. 2022, Alg. 2)")
    T: int = _f(3, "annealed Langevin: steps per noise level")
    epsilon: float = _f(6e-6, "annealed Langevin step size at the smallest level: "
                        "a_i = epsilon * sigma_i^2 / sigma_L^2")
    final_denoise: bool = _f(True, "end sampling with x <- D(x, sigma_L)")
    n_plot: int = _f(16, "samples drawn in samples/<epoch>.png")

    # --- system ---------------------------------------------------------------------
    device: str = _f("auto", "'auto' (cuda when available, else cpu), 'cpu', 'cuda' or 'cuda:N'")
    threads: Optional[int] = _f(None, "CPU threads for torch; null: OMP_NUM_THREADS if set, else "
                                "SLURM_CPUS_PER_TASK, else the available cores / processes on the node")
    tensorboard: bool = _f(True, "write TensorBoard events into <savedir>/tb")


# Keys accepted in files but never part of the schema: json has no comments, so
# experiment files explain themselves in keys that start with an underscore.
COMMENT_PREFIX = "_"


def field_help() -> list[tuple[str, str, str, str]]:
    """(name, type, default, help) of every field, for train.py --help and README.org."""
    rows = []
    for f in dataclasses.fields(Arguments):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        typ = str(f.type).replace("typing.", "")
        doc = f.metadata["help"]
        if "choices" in f.metadata:
            doc += f" (one of: {', '.join(f.metadata['choices'])})"
        rows.append((f.name, typ, json.dumps(default), doc))
    return rows


def _read_file(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(file_error_line(path, err)) from None
    if path.suffix in (".yaml", ".yml"):
        import yaml
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise UserError(yaml_error_line(path, err)) from None
        data = {} if data is None else data
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise UserError(_syntax_error(path, err.lineno, err.colno, err.msg)) from None
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of key: value")
    return {k: v for k, v in data.items() if not str(k).startswith(COMMENT_PREFIX)}


def _check_keys(values: dict, source: str) -> None:
    names = [f.name for f in dataclasses.fields(Arguments)]
    for key in values:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise UserError(f"unknown config key '{key}' in {source}{hint}")


def override_item(item: str) -> dict:
    """One `key=value` command-line argument as a (nested) dict, OmegaConf dot-list syntax."""
    if "=" not in item:
        raise UserError(f"override '{item}' is not of the form key=value")
    return dotlist_item(item)


def from_dict(values: dict, source: str = "config") -> Arguments:
    """Validate `values` against the schema (names, types, choices, ranges)."""
    from omegaconf import OmegaConf

    _check_keys(values, source)
    return _finish(merge_checked(OmegaConf.structured(Arguments), values, Arguments, source))


def load(path: Optional[str], overrides: list[str] = ()) -> Arguments:
    """Schema defaults <- file (json or yaml) <- `key=value` overrides.

    A wrong name or type is blamed on where it came from: the file, or the command
    line with the `key=value` argument as typed.
    """
    from omegaconf import OmegaConf

    values = _read_file(Path(path)) if path else {}
    _check_keys(values, str(path))
    cli = [(item, override_item(item)) for item in overrides]
    for _, value in cli:
        _check_keys(value, "the command line")
    conf = merge_checked(OmegaConf.structured(Arguments), values, Arguments, str(path))
    for item, value in cli:
        conf = merge_checked(conf, value, Arguments, f"command line: {item}")
    return _finish(conf)


def _finish(conf) -> Arguments:
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        args = OmegaConf.to_object(conf)
    except OmegaConfBaseException as err:   # e.g. an ${interpolation} that does not resolve
        raise UserError(f"config: {omegaconf_error(err, Arguments, {})}") from None
    validate(args)
    return args


def validate(args: Arguments) -> None:
    """Range and choice checks that a type alone does not express."""
    for f in dataclasses.fields(Arguments):
        choices = f.metadata.get("choices")
        value = getattr(args, f.name)
        if choices and value not in choices:
            raise UserError(f"config key '{f.name}' must be one of {', '.join(choices)}; got '{value}'")
    if args.factorization is not None and args.factorization not in ("tucker", "cp", "tt"):
        raise UserError(f"config key 'factorization' must be null, tucker, cp or tt; got '{args.factorization}'")
    if not args.sigma_1 > args.sigma_L > 0:
        raise UserError(f"noise levels must satisfy sigma_1 > sigma_L > 0 (standard deviations); "
                        f"got sigma_1={args.sigma_1}, sigma_L={args.sigma_L}")
    positive = ("L", "T", "batch_size", "epochs", "record_interval", "Ntest", "val_batch_size",
                "d_co_domain", "n_layers", "n_modes", "embedding_dim", "n_plot", "grf_n_train", "ode_steps",
                "grf_n_valid")
    for name in positive:
        if getattr(args, name) < 1:
            raise UserError(f"config key '{name}' must be >= 1; got {getattr(args, name)}")
    for name in ("lr", "epsilon", "rbf_scale", "sigma_data", "rank", "rho"):
        if not getattr(args, name) > 0:
            raise UserError(f"config key '{name}' must be > 0; got {getattr(args, name)}")
    if not 0 < args.val_size < 1:
        raise UserError(f"config key 'val_size' must be in (0, 1); got {args.val_size}")
    if args.ema_rate is not None and not 0 <= args.ema_rate < 1:
        raise UserError(f"config key 'ema_rate' must be in [0, 1) or null; got {args.ema_rate}")
    if args.npad < 0 or args.rbf_eps < 0:
        raise UserError("config keys 'npad' and 'rbf_eps' must be >= 0")
    if not args.mult_dims or min(args.mult_dims) < 1:
        raise UserError(f"config key 'mult_dims' must be a non-empty list of positive integers; got {args.mult_dims}")


def to_dict(args: Arguments) -> dict:
    return dataclasses.asdict(args)


def save(args: Arguments, path) -> None:
    """Write the resolved config (every field, defaults included) as config.json."""
    from .files import atomic_write_text

    atomic_write_text(path, json.dumps(to_dict(args), indent=2, sort_keys=True) + "\n")


# ============================================== reading config files and blaming mistakes on their source
# Shared with the YAML systems (levels_config.py, toy_runs.py) and train.py's --config routing, so
# every entry point reports a bad file or a bad `key=value` the same way: one line naming the
# file with line and column (syntax) or the file / command-line argument and the key (names, types).

def _syntax_error(path, line: int, column: int, problem: str) -> str:
    return f"cannot parse config file {path}: line {line}, column {column}: {problem}"


def _find_cause(err: BaseException, types):
    """`err` itself or the first exception of `types` it was raised from (__cause__ / __context__)."""
    seen, todo = set(), [err]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, types):
            return e
        todo += [e.__cause__, e.__context__]
    return None


def file_error_line(path, err: BaseException) -> str:
    """One line for a config file that cannot be read at all (permissions, not UTF-8 text, ...)."""
    import yaml

    inner = _find_cause(err, (OSError, UnicodeDecodeError, yaml.YAMLError)) or err
    if isinstance(inner, OSError):
        detail = inner.strerror or str(inner)
    elif isinstance(inner, UnicodeDecodeError):
        detail = f"not UTF-8 text (byte {inner.start})"
    else:
        lines = str(inner).strip().splitlines()
        detail = lines[0] if lines else type(inner).__name__
    return f"cannot read config file {path}: {detail}"


def yaml_error_line(path, err: BaseException) -> str:
    """The UserError message for an exception met while loading the YAML file `path`.

    A syntax error (PyYAML's MarkedYAMLError, also when wrapped by OmegaConf) gives file,
    line and column (1-based) and what is wrong; anything else one line from file_error_line.
    train.py's --config routing calls it on whatever OmegaConf.load raised.
    """
    import yaml

    marked = _find_cause(err, yaml.MarkedYAMLError)
    mark = marked and (marked.problem_mark or marked.context_mark)
    if mark is None:
        return file_error_line(path, err)
    problem = marked.problem or marked.context or "syntax error"
    ctx = marked.context_mark
    if marked.problem and marked.context:
        if ctx is not None and (ctx.line, ctx.column) != (mark.line, mark.column):
            problem += f" ({marked.context} that starts at line {ctx.line + 1}, column {ctx.column + 1})"
        else:
            problem += f" ({marked.context})"
    return _syntax_error(path, mark.line + 1, mark.column + 1, problem)


def load_yaml(path):
    """A YAML config file as an OmegaConf DictConfig; any problem reading it is a UserError."""
    import yaml
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if not Path(path).is_file():
        raise UserError(f"config file not found: {path}")
    try:
        conf = OmegaConf.load(path)
    except (yaml.YAMLError, OSError, UnicodeDecodeError, OmegaConfBaseException) as err:
        raise UserError(yaml_error_line(path, err)) from None
    if not isinstance(conf, DictConfig):
        raise UserError(f"config file {path} must hold a mapping of key: value")
    return conf


def dotlist_item(item: str) -> dict:
    """One command-line `key=value` (OmegaConf dot-list; the value is read as YAML) as a nested dict."""
    import yaml
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.to_container(OmegaConf.from_dotlist([item]))
    except yaml.YAMLError as err:
        marked = _find_cause(err, yaml.MarkedYAMLError)
        problem = (marked and (marked.problem or marked.context)) or str(err).strip().splitlines()[0]
        raise UserError(f"command line: {item}: cannot parse the value: {problem}") from None
    except OmegaConfBaseException as err:
        raise UserError(f"command line: {item}: {str(err).strip().splitlines()[0]}") from None


def merge_checked(conf, values, schema, where: str):
    """OmegaConf.merge(conf, values); a wrong key or type is a UserError starting with `where`
    (a file name, or `command line: key=value`)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.merge(conf, values)
    except OmegaConfBaseException as err:
        plain = OmegaConf.to_container(values) if isinstance(values, (DictConfig, ListConfig)) else values
        raise UserError(f"{where}: {omegaconf_error(err, schema, plain)}") from None


def omegaconf_error(err, schema, values) -> str:
    """What an OmegaConf merge error means in terms of the dataclass `schema`: the key, and for a
    wrong type what the key expects and what `values` (the merged-in input) gave it."""
    from omegaconf.errors import ConfigKeyError, ValidationError

    key = getattr(err, "full_key", None) or None
    msg = (str(getattr(err, "msg", None) or err).strip().splitlines() or [type(err).__name__])[0]
    parts = _key_parts(key) if key else []
    if isinstance(err, ConfigKeyError) and parts and isinstance(parts[-1], str):
        parent = _strip_optional(_schema_type(schema, parts[:-1]))
        names = [f.name for f in dataclasses.fields(parent)] if dataclasses.is_dataclass(parent) else []
        close = difflib.get_close_matches(parts[-1], names, n=1)
        prefix = key[:len(key) - len(parts[-1])]
        return f"unknown config key '{key}'" + (f" (did you mean '{prefix}{close[0]}'?)" if close else "")
    if isinstance(err, ValidationError) and parts:
        typ = _schema_type(schema, parts)
        if typ is not None:
            found, got = _lookup(values, parts)
            return f"config key '{key}': expected {_describe(typ)}" + (
                f", got {json.dumps(got, default=str)}" if found else "")
    return msg + (f" (key: {key})" if key and key not in msg else "")


def _key_parts(key: str) -> list:
    """'model.unet.channel_mult[1]' -> ['model', 'unet', 'channel_mult', 1]."""
    import re

    return [int(i) if i else name for i, name in re.findall(r"\[(\d+)\]|([^.\[\]]+)", key)]


def _strip_optional(tp):
    import typing

    if typing.get_origin(tp) is typing.Union:
        rest = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return tp


def _schema_type(schema, parts):
    """The declared type of the key `parts` in the dataclass `schema`, or None if it has none."""
    import typing

    tp = schema
    for part in parts:
        tp = _strip_optional(tp)
        if isinstance(part, int):
            if typing.get_origin(tp) is not list:
                return None
            tp = (typing.get_args(tp) or (typing.Any,))[0]
        elif dataclasses.is_dataclass(tp):
            hints = typing.get_type_hints(tp)
            if part not in hints:
                return None
            tp = hints[part]
        else:
            return None
    return tp


def _describe(tp) -> str:
    import typing

    if typing.get_origin(tp) is typing.Union:
        args = typing.get_args(tp)
        text = " or ".join(_describe(a) for a in args if a is not type(None))
        return text + " or null" if type(None) in args else text
    if typing.get_origin(tp) is list:
        return "a list of " + _describe((typing.get_args(tp) or (typing.Any,))[0])
    if dataclasses.is_dataclass(tp):
        return "a section of keys (a mapping)"
    if tp is bool:
        return "bool (true or false)"
    if tp is typing.Any:
        return "any value"
    return getattr(tp, "__name__", str(tp))


def _lookup(values, parts):
    """(True, value) at the key `parts` of the nested dicts/lists `values`, or (False, None)."""
    for part in parts:
        try:
            values = values[part]
        except (KeyError, IndexError, TypeError):
            return False, None
    return True, values


def parse_with_overrides(parser, argv):
    """argparse with `key=value` overrides allowed before, between or after the flags.

    The parser declares a positional `overrides` (nargs='*'); argparse alone takes only one
    unbroken run of positionals, so the rest is collected here, and anything else unknown
    is argparse's usual error.
    """
    args, rest = parser.parse_known_args(argv)
    bad = [a for a in rest if a.startswith("-") or "=" not in a]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)}")
    args.overrides = list(args.overrides) + rest
    return args
