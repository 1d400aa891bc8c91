"""Write a synthetic volcano InSAR data set in the real .int format.

    python scripts/make_volcano.py --out data --n 256 --seed 0

writes DATA_DIR/subset_128/synthetic/00000.int ... (128 x 128 little-endian complex64),
which `model_code.data.volcano.load_volcano(DATA_DIR)` reads like the real data. Each
file is a wrapped interferogram: Mogi point source seen along a satellite line of
sight, atmospheric delay, orbital ramp and decorrelation noise.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Generate synthetic wrapped InSAR interferograms (Mogi source + atmosphere + "
        "decorrelation) as DATA_DIR/subset_128/synthetic/<index>.int files.",
    )
    parser.add_argument(
        "--out", required=True, type=pathlib.Path, metavar="DATA_DIR",
        help="data folder to write into; files go to DATA_DIR/subset_128/synthetic/",
    )
    parser.add_argument("--n", type=int, default=256, help="number of interferograms to write (default: 256)")
    parser.add_argument(
        "--seed", type=int, default=0,
        help="random seed; file i depends only on (seed, i) (default: 0)",
    )
    parser.add_argument(
        "--force", action="store_true",
        help="replace existing synthetic .int files (never real ones) instead of refusing",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no summary line")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    # Imported after parsing so that --help answers without loading torch.
    sys.path.insert(0, str(REPO_ROOT))
    from model_code.data.volcano import write_synthetic_dataset
    from model_code.errors import UserError

    try:
        paths = write_synthetic_dataset(
            args.out, n=args.n, seed=args.seed, overwrite=args.force, progress=not args.quiet
        )
    except UserError as err:
        print(f"make_volcano.py: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"make_volcano.py: error: cannot write under {args.out}: {err.strerror or err}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(f"wrote {len(paths)} interferograms to {paths[0].parent}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO_ROOT))
    from model_code.errors import run_cli

    run_cli(main, "make_volcano.py")
