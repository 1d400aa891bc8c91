#!/usr/bin/env bash
# exps/launch_eval.sh -- evaluate a finished (or running) training run.
#
#   bash launch_eval.sh sbgm <experiment name>/<id> --mode=generate [--checkpoint=model.w_total.pt] [eval.py flags]
#   bash launch_eval.sh sbgm <experiment name>/<id> --mode=superres --factor=2
#   bash launch_eval.sh sbgm <experiment name>/<id> --mode=plot
#   sbatch launch_eval.sh sbgm <experiment name>/<id> --mode=generate
#   (modes by run: generate | superres | plot for field runs; generate | elbo | fid | frechet for image runs;
#    score for toy runs; see python eval.py --help)
#
# Runs, from the repository root:
#   python eval.py --exp_name=$SAVEDIR/<name>/<id> --savedir=$SAVEDIR/<name>/<id>/eval <flags>
# Each evaluation writes its own folder below eval/, named after its settings
# (e.g. eval/generate-w_total-annealed_langevin-T2/, or --tag=NAME); one that
# already holds samples is refused unless --overwrite; --mode=plot plots every
# evaluation folder (or the one given with --tag=NAME).
# <name>/<id> may also be an absolute run folder.  Given only <name>, the most
# recent run under $SAVEDIR/<name> is used (and printed).  Flags after the run
# go to eval.py unchanged (a later --savedir=... overrides the default).
# The method (sbgm or gano) may be left out (seed-000 form): the run's checkpoint says what it is.
#
# The #SBATCH lines are examples: edit them for your cluster (see launch_exp.sh).
# Job name shown by squeue.
#SBATCH --job-name=fsd-eval
# Log file, relative to the directory sbatch was called from.
#SBATCH --output=slurm-%x-%j.out
# Wall-clock limit: generating a few hundred samples takes minutes on a GPU.
#SBATCH --time=02:00:00
# One GPU (`sbatch --gres=none` on a node without GPUs).
#SBATCH --gres=gpu:1
# Host memory.
#SBATCH --mem=16G
# CPU cores.
#SBATCH --cpus-per-task=4

set -euo pipefail

METHODS="sbgm gano"
usage() {
    echo "usage: bash launch_eval.sh [sbgm|gano] <experiment name>/<id> --mode=generate|superres|plot|elbo|fid|frechet|score [eval.py flags]" >&2
    exit 2
}
die() {
    echo "launch_eval.sh: $*" >&2
    exit 2
}

# Find exps/ (under sbatch this file is a copy in Slurm's spool directory).
EXPS_DIR=""
_here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
for d in "${_here}" "${SLURM_SUBMIT_DIR:-}" "${SLURM_SUBMIT_DIR:-}/exps"; do
    if [ -n "${d}" ] && [ -f "${d}/env.sh" ] && [ -f "${d}/main.sh" ]; then
        EXPS_DIR="$(cd "${d}" && pwd)"
        break
    fi
done
[ -n "${EXPS_DIR}" ] || die "cannot find exps/env.sh; run from the exps/ folder or the repository root"
REPO_ROOT="$(cd "${EXPS_DIR}/.." && pwd)"

[ "$#" -ge 1 ] || usage
case "$1" in -h|--help) usage ;; esac
METHOD="sbgm"
case " ${METHODS} " in *" $1 "*) METHOD="$1"; shift ;; esac
[ "$#" -ge 1 ] || usage
RUN="$1"
shift
case "${RUN}" in -*|"") usage ;; esac

# shellcheck source=env.sh
source "${EXPS_DIR}/env.sh"
PYTHON="${PYTHON:-python}"

case "${RUN}" in
    /*) RUN_DIR="${RUN%/}" ;;
    *)  RUN_DIR="${SAVEDIR}/${RUN%/}" ;;
esac
[ -d "${RUN_DIR}" ] || die "no run folder ${RUN_DIR}"
# Only <name> given: take the newest run folder below it that has a config.json.
if [ ! -f "${RUN_DIR}/config.json" ]; then
    latest="$(ls -1dt "${RUN_DIR}"/*/config.json 2>/dev/null | head -n 1 || true)"
    if [ -n "${latest}" ]; then
        RUN_DIR="$(dirname "${latest}")"
        echo "launch_eval.sh: using the most recent run ${RUN_DIR}"
    fi
fi

cd "${REPO_ROOT}"
exec "${PYTHON}" eval.py --exp_name="${RUN_DIR}" --savedir="${RUN_DIR}/eval" "$@"
