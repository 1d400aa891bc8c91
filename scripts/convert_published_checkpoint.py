"""Convert a run folder of the published DiffusionOperators code into a run folder of this project.

    python scripts/convert_published_checkpoint.py PUBLISHED_RUN_DIR OUT_DIR
    python eval.py --exp_name OUT_DIR --mode generate      # or plot, superres; exps/launch_eval.sh too

The published train.py wrote config.json (its flat Arguments) and checkpoints model.pt /
model.<metric>.pt holding {weights, ema_helper, metrics, last_epoch}. The network becomes a
legacy_uno (model_code/nets/legacy_uno.py) that ignores the noise level as the published one
did, its factorized spectral weights dense complex tensors, inside a VE process with the
published output convention (score = F / sigma^2, processes/ve.py PublishedDenoiser). The
config is the published file read as this project reads it (sigmas as standard deviations),
with the published noise kernel; conversion.json (and the checkpoints' "conversion" entry)
records what was converted and how (docs/differences.md, "The published network").
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

try:
    import torch  # noqa: E402
except ModuleNotFoundError as missing:      # not the project's environment: say which to activate
    from model_code.errors import exit_for_missing_module
    exit_for_missing_module(missing, "convert_published_checkpoint.py")

from model_code import files  # noqa: E402
from model_code.errors import UserError, run_cli  # noqa: E402
from model_code.nets.legacy_uno import tucker_to_dense  # noqa: E402

BLOCKS = ("block1", "block2", "block3", "block4", "inv2_9", "inv3", "inv4", "inv5")
DEFAULT_CHECKPOINTS = ("model.w_total.pt", "model.pt")
# Published Volcano split: VolcanoDataset(ntrain=4096), train = the first int(4096 (1 - val_size)).
PUBLISHED_N_FILES = 4096


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="convert_published_checkpoint.py",
        description="Convert a run folder of the published DiffusionOperators code (config.json + model*.pt) into "
                    "a run folder of this project that eval.py and exps/launch_eval.sh read.")
    p.add_argument("published_run_dir", metavar="PUBLISHED_RUN_DIR",
                   help="folder written by the published train.py: config.json and model.pt / model.<metric>.pt")
    p.add_argument("out_dir", metavar="OUT_DIR", help="the new run folder (created; must be empty unless --force)")
    p.add_argument("--checkpoint", action="append", default=None, metavar="NAME",
                   help="a checkpoint file of PUBLISHED_RUN_DIR to convert, keeping its name (repeatable); default: "
                        "model.w_total.pt and model.pt, those present")
    p.add_argument("--all", action="store_true", help="convert every model*.pt of PUBLISHED_RUN_DIR")
    p.add_argument("--keep-factorization", action="store_true",
                   help="store tucker-factorized spectral weights as their core and factors (net.factorization "
                        "tucker, the published parameter count) instead of dense complex tensors (the default; "
                        "at the published settings 1.40 G parameters, 5.6 GB per copy of the weights)")
    p.add_argument("--no-ema", action="store_true",
                   help="leave out the published EMA weights (ema_helper); eval.py then samples with the raw weights")
    p.add_argument("--trust-pickle", action="store_true",
                   help="load the published checkpoints with torch.load(weights_only=False), which can run code "
                        "stored in the file: only for files you trust, when the safe loader refuses them")
    p.add_argument("--device", default="cpu", help="where the conversion computes (cpu, cuda); default cpu")
    p.add_argument("--force", action="store_true", help="write into a non-empty OUT_DIR, replacing files there")
    return p.parse_args(argv)


# ------------------------------------------------------------------------- reading the published run
def load_published(path: Path, trust: bool, device: str) -> dict:
    """The published checkpoint dict; numpy scalars (scipy's metric values) are allowed by the safe loader."""
    import pickle

    import numpy as np

    scalar = np._core.multiarray.scalar if hasattr(np, "_core") else np.core.multiarray.scalar
    allowed = [scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype]
    allowed += [getattr(np.dtypes, n) for n in ("Float64DType", "Float32DType", "Int64DType") if hasattr(np, "dtypes")]
    try:
        if trust:
            state = torch.load(path, map_location=device, weights_only=False)
        else:
            with torch.serialization.safe_globals(allowed):
                state = torch.load(path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, AttributeError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        hint = "" if trust else " (if you trust the file, --trust-pickle loads it without the safe loader)"
        raise UserError(f"cannot read {path}: {first}{hint}") from None
    if not isinstance(state, dict) or not isinstance(state.get("weights"), dict):
        raise UserError(f"{path} is not a published DiffusionOperators checkpoint (no 'weights' state dict)")
    return state


def _complex(t: torch.Tensor) -> torch.Tensor:
    # tltorch keeps complex factors as real views with a trailing (real, imag) axis.
    if t.is_complex():
        return t
    if t.shape[-1] != 2:
        raise ValueError(f"a complex factor stored as real must end in an axis of size 2, got {tuple(t.shape)}")
    return torch.view_as_complex(t.float().contiguous())


def _factors(parts: dict) -> list:
    keys = sorted((k for k in parts if k.startswith("factors.factor_")), key=lambda k: int(k.rsplit("_", 1)[1]))
    return [_complex(parts[k]) for k in keys]


def dense_corner(parts: dict, where: str) -> torch.Tensor:
    """The dense complex (in, out, m, m) tensor of one tltorch factorized corner weight."""
    if set(parts) == {"tensor"}:
        return _complex(parts["tensor"])
    if "core" in parts:
        return tucker_to_dense(_complex(parts["core"]), _factors(parts))
    if "weights" in parts:
        w, f = _complex(parts["weights"]), _factors(parts)
        return torch.einsum("r,ir,or,xr,yr->ioxy", w, *f)
    f = _factors(parts)
    if len(f) == 4 and all(t.ndim == 3 for t in f):
        return torch.einsum("pia,aob,bxc,cyq->ioxy", *f)
    raise UserError(f"{where}: unknown spectral weight layout (keys {sorted(parts)})")


def convert_state(weights: dict, keep_factorization: bool, where: str) -> tuple:
    """(LegacyUNO state dict, factorization of the published spectral weights)."""
    out, corners, kinds = {}, {}, set()
    for key, value in weights.items():
        key = key[len("module."):] if key.startswith("module.") else key
        m = re.fullmatch(r"(\w+)\.block1\.convs\.weight\.([01])\.(.+)", key)
        if m and m.group(1) in BLOCKS:
            corners.setdefault(m.group(1), {}).setdefault(int(m.group(2)), {})[m.group(3)] = value
            continue
        m = re.fullmatch(r"(\w+)\.block1\.(convs\.bias|fno_skips\.0\.weight|norm\.0\.(?:weight|bias))", key)
        if m and m.group(1) in BLOCKS:
            name = {"convs.bias": "bias", "fno_skips.0.weight": "skip.weight"}.get(m.group(2))
            out[f"{m.group(1)}.{name or m.group(2).replace('norm.0.', 'norm.')}"] = value.float()
            continue
        if re.fullmatch(r"(init_conv|final_conv|time_mlp\.[13])\.(weight|bias)", key) or \
                re.fullmatch(r"(\w+)\.mlp\.1\.(weight|bias)", key) and key.split(".")[0] in BLOCKS:
            out[key] = value.float()
            continue
        raise UserError(f"{where}: unexpected published parameter '{key}' (joint factorization, an mlp inside "
                        f"FNOBlocks or another network are not supported)")
    for block in BLOCKS:
        pair = corners.get(block, {})
        if sorted(pair) != [0, 1]:
            raise UserError(f"{where}: block {block} lacks its two spectral weights")
        parts0 = pair[0]
        kind = "dense" if "tensor" in parts0 else "tucker" if "core" in parts0 else "cp" if "weights" in parts0 \
            else "tt"
        kinds.add(kind)
        if keep_factorization:
            if kind != "tucker":
                raise UserError(f"--keep-factorization keeps tucker weights only; {block} is {kind}")
            out[f"{block}.spectral.core"] = torch.stack([_complex(pair[k]["core"]) for k in (0, 1)])
            for j, _ in enumerate(_factors(parts0)):
                out[f"{block}.spectral.factors.{j}"] = torch.stack([_factors(pair[k])[j] for k in (0, 1)])
        else:
            out[f"{block}.spectral.weight"] = torch.stack(
                [dense_corner(pair[k], f"{where}, {block}") for k in (0, 1)]).contiguous()
    if len(kinds) != 1:
        raise UserError(f"{where}: mixed spectral weight layouts {sorted(kinds)}")
    return out, kinds.pop()


def published_config(run_dir: Path) -> dict:
    path = run_dir / "config.json"
    try:
        raw = json.loads(path.read_text())
    except OSError:
        raise UserError(f"{path} not found: PUBLISHED_RUN_DIR must be a folder of the published train.py") from None
    except ValueError as err:
        raise UserError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(raw, dict) or "d_co_domain" not in raw or "fmult" not in raw:
        raise UserError(f"{path} is not a config of the published train.py (no d_co_domain / fmult)")
    return raw


# ------------------------------------------------------------------------- building the project's run
def project_config(raw: dict, run_dir: Path, factorization):
    from model_code import config as config_mod

    if raw.get("groups", 0) not in (0, None):
        raise UserError(f"config.json has groups = {raw['groups']}: the published network cannot have been "
                        f"trained with it (its FNOBlocks rejected a GroupNorm); nothing to convert")
    overrides = ["net.type=legacy_uno", "net.legacy.noise_conditioning=false",
                 f"net.factorization={'tucker' if factorization == 'tucker' else 'null'}",
                 # GaussianRF_RBF computed exp(-|x - y| / (2 l^2)): the project's 'exponential' kernel.
                 "noise.kernel=exponential"]
    return config_mod.load([run_dir / "config.json"], overrides)


def conversion_record(raw: dict, src: Path, names: list, kind: str, keep: bool, ema: bool, cfg) -> dict:
    p = cfg.process
    variances = [float(raw.get("sigma_1", float("nan"))), float(raw.get("sigma_L", float("nan")))]
    return {
        "source": str(src),
        "checkpoints": names,
        "published_config": raw,
        "network": ("the published UNO as net.type=legacy_uno with net.legacy.noise_conditioning=false (the "
                    "published network ignored the noise level); spectral weights "
                    + ("kept tucker-factorized" if keep else f"converted from {kind} to dense complex tensors")),
        "score": "process.output=published: score(x, sigma) = F(x) / sigma^2, sigma^2 the published level (a variance)",
        "sigmas": (f"published sigma_1 = {variances[0]:g}, sigma_L = {variances[1]:g} are variances; the project's "
                   f"levels are standard deviations: sigma_max = {p.sigma_max:.6g}, sigma_min = {p.sigma_min:.6g}, "
                   f"{p.num_levels} {p.schedule} levels"),
        "noise": {"white_noise": bool(raw.get("white_noise", False)), "rbf_scale": raw.get("rbf_scale"),
                  "rbf_eps": raw.get("rbf_eps"),
                  "project": {"type": cfg.noise.type, "kernel": cfg.noise.kernel,
                              "length_scale": cfg.noise.length_scale, "eps": cfg.noise.eps},
                  "note": "the published GaussianRF_RBF covariance exp(-|x-y| / (2 rbf_scale^2)) + rbf_eps^2 I is "
                          "noise.kernel=exponential"},
        "ema": ("the published ema_helper shadow (ema_rate "
                f"{raw.get('ema_rate')}), used by eval.py unless --no_ema" if ema else "none"),
        "sampling": ("the project's annealed Langevin steps a_i = epsilon sigma_i^2 / sigma_L^2 with standard "
                     "deviations; the published steps were epsilon v_i^2 / v_L^2 with variances v_i, and the "
                     "published sampler had no final denoising step"),
        "data": ("the published VolcanoDataset cropped npad px at the bottom-right; the project crops npad / 2 per "
                 "side (the network's padding is the published one)"),
    }


def write_run(args) -> Path:
    from model_code import build, checkpoint
    from model_code import config as config_mod
    from model_code.nets import describe_net
    from model_code.processes.ve import VE
    from model_code.schedules import sigma_levels

    src, out = Path(args.published_run_dir), Path(args.out_dir)
    if not src.is_dir():
        raise UserError(f"published run folder not found: {src}")
    if out.exists() and not out.is_dir():
        raise UserError(f"OUT_DIR {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not args.force:
        raise UserError(f"OUT_DIR {out} is not empty (use --force to write into it)")
    raw = published_config(src)
    if args.all:
        names = sorted(p.name for p in src.glob("model*.pt"))
    elif args.checkpoint:
        names = list(dict.fromkeys(args.checkpoint))
    else:
        names = [n for n in DEFAULT_CHECKPOINTS if (src / n).is_file()]
    if not names:
        raise UserError(f"{src} holds no checkpoint to convert (model.pt, model.<metric>.pt)")
    for name in names:
        if not (src / name).is_file():
            raise UserError(f"checkpoint {src / name} not found")

    factorization = "tucker" if args.keep_factorization else None
    cfg = project_config(raw, src, factorization)
    if cfg.data.dataset not in ("volcano", "grf"):
        raise UserError(f"the published config names dataset {cfg.data.dataset}; the published UNO ran on fields")
    res = (cfg.data.resolution or 128) - cfg.data.npad
    shape = (2, res, res)
    with torch.device("meta"):          # the description and the expected keys, without allocating the weights
        net = build.build_net(cfg, shape)
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    noise = build.build_noise(cfg, shape[0])
    p = cfg.process
    process = VE(noise, sigma_levels(p.sigma_max, p.sigma_min, p.num_levels, p.schedule), p.level_sampling,
                 p.sigma_data, cfg.objective.loss_weighting, output="published")
    meta = {"kind": "run", "config": config_mod.to_dict(cfg), "net": describe_net(net),
            "process": process.describe(),
            "data": {"kind": "phase" if cfg.data.dataset == "volcano" else "real", "shape": list(shape),
                     "levels": None, "num_classes": 0}}
    out.mkdir(parents=True, exist_ok=True)
    kinds, with_ema = set(), False
    # One checkpoint at a time: at the published settings each dense copy of the weights is 5.6 GB.
    for name in names:
        state = load_published(src / name, args.trust_pickle, args.device)
        where = str(src / name)
        weights, kind = convert_state(state["weights"], args.keep_factorization, where)
        shadow = None
        if not args.no_ema and isinstance(state.get("ema_helper"), dict) and state["ema_helper"]:
            shadow, _ = convert_state(state["ema_helper"], args.keep_factorization, where + " (ema_helper)")
        kinds.add(kind)
        with_ema = with_ema or shadow is not None
        for label, sd in (("weights", weights), ("ema_helper", shadow)):
            if sd is None:
                continue
            got = {k: tuple(v.shape) for k, v in sd.items()}
            if got != expected:
                diff = sorted(set(got) ^ set(expected)) or sorted(k for k in got if got[k] != expected[k])
                raise UserError(f"{where} ({label}) does not match the network of its config.json: "
                                f"{', '.join(diff[:4])}")
        epochs = int(state.get("last_epoch", -1)) + 1
        n_train = int(PUBLISHED_N_FILES * (1 - float(raw.get("val_size", 0.1))))
        steps = epochs * math.ceil(n_train / int(raw.get("batch_size", 16)))
        best = {k: float(v["best"]) for k, v in (state.get("metrics") or {}).items()
                if isinstance(v, dict) and v.get("best") is not None}
        del state
        record = conversion_record(raw, src, names, kind, args.keep_factorization, shadow is not None, cfg)
        payload = {**meta, "format_version": checkpoint.FORMAT_VERSION,
                   "model": {f"backbone.{k}": v for k, v in weights.items()},
                   "ema": None if shadow is None else {
                       "rate": raw.get("ema_rate"), "step": steps,
                       "shadow": {f"backbone.{k}": v for k, v in shadow.items()}},
                   "process_state": process.state_dict(), "step": steps, "unit": epochs, "best": {},
                   "conversion": {**record, "checkpoint": name, "published_epochs": epochs,
                                  "published_best": best}}
        checkpoint.atomic_save(payload, out / name)
        del payload, weights, shadow
    record = conversion_record(raw, src, names, "/".join(sorted(kinds)), args.keep_factorization, with_ema, cfg)
    config_mod.save(cfg, out / "config.json")
    files.atomic_write_text(out / "conversion.json",
                            files.json_text(record, indent=2, sort_keys=True, default=str) + "\n")
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    out = write_run(args)
    print(f"converted {args.published_run_dir} -> {out}; next: python eval.py --exp_name {out} --mode generate")
    return 0


if __name__ == "__main__":
    run_cli(main, "convert_published_checkpoint.py")
