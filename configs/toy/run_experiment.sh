#!/usr/bin/env bash
# configs/toy/run_experiment.sh EXPERIMENT_DIR [key=value ...]
# What every configs/toy/<experiment>/run.sh does: merge configs/toy/base_config.yaml with
# EXPERIMENT_DIR/specific_config.yaml and train locally into runs/toy/<experiment>
# (WORKDIR=... overrides the folder; PYTHON=... the interpreter, default the repo's .venv).
# Follow it with: tensorboard --logdir runs/toy --samples_per_plugin images=99999
set -euo pipefail
[ "$#" -ge 1 ] && [ -f "$1/specific_config.yaml" ] || {
    echo "usage: run_experiment.sh EXPERIMENT_DIR [key=value ...] (EXPERIMENT_DIR holds specific_config.yaml)" >&2
    exit 2
}
EXP="$(cd "$1" && pwd)"
shift
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"; else PY=python; fi
fi
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec "$PY" "$ROOT/train.py" --config "$ROOT/configs/toy/base_config.yaml" \
    --config "$EXP/specific_config.yaml" --workdir "${WORKDIR:-$ROOT/runs/toy/$(basename "$EXP")}" "$@"
