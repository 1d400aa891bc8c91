#!/usr/bin/env python
"""Write docs/config.md, the reference of every config key, from the schema (model_code/schema.py).

    python scripts/config_reference.py            # rewrite docs/config.md
    python scripts/config_reference.py --check    # exit 1 if docs/config.md is out of date (the tests run this)
"""
import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HEADER = """# Config reference

Generated from `model_code/schema.py` by `python scripts/config_reference.py`; do not edit by hand.

Every run reads one schema. Config files (JSON or YAML) are merged in order over these defaults,
then `key=value` arguments (`python train.py --config A.yaml B.yaml --savedir DIR train.steps=500`).
Older spellings are aliases, mapped when a file is read (`model_code/config_aliases.py`):

- the published flat JSON keys (`sigma_max` = `process.sigma_max`, `sigma_min` = `process.sigma_min`,
  `L` = `process.num_levels`, `Ntest` = `eval.n_samples`, `d_co_domain` = `net.width`, `mult_dims` =
  `net.channel_multipliers`, `white_noise: true` = `noise.type: white`, `rbf_scale` = `noise.length_scale`,
  `augment: true` = `data.hflip: 0.5` and `data.vflip: 0.5`, `epochs` = `train.epochs`, ...);
- a file of the published code as it is: `sigma_1` / `sigma_L` are the published VARIANCES and become
  `process.sigma_max` / `process.sigma_min` = their square roots; `fmult` and `groups` set
  `net.legacy.*`, and a file that names no `arch` builds the published UNO (`net.type: legacy_uno`);
  `num_freqs_input`, `scale_factor`, `num_workers` (and GANO's `tau`, `alpha`, `sigma_x0`) have no effect.
  Each of these is printed in one line when training starts and recorded in `mapped_keys`;
- the heat-dissipation YAML (`system: levels`; `model.forward` = `process.levels.forward`,
  `training.n_iters` = `train.steps`, `training.eval_freq` = `train.record_interval`, ...);
- the toy YAML (`system: toy`; `train.lr` = `optim.lr`, `regularizer.kind` = `objective.regularizer.kind`, ...).

A file in an older spelling also gets that spelling's old defaults where they differ (a heat YAML
trains 2000 steps with AdamW and a U-Net unless it says otherwise). `config.json` in a run folder
holds the resolved config in the spelling below.
"""


def render() -> str:
    from model_code import config

    lines = [HEADER]
    for name, typ, default, doc in config.field_help():
        if typ == "group":
            depth = name.count(".")
            lines.append(f"\n{'#' * (2 + depth)} `{name}`: {doc}\n")
            lines.append("| key | type | default | meaning |")
            lines.append("|---|---|---|---|")
            continue
        doc = doc.replace("|", "\\|")
        lines.append(f"| `{name}` | {typ.replace('|', ' or ')} | `{default}` | {doc} |")
    lines.insert(1, "\n| key | type | default | meaning |\n|---|---|---|---|")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="only check that docs/config.md is up to date")
    args = p.parse_args(argv)
    path = ROOT / "docs" / "config.md"
    text = render()
    if args.check:
        if not path.exists() or path.read_text() != text:
            print(f"{path.relative_to(ROOT)} is out of date: run python scripts/config_reference.py", file=sys.stderr)
            return 1
        return 0
    path.write_text(text)
    print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
