#!/usr/bin/env python
"""Validation during training: its share of the training time, and whether a fast sampler picks
checkpoints as well as the published annealed Langevin sampler.

Part 1, share (--part share): the published settings (exps/json/rbf-project.json, the project's
UNO, and rbf-copied.json, the published UNO: 120 px fields, batch 16, a record every 100 epochs,
Ntest = 256 validation samples). One thread; the training step (forward + backward of the VE
loss) and one network evaluation under no_grad are timed at batch --batch and scaled linearly
to the published batch and counts (a 120 px step of batch 16 takes about half a minute on one
thread). A record interval trains 100 epochs of --n-examples fields (90 % of them; val_size 0.1).
Validation draws Ntest samples, each with the sampler's network evaluations: the published
annealed Langevin L T + 1 = 1501, the project's default eval.sampler (dpm_solver_2m on 10 levels) 10.

Part 2, selection (--part selection): on the GRF benchmark and on synthetic volcano data (32 px,
exps/json/grf-quality.json with bench_models.py's data overrides), two training runs of the same
steps and seed: validation with the fast sampler (eval.sampler=dpm_solver_2m, the default) and
with Langevin (eval.sampler=null, the config's 60 levels x T = 2). Training is identical (the
validation draws from its own generators; the script checks the final weights are equal), so
the runs differ only in what validation costs and in which checkpoint it selects. Every record
writes a snapshot; each snapshot is then evaluated as a final evaluation would be: the
published sampler (annealed Langevin) on --n-final samples from fresh seeds, w_total against
--n-final real fields (GRF: exact draws; volcano: the validation split). Reported per data set:
- each run's selected checkpoint (model.w_total.pt under each train.select rule, and `latest`,
  the newest checkpoint, as the baseline) and its final w_total, against the best final w_total of
  any snapshot (the oracle);
- the mean final w_total of the checkpoint each rule holds had the run stopped at each record;
- Spearman rank correlation between each run's validation w_total and the final one;
- validation time as a share of the run's time (results.json eval_time / time);
- wall-clock to a stated target: the first record at which the checkpoint the run has selected
  so far has final w_total <= --target-factor x the oracle's, at that record's `time`.

    python scripts/bench_validation.py                     # both parts (about 45 minutes, one core)
    python scripts/bench_validation.py --part share        # part 1 (about 3 minutes)
    python scripts/bench_validation.py --quick             # smoke run of both parts (a minute)
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

FAST = "dpm_solver_2m"
FINAL_SEED = 20_000_000              # final-evaluation samples: seeds never used by validation
REAL_SEED = 30_000_001
SHARE_CONFIGS = {"project UNO (rbf-project.json)": "exps/json/rbf-project.json",
                 "published UNO (rbf-copied.json)": "exps/json/rbf-copied.json"}
PUBLISHED_EPOCHS_PER_RECORD = 100    # record_interval of the published files


# ---------------------------------------------------------------------------- part 1
def _median_time(fn, repeat: int) -> float:
    fn()                                                  # warm-up (FFT plans, allocations)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def share_rows(batch: int, repeat: int, n_examples: int, quick: bool) -> list:
    """Per config: seconds per training sample and per network evaluation, and the validation shares."""
    import torch

    from model_code import build, config, samplers

    import bench_train
    rows = []
    for label, path in SHARE_CONFIGS.items():
        spec = bench_train.Network(label, path, batch=batch)
        if quick:
            spec = bench_train.Network(label, path, ["net.width=4", "net.n_modes=4", "data.resolution=38",
                                                     "net.legacy.fmult=0.25"], batch=1)
        step = bench_train.Step(spec, quick=False)
        cfg = config.load([str(ROOT / path)])
        step_s = _median_time(step, repeat)
        denoiser, x = step.model.eval(), step.x
        sigma = torch.full((len(x),), float(cfg.process.sigma_min))

        def evaluate():
            with torch.no_grad():
                denoiser(x, sigma)

        eval_s = _median_time(evaluate, repeat)
        train_per_sample, eval_per_sample = step_s / len(x), eval_s / len(x)
        n_train = round(n_examples * (1 - cfg.data.val_size))
        train_s = PUBLISHED_EPOCHS_PER_RECORD * n_train * train_per_sample
        row = {"network": label, "config": path, "batch": len(x), "step_s": step_s, "eval_s": eval_s,
               "train_s_per_sample": train_per_sample, "eval_s_per_sample": eval_per_sample,
               "n_train": n_train, "train_s_per_record": train_s, "n_samples": cfg.eval.n_samples}
        for name in ("annealed_langevin", FAST):
            options = build.sampler_setup(cfg, name, cfg.eval.sampler_steps if name == FAST else None)
            extra = {k: v for k, v in options.items() if k not in ("sampler", "sigmas")}
            nfe = samplers.network_evaluations(name, len(options["sigmas"]), extra)
            valid_s = cfg.eval.n_samples * nfe * eval_per_sample
            row[name] = {"nfe": nfe, "valid_s_per_record": valid_s, "share": valid_s / (valid_s + train_s)}
        rows.append(row)
        print(f"   {label}: step {step_s:.3g} s at batch {len(x)}, evaluation {eval_s:.3g} s; validation share "
              f"Langevin {row['annealed_langevin']['share']:.1%}, {FAST} {row[FAST]['share']:.2%}", flush=True)
        del step
    return rows


def share_table(rows: list) -> str:
    lines = ["| network | train s / sample | eval s / sample | train s / record | sampler | NFE | "
             "validation s / record | validation share |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for name in ("annealed_langevin", FAST):
            v = r[name]
            lines.append(f"| {r['network']} | {r['train_s_per_sample']:.3g} | {r['eval_s_per_sample']:.3g} | "
                         f"{r['train_s_per_record']:.4g} | {name} | {v['nfe']} | {v['valid_s_per_record']:.4g} | "
                         f"{v['share']:.2%} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- part 2
def _run_overrides(dataset: str, steps: int, record: int, validation: str, n_valid: int, quick: bool,
                   seed: int = 0) -> list:
    import bench_models
    out = list(bench_models.DATA_OVERRIDES.get(("ve", dataset), []))
    out += [f"seed={seed}", "train.epochs=null", f"train.steps={steps}", f"train.record_interval={record}", f"eval.n_samples={n_valid}",
            f"train.snapshot_interval={record}", f"train.log_interval={record}",
            f"train.checkpoint_interval={steps}", "train.max_minutes=null", "train.threads=1",
            "train.tensorboard=false", f"eval.sampler={FAST if validation == 'fast' else 'null'}",
            "train.figure_interval=null"]
    if quick:
        out += ["net.width=8", "net.n_modes=4", "process.num_levels=10"]
    return out


def train_run(dataset: str, validation: str, run_dir: Path, data_dir: Path, steps: int, record: int, n_valid: int,
              quick: bool, seed: int = 0) -> None:
    if run_dir.exists():
        shutil.rmtree(run_dir)
    cmd = [sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / "exps/json/grf-quality.json"),
           "--savedir", str(run_dir), "--quiet", *_run_overrides(dataset, steps, record, validation, n_valid, quick, seed)]
    print(f"== {dataset}: training with {validation} validation -> {run_dir}", flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1"})


def _rows(run_dir: Path) -> list:
    rows = [json.loads(line) for line in (run_dir / "results.json").read_text().splitlines() if line.strip()]
    return [r for r in rows if "w_total" in r]


def weights_checksum(run_dir: Path, step: int) -> float:
    """A fingerprint of a snapshot's EMA weights (the same training gives the same number)."""
    from model_code import build
    params = build.load_run(run_dir, str(step), "cpu").model.parameters()
    return float(sum(p.detach().abs().double().sum() for p in params))


def final_scores(dataset: str, run_dir: Path, steps: list, n: int, data_dir: Path, reuse: dict | None = None) -> dict:
    """Final w_total of every snapshot: the published sampler, n fresh seeds, n real fields.
    reuse: {step: (checksum, w_total)} of an earlier run of this script, taken where the weights agree."""
    import torch

    from model_code import build
    from model_code.evaluators import FieldStats
    from model_code.processes.base import sample_in_batches

    import bench_models
    first = build.load_run(run_dir, str(steps[0]), "cpu")
    real = bench_models.real_fields(dataset, first.cfg, n, 1, data_dir)
    if dataset == "grf":
        from model_code.data.grf import PeriodicGRF
        field = PeriodicGRF(alpha=first.cfg.data.grf_alpha, tau=first.cfg.data.grf_tau)
        real = field.sample(n, first.shape[-1], torch.Generator().manual_seed(REAL_SEED))
    stats = FieldStats(first.kind, real[:n], seed=0, warn=False)
    scores = {}
    for step in steps:
        earlier = (reuse or {}).get(str(step))
        if earlier is not None and earlier[0] == weights_checksum(run_dir, step):
            scores[step] = earlier[1]
            print(f"   {dataset} step {step}: final w_total {scores[step]:.4g} (same weights as before, reused)")
            continue
        run = build.load_run(run_dir, str(step), "cpu")
        options = build.sampler_setup(run.cfg)            # the run's own (published) sampler
        samples = sample_in_batches(run.process, run.model, [FINAL_SEED + k for k in range(n)], run.shape,
                                    run.device, run.cfg.eval.batch_size, **options)
        scores[step] = stats.values(samples)["w_total"]
        print(f"   {dataset} step {step}: final w_total {scores[step]:.4g}", flush=True)
    return scores


def spearman(a: list, b: list) -> float:
    from scipy.stats import spearmanr
    return float(spearmanr(a, b).statistic) if len(a) > 2 else math.nan


RULES = ("within_noise", "best")
# Not a train.select rule: the last checkpoint, the baseline a selection rule has to beat.
LATEST = "latest"


def replay_selection(rows: list, rule: str) -> list:
    """The step model.w_total.pt holds after each record, as the trainer's rule keeps it."""
    from model_code.trainer import noise_of, select_checkpoint

    best, kept, out = math.inf, None, []
    for r in rows:
        if select_checkpoint(r["w_total"], best, noise_of(r, "w_total"), rule):
            kept = r["step"]
        best = min(best, r["w_total"])
        out.append(kept)
    return out


def selection_summary(dataset: str, runs: dict, final: dict, target_factor: float) -> dict:
    oracle_step = min(final, key=final.get)
    target = target_factor * final[oracle_step]
    out = {"dataset": dataset, "oracle_step": oracle_step, "oracle_final": final[oracle_step], "target": target,
           "runs": {}}
    for validation, rows in runs.items():
        steps = [r["step"] for r in rows]
        valid = [r["w_total"] for r in rows]
        last = rows[-1]
        entry = {"spearman_valid_final": spearman(valid, [final[s] for s in steps]), "time": last["time"],
                 "eval_time": last["eval_time"], "share": last["eval_time"] / last["time"], "rules": {}}
        kept_by_rule = {**{rule: replay_selection(rows, rule) for rule in RULES}, LATEST: steps}
        for rule, kept in kept_by_rule.items():
            reached = next((r["time"] for r, k in zip(rows, kept) if final[k] <= target), None)
            # Had the run stopped at record i, the model kept then would be kept[i]: the mean over
            # every stopping point also scores runs that end after their quality peaked.
            entry["rules"][rule] = {"selected_step": kept[-1], "selected_final": final[kept[-1]],
                                    "time_to_target": reached,
                                    "mean_final_over_stops": sum(final[k] for k in kept) / len(kept)}
        out["runs"][validation] = entry
    return out


def selection_table(summaries: list) -> str:
    lines = ["| data | validation | rule | selected step | final w_total of the selected | oracle (step) | "
             "mean final w_total, stopped at any record | "
             "Spearman valid/final | run time s | validation s | share | time to target s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        for validation, r in s["runs"].items():
            for rule, c in r["rules"].items():
                reach = "not reached" if c["time_to_target"] is None else f"{c['time_to_target']:.0f}"
                lines.append(f"| {s['dataset']} | {validation} | {rule} | {c['selected_step']} | "
                             f"{c['selected_final']:.4g} | {s['oracle_final']:.4g} ({s['oracle_step']}) | "
                             f"{c['mean_final_over_stops']:.4g} | {r['spearman_valid_final']:.2f} | "
                             f"{r['time']:.0f} | {r['eval_time']:.1f} | "
                             f"{r['share']:.1%} | {reach} |")
    return "\n".join(lines)


def same_training(a: Path, b: Path) -> bool:
    import torch

    from model_code import checkpoint
    wa, wb = checkpoint.load(a / "model.pt")["model"], checkpoint.load(b / "model.pt")["model"]
    return all(torch.equal(wa[k], wb[k]) for k in wa)


def selection(out: Path, datasets: list, steps: int, record: int, n_valid: int, n_final: int, target_factor: float,
              quick: bool, reuse: dict, reuse_runs: bool = False, seed: int = 0) -> list:
    import bench_models
    data_dir = out / "data"
    bench_models.make_volcano(data_dir)
    summaries = []
    for dataset in datasets:
        dirs = {v: out / "runs" / f"{dataset}_{v}" for v in ("fast", "langevin")}
        for validation, run_dir in dirs.items():
            if reuse_runs and (run_dir / "results.json").exists() and _rows(run_dir)[-1]["step"] == steps:
                print(f"== {dataset}: reusing {run_dir}", flush=True)
                continue
            train_run(dataset, validation, run_dir, data_dir, steps, record, n_valid, quick, seed)
        identical = same_training(dirs["fast"], dirs["langevin"])
        rows = {v: _rows(d) for v, d in dirs.items()}
        steps_done = [r["step"] for r in rows["fast"]]
        final = final_scores(dataset, dirs["fast"], steps_done, n_final, data_dir, reuse.get(dataset))
        summary = selection_summary(dataset, rows, final, target_factor)
        summary["identical_training"] = identical
        summary["n_valid"], summary["n_final"] = n_valid, n_final
        summary["final_by_step"] = {str(s): (weights_checksum(dirs["fast"], s), final[s]) for s in steps_done}
        summary["validation_by_step"] = {v: {r["step"]: r["w_total"] for r in rs} for v, rs in rows.items()}
        summaries.append(summary)
    return summaries


# ---------------------------------------------------------------------------- CLI
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=("share", "selection", "both"), default="both", help="which part to run")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "bench_validation",
                   help="folder of the runs, the data and bench_validation.json")
    p.add_argument("--batch", type=int, default=4, help="share: batch of the timed step and evaluation")
    p.add_argument("--repeat", type=int, default=3, help="share: timed repetitions (median)")
    p.add_argument("--n-examples", type=int, default=4096,
                   help="share: fields in the published data set (90 %% train); the count the share assumes")
    p.add_argument("--datasets", default="grf,volcano", help="selection: comma-separated, grf and / or volcano")
    p.add_argument("--steps", type=int, default=2400, help="selection: training steps of each run")
    p.add_argument("--record", type=int, default=200, help="selection: steps between validations (and snapshots)")
    p.add_argument("--n-valid", type=int, default=64, help="selection: validation samples per record (eval.n_samples; "
                   "64, grf-quality.json's)")
    p.add_argument("--reuse-runs", action="store_true", help="selection: keep run folders that already trained "
                   "--steps steps (only their selection is computed again)")
    p.add_argument("--reuse-final", type=Path, default=None, help="selection: a bench_validation.json whose final "
                   "evaluations are reused for snapshots with the same weights")
    p.add_argument("--n-final", type=int, default=256, help="selection: samples (and real fields) of each final "
                   "evaluation")
    p.add_argument("--target-factor", type=float, default=1.2,
                   help="selection: the stated target is this multiple of the best final w_total of any snapshot")
    p.add_argument("--seed", type=int, default=0, help="selection: the runs' seed (initialisation, data order, "
                   "training noise): another seed gives a fresh pair of runs")
    p.add_argument("--quick", action="store_true", help="tiny sizes, to check that the script runs")
    p.add_argument("--json", type=Path, default=None, help="write every number here (default: OUT/bench_validation.json)")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch
    torch.set_num_threads(1)
    if args.quick:
        args.steps, args.record, args.n_final, args.n_valid, args.repeat = 40, 20, 16, 16, 1
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"args": {k: str(v) for k, v in vars(args).items()}}
    if args.part in ("share", "both"):
        print("== validation share at the published settings (one thread)", flush=True)
        result["share"] = share_rows(args.batch, args.repeat, args.n_examples, args.quick)
        print(share_table(result["share"]), flush=True)
    if args.part in ("selection", "both"):
        reuse = {}
        if args.reuse_final is not None:
            earlier = json.loads(args.reuse_final.read_text()).get("selection", [])
            reuse = {s["dataset"]: s["final_by_step"] for s in earlier}
        result["selection"] = selection(args.out, args.datasets.split(","), args.steps, args.record, args.n_valid,
                                        args.n_final, args.target_factor, args.quick, reuse, args.reuse_runs,
                                        args.seed)
        print(selection_table(result["selection"]), flush=True)
        for s in result["selection"]:
            print(f"{s['dataset']}: the two runs trained identically: {s['identical_training']}; target "
                  f"{s['target']:.4g} = {args.target_factor:g} x the best final w_total", flush=True)
    path = args.json or args.out / "bench_validation.json"
    path.write_text(json.dumps(result, indent=1, default=str))
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
