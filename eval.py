#!/usr/bin/env python
"""Evaluate a trained run of any system (the model is rebuilt from the checkpoint alone).

    python eval.py --exp_name RUN --mode generate   # field and image runs: RUN/eval/<name>/{samples.npz,metrics.json}
    python eval.py --exp_name RUN --mode superres   # field runs: the same on a grid --factor times finer
    python eval.py --exp_name RUN --mode plot       # field runs: figures for every evaluation under RUN/eval
    python eval.py --exp_name RUN --mode elbo       # levels (heat / linear map) runs: negative ELBO, bits/dim
    python eval.py --exp_name RUN --mode fid --fid_weights inception-2015-12-05.pt   # image runs: clean-fid's FID
    python eval.py --exp_name RUN --mode frechet    # image runs: Frechet distance in digits-classifier features
    python eval.py --exp_name RUN --mode score      # toy runs: score error vs the analytic score, mode balance

Each evaluation has its own folder under --savedir (default RUN/eval), named after every
setting that changes its result, or --tag NAME:
    <mode>-<checkpoint>-<sampler>-<T<steps> | steps<levels>>[-smin<s>][-x<factor>][-raw][-seed<seed>]
        generate / superres of VE and interpolant runs, e.g. generate-w_total-annealed_langevin-T2;
        levels runs use the sampler word levels-delta<delta>, toy runs reverse_sde-steps<n>; GANO runs
        generator-nfe1 (superres: generator-nfe1-x<factor>)
    elbo-<checkpoint>-delta<delta>-<split>[-n<n_images>][-raw][-seed<seed>]    e.g. elbo-latest-delta0.0125-valid
    fid|frechet-<checkpoint>-<sampler>-<steps word>[-smin<s>]-gen<N>[-train][-raw][-seed<seed>]
    score-<checkpoint>-reverse_sde-steps<n>[-raw][-seed<seed>]
The checkpoint is its file name without 'model.' and '.pt' (model.pt: latest; --checkpoint N,
the snapshot snapshots/model.N.pt: stepN). A folder that already holds an evaluation is never
overwritten without --overwrite. Real data come from the run's split (read from the folder the run's
training read, which its run folder records; --data_dir or DATA_DIR to read another; superres loads
the same split at the finer resolution). Field metrics.json
gives each W1 with its multiple of the real-vs-real floor and the floor's 90% bootstrap
interval (floor_<metric>_p05 / _p95); generate / superres also print w_total and the spectrum
errors worded against their floors (a value at or below its floor reads "at the real-vs-real floor").
"""
import argparse
import json
import sys
from pathlib import Path

from model_code.errors import UserError, run_cli


MODES = ("generate", "superres", "plot", "elbo", "fid", "frechet", "score")
FIELD_KINDS = ("phase", "real")


def _batch_size(text: str):
    """--val_batch_size: a number or the word auto."""
    return "auto" if text == "auto" else int(text)


def parse_args(argv=None):
    from model_code.eval_common import DEFAULT_SEED

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp_name", "--workdir", dest="exp_name", required=True,
                   help="run folder (the one holding model*.pt and config.json)")
    p.add_argument("--mode", required=True, help=" | ".join(MODES) + " (which apply depends on the run)")
    p.add_argument("--checkpoint", default=None,
                   help="checkpoint file in the run folder, or N for snapshots/model.N.pt (0: model.pt); default: "
                        "model.w_total.pt for field runs when present, else model.pt")
    p.add_argument("--savedir", default=None, help="folder holding the evaluation folders (default: <exp_name>/eval)")
    p.add_argument("--tag", "--param_name", dest="tag", default=None,
                   help="name of the evaluation folder instead of the one made from the settings (letters, digits, "
                        ". _ + -); with --mode plot: plot only that evaluation")
    p.add_argument("--overwrite", action="store_true", help="replace an evaluation folder that holds results")
    p.add_argument("--Ntest", "--num_gen", "--n_samples", dest="Ntest", type=int, default=None,
                   help="number of samples, > 0 (default: the run's eval.n_samples; fid: 10000)")
    p.add_argument("--val_batch_size", "--batch_size", dest="val_batch_size", type=_batch_size, default=None,
                   help="generation / evaluation batch size, > 0, or auto: the largest batch whose sampling fits in "
                        "half the free memory (CUDA's, or the host's), measured with a two-level run of the "
                        "sampler; on a CPU also at most 64 MiB of live tensors per batch, where larger batches "
                        "run slower (default: auto where samples are drawn, else the run's eval.batch_size); "
                        "the samples do not depend on it")
    p.add_argument("--factor", type=int, default=2, help="superres: how many times finer the grid is (default 2)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED,
                   help="sample k uses seed SEED + k; elbo: the seed of its noise (default differs from the "
                        "training-time validation seeds)")
    p.add_argument("--sampler", default=None,
                   help="VE / interpolant: annealed_langevin | heun_ode | euler_ode | dpm_solver_2m | euler_maruyama "
                        "| predictor_corrector | edm_stochastic; toy: euler_maruyama | heun_ode | euler_ode "
                        "(default: the run's sampler.name)")
    p.add_argument("--steps", type=int, default=None,
                   help="annealed_langevin: steps per level T; the others: number of sigma levels on the EDM grid; "
                        "toy: reverse-SDE steps; > 0 (default: the run's)")
    p.add_argument("--sigma_min", type=float, default=None,
                   help="samplers other than annealed_langevin: the last level of the EDM grid (default: the run's)")
    p.add_argument("--delta", type=float, default=None, help="levels runs: sampling / ELBO noise std (default: the "
                                                             "run's sampler.delta)")
    p.add_argument("--dataset_split", default=None, choices=("train", "valid", "test", "custom"),
                   help="elbo / fid / frechet: real images from the run's training or validation split, train | valid "
                        "(default valid); fid with --dataset_name_cleanfid: the split of clean-fid's statistics, "
                        "train | test | custom (default train)")
    p.add_argument("--n_images", type=int, default=None, help="elbo: only the first N images (default all)")
    p.add_argument("--fid_weights", default=None,
                   help="fid (computed by clean-fid, which needs torchvision: run it with "
                        ".venv-vision/bin/python): the Inception TorchScript file clean-fid uses, "
                        "inception-2015-12-05.pt (any file name), or any TorchScript module mapping (B, 3, 299, 299) "
                        "images in [0, 255] to (B, F) features; required for fid, never downloaded")
    p.add_argument("--experiment_name", default=None,
                   help="elbo / fid / frechet: also add the result, keyed by --param_name (default: the evaluation "
                        "folder's name), to <results_root>/<dataset_name>/evaluation_results/<experiment_name>/"
                        "<mode>_results.json and a line to <mode>.log there (the inverse-heat code's result tables)")
    p.add_argument("--dataset_name", default=None, help="with --experiment_name: the folder below --results_root "
                                                        "(default: the run's data.dataset)")
    p.add_argument("--results_root", default="runs", help="with --experiment_name: the root of the result tables "
                                                          "(default: runs)")
    p.add_argument("--config", default=None,
                   help="accepted for the published command lines and not needed: the checkpoint holds the config")
    p.add_argument("--dataset_name_cleanfid", default=None,
                   help="fid: compare with clean-fid's reference statistics of this data set (e.g. cifar10) and "
                        "--dataset_split, at the run's image size, instead of the run's own real images: the file "
                        "<name>_clean_<split>_<size>.npz (clean-fid's name; <size> is na for split custom) from "
                        "--fid_stats_dir or clean-fid's own stats folder")
    p.add_argument("--fid_stats_dir", default=None,
                   help="fid with --dataset_name_cleanfid: the folder holding clean-fid's statistics file (default: "
                        "clean-fid's own stats folder; nothing is downloaded)")
    p.add_argument("--data_dir", default=None,
                   help="the data folder of the run's real data (volcano, MNIST / CIFAR-10, image folders); default: "
                        "$DATA_DIR when you set it, else the folder the run's training read (recorded in its "
                        "provenance.json and checkpoints)")
    p.add_argument("--no_ema", action="store_true", help="use the raw weights instead of the EMA weights")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--quiet", action="store_true",
                   help="no progress output (bars on a terminal; plain lines, at most one a minute, in a log)")
    return p.parse_args(argv)


def _check_fid_flags(cli) -> None:
    """--dataset_split names the run's split, or with --dataset_name_cleanfid clean-fid's; resolves its default."""
    import re

    cleanfid = cli.dataset_name_cleanfid
    for flag, value in (("dataset_name_cleanfid", cleanfid), ("fid_stats_dir", cli.fid_stats_dir)):
        if value is not None and cli.mode != "fid":
            raise UserError(f"--{flag} applies to --mode fid only")
    if cli.fid_stats_dir is not None and cleanfid is None:
        raise UserError("--fid_stats_dir holds clean-fid statistics: give --dataset_name_cleanfid NAME too")
    if cleanfid is None:
        cli.dataset_split = cli.dataset_split or "valid"
        if cli.dataset_split not in ("train", "valid"):
            raise UserError(f"--dataset_split {cli.dataset_split} names clean-fid statistics (with "
                            f"--dataset_name_cleanfid); the run's own images are train | valid")
        return
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", cleanfid):
        raise UserError(f"--dataset_name_cleanfid must be a clean-fid data set name (letters, digits, . _ + -); "
                        f"got '{cleanfid}'")
    cli.dataset_split = cli.dataset_split or "train"
    if cli.dataset_split not in ("train", "test", "custom"):
        raise UserError(f"clean-fid statistics have the splits train | test | custom; got --dataset_split "
                        f"{cli.dataset_split}")


def modes_for(kind: str, process: str, elbo: bool = True) -> tuple:
    """The modes that apply to a run of data `kind` and process `process`."""
    if kind in FIELD_KINDS:
        return ("generate", "superres", "plot") if process in ("ve", "interpolant", "adversarial") \
            else ("generate", "plot")
    if kind == "image":
        return ("generate", "elbo", "fid", "frechet") if process == "levels" and elbo else ("generate", "fid",
                                                                                            "frechet")
    return ("score",)


def describe(kind: str, process: str) -> str:
    return f"{'field' if kind in FIELD_KINDS else 'image' if kind == 'image' else 'toy'} ({process})"


def check_applies(mode: str, run_path, kind: str, process: str, elbo: bool = True) -> None:
    modes = modes_for(kind, process, elbo)
    if mode not in modes:
        what = describe(kind, process)
        article = "an" if what[0] in "aeiou" else "a"
        raise UserError(f"--mode {mode} does not apply to {run_path}: it is {article} {what} run; "
                        f"use --mode {'|'.join(modes)}")


def main(argv=None) -> int:
    from model_code.eval_common import check_tag

    cli = parse_args(sys.argv[1:] if argv is None else list(argv))
    if cli.mode not in MODES:
        raise UserError(f"--mode must be one of {', '.join(MODES)}; got '{cli.mode}'")
    for flag in ("Ntest", "val_batch_size", "steps", "n_images"):
        value = getattr(cli, flag)
        if value is not None and value != "auto" and value <= 0:
            raise UserError(f"--{flag} must be a positive integer; got {value}")
    check_tag(cli.tag)
    if cli.experiment_name is not None and cli.mode not in ("elbo", "fid", "frechet"):
        raise UserError(f"--experiment_name adds elbo / fid / frechet results to a table; not --mode {cli.mode}")
    if cli.config is not None:
        print("eval.py: note: --config is not needed here and is ignored (see --help)", file=sys.stderr)
    _check_fid_flags(cli)
    if cli.mode == "superres" and cli.factor < 1:
        raise UserError(f"--factor must be >= 1; got {cli.factor}")
    if cli.mode == "superres":
        import os

        from model_code import memory

        # Before the data set is rebuilt on the finer grid: a huge factor would try to allocate it.
        memory.check_superres(cli.exp_name, cli.factor, cli.Ntest, cli.device, _data_folder(cli, Path(cli.exp_name)))
    if cli.mode == "fid" and not cli.fid_weights:
        raise UserError("--mode fid needs --fid_weights FILE: a local Inception feature extractor (TorchScript, "
                        "e.g. clean-fid's inception-2015-12-05.pt); Inception weights cannot be downloaded here")
    run_path = Path(cli.exp_name)
    if not run_path.is_dir():
        raise UserError(f"run folder not found: {run_path}")
    out_root = Path(cli.savedir) if cli.savedir else run_path / "eval"
    if cli.mode == "plot":
        from model_code.eval_fields import plot

        saved = _saved_kind(run_path)
        if saved is not None:
            check_applies("plot", run_path, *saved)
        return plot(out_root, cli.tag)
    from model_code import threads

    threads.apply()                 # the allocation's CPU threads, not every core of the node
    run, ckpt = load(run_path, cli)
    check_applies(cli.mode, run_path, run.kind, run.process.name,
                  getattr(run.process, "data_levels", None) is not None)
    _warn_if_code_differs(run.state)
    _data_folder(cli, run_path, run)
    from model_code.eval_modes import MODE_FUNCTIONS

    return MODE_FUNCTIONS[cli.mode](cli, run, ckpt, out_root)


def load(run_path: Path, cli):
    """(LoadedRun, checkpoint file name); default: model.w_total.pt of a field run when present, else model.pt."""
    from model_code import build
    from model_code.eval_common import checkpoint_file

    if cli.checkpoint is not None:
        name = checkpoint_file(cli.checkpoint)
    else:
        saved = _saved_kind(run_path)
        field = saved is None or saved[0] in FIELD_KINDS
        name = "model.w_total.pt" if field and (run_path / "model.w_total.pt").is_file() else "model.pt"
    return build.load_run(run_path, name, cli.device, use_ema=not cli.no_ema), name


def _data_folder(cli, run_path: Path, run=None):
    """The data folder of this evaluation (--data_dir, DATA_DIR set by the user, or the one the run's training
    read): set on cli for the modes that load real data; with `run`, also the line that says which and why."""
    import os

    from model_code import build
    from model_code.data import folder

    record = folder.recorded(run_path, None if run is None else run.state)
    cli.data_folder, source, cli.data_replaces_root = folder.for_evaluation(cli.data_dir, os.environ, record)
    used = None if run is None else build.data_folder(run.cfg, cli.data_folder)
    # Said where the real data are read (eval_modes), not before a refusal that reads none.
    cli.data_note = None if used is None else f"eval.py: data: {used} ({source})"
    return cli.data_folder


def _warn_if_code_differs(state: dict) -> None:
    from model_code import provenance

    then, now = state.get("code", "unknown"), provenance.fingerprint(Path(__file__).parent)
    if "unknown" not in (then, now) and then != now:
        print(f"eval.py: warning: this code ({now}) differs from the code that trained the run ({then})",
              file=sys.stderr)


def _saved_kind(run_path: Path):
    """(data kind, process) from the run folder's config.json, or None (no or unreadable config.json)."""
    from model_code.build import IMAGE_DATASETS

    try:
        cfg = json.loads((run_path / "config.json").read_text())
        dataset, process = cfg["data"]["dataset"], cfg["process"]["type"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    kind = "atoms" if dataset == "two_atoms" else "image" if dataset in IMAGE_DATASETS else \
        "phase" if dataset == "volcano" else "real"
    return kind, process


if __name__ == "__main__":
    run_cli(main, "eval.py")
