#!/usr/bin/env python
"""The inverse-heat code's evaluation script, by its old name: it is eval.py here, with the same flags.

    python evaluate.py ARGS  =  python eval.py ARGS        (python eval.py --help lists every flag)
"""
import sys

from eval import main
from model_code.errors import run_cli

if __name__ == "__main__":
    print("evaluate.py: note: evaluate.py is eval.py here (python eval.py --help); running it", file=sys.stderr)
    run_cli(main, "eval.py")
