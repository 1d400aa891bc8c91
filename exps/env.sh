# exps/env.sh -- the environment every launcher (main.sh, launch_exp.sh,
# launch_eval.sh) sources before it starts Python.  `source exps/env.sh` in an
# interactive shell works too.
#
# This file is sourced, not executed: it must not `exit`, must not change shell
# options (set -e / -u) and must work under `set -u`.
#
# What to change on a cluster
# ---------------------------
# 1. Load modules / activate your environment here, e.g.
#        module load python/3.11 cuda/12.4
#        source ~/miniconda3/etc/profile.d/conda.sh && conda activate fsd
#    or  source /path/to/venv/bin/activate
#    The environment needs the packages of requirements.txt plus a torch
#    that matches the cluster's CUDA (see scripts/setup_venv.sh).
# 2. Point SAVEDIR at scratch space (runs write checkpoints and figures) and
#    DATA_DIR at the dataset (DATA_DIR/subset_128/*.int for volcano), e.g.
#        export SAVEDIR="${SAVEDIR:-$SCRATCH/results/fsd}"
#        export DATA_DIR="${DATA_DIR:-$SCRATCH/datasets/volcano}"
#    Keep the ${VAR:-...} form so that a value set by the caller (CI, tests,
#    `SAVEDIR=... bash main.sh ...`) still wins.
#
# Variables read here
# -------------------
#   SAVEDIR           where run folders go      (default: <repo>/results)
#   DATA_DIR          where the data lives      (default: <repo>/data; an evaluation reads
#                     the folder its run's training recorded unless DATA_DIR was set)
#   PYTHON            interpreter the launchers run (default: `python` on PATH)
#   NO_VENV_ACTIVATE  set to 1 to never activate <repo>/.venv

# Repository root, from this file's own location (absolute at run time).
_fsd_env_dir="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")" && pwd)"
_fsd_repo_root="$(cd "${_fsd_env_dir}/.." && pwd)"

# --- environment -----------------------------------------------------------
# Use the repository's own .venv (created by `make venv` / `make demo`) when
# no other virtualenv or conda environment is active, so that `bash main.sh`
# works right after `make demo`.  conda's auto-activated `base` environment
# does not count as a chosen environment.  Set NO_VENV_ACTIVATE=1 to skip.
if [ "${NO_VENV_ACTIVATE:-0}" != "1" ] \
   && [ -z "${VIRTUAL_ENV:-}" ] \
   && { [ -z "${CONDA_PREFIX:-}" ] || [ "${CONDA_DEFAULT_ENV:-}" = "base" ]; } \
   && [ -f "${_fsd_repo_root}/.venv/bin/activate" ]; then
    # shellcheck disable=SC1091
    . "${_fsd_repo_root}/.venv/bin/activate"
fi

# --- paths -----------------------------------------------------------------
export SAVEDIR="${SAVEDIR:-${_fsd_repo_root}/results}"
export DATA_DIR="${DATA_DIR:-${_fsd_repo_root}/data}"
# The default, named: eval.py reads a run's data from the folder its training recorded unless the
# caller chose DATA_DIR, and this default is no choice.
export DATA_DIR_DEFAULT="${_fsd_repo_root}/data"
# A relative value given by the caller is taken from the current directory and
# made absolute, because the launchers change directory before starting Python.
case "${SAVEDIR}" in /*) ;; *) SAVEDIR="${PWD}/${SAVEDIR}" ;; esac
case "${DATA_DIR}" in /*) ;; *) DATA_DIR="${PWD}/${DATA_DIR}" ;; esac

unset _fsd_env_dir _fsd_repo_root
