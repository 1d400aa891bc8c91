#!/usr/bin/env bash
# exps/launch_exp.sh -- submit a training run to Slurm.
#
#   sbatch launch_exp.sh sbgm <experiment name> <config file> [<config file> ...] [key=value ...]
#   sbatch launch_exp.sh gano <experiment name> <config file> [...]   (the GANO baseline)
#   bash   launch_exp.sh sbgm <experiment name> <config file> [...] [key=value ...]   (no Slurm)
#
# The job runs `bash main.sh "$@"` (see main.sh): the code is copied into
# $SAVEDIR/<name>/$SLURM_JOB_ID/code and train.py runs from there.  Without
# Slurm the run id is a fresh timestamp.  Prefix RUN_LOCAL=1 to run in place.
#
# The #SBATCH lines below are examples: edit them for your cluster.  Options
# given on the sbatch command line override them, e.g.
#   sbatch --time=12:00:00 --gres=gpu:a100:1 launch_exp.sh sbgm rbf json/rbf.json
#
# Job name shown by squeue (default; `sbatch -J NAME` overrides it).
#SBATCH --job-name=fsd-train
# Log file, relative to the directory sbatch was called from (%x = job name, %j = job id).
#SBATCH --output=slurm-%x-%j.out
# Wall-clock limit (HH:MM:SS or D-HH:MM:SS): the published runs trained for days.
#SBATCH --time=24:00:00
# One GPU; name a type if your cluster wants one (gpu:a100:1). A node without
# GPUs refuses this header: submit with `sbatch --gres=none ...` there.
#SBATCH --gres=gpu:1
# Host memory for the job (data loading, plots); 16G is plenty for volcano at 128 px.
#SBATCH --mem=16G
# CPU cores for the job (data loading and torch threads).
#SBATCH --cpus-per-task=4
# Preemption: SIGUSR1 to this batch shell 300 s before the time limit (Slurm may
# send it up to a minute early); train.py then writes model.pt and exits 3, and
# this script requeues the job (see the end of this file).
#SBATCH --signal=B:USR1@300
# Requeueable: the requeued job keeps its id, so it resumes from model.pt in the
# same run folder ($SAVEDIR/<name>/<job id>).
#SBATCH --requeue
# A requeued job appends to its log instead of truncating it.
#SBATCH --open-mode=append
# Several processes: `sbatch --ntasks=N ...`; main.sh then starts train.py with
# srun, one process per task (torch.distributed over gloo on CPU, nccl on GPU).
# Add your cluster's partition/account/QoS here if it needs them, e.g.
# #SBATCH --partition=long
# #SBATCH --account=my-lab

set -euo pipefail

# Find exps/ (where main.sh lives).  Under sbatch this script runs from a copy
# in Slurm's spool directory, so its own location is useless there: use the
# directory sbatch was called from ($SLURM_SUBMIT_DIR: the exps/ folder or the
# repository root).
find_exps_dir() {
    local here
    here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
    for d in "${here}" "${SLURM_SUBMIT_DIR:-}" "${SLURM_SUBMIT_DIR:-}/exps"; do
        if [ -n "${d}" ] && [ -f "${d}/main.sh" ] && [ -f "${d}/env.sh" ]; then
            (cd "${d}" && pwd)
            return 0
        fi
    done
    echo "launch_exp.sh: cannot find exps/main.sh; run sbatch from the exps/ folder or the repository root" >&2
    return 2
}
EXPS_DIR="$(find_exps_dir)" || exit 2

# Stay in the submit directory, so that a relative config path means what it
# meant where sbatch was typed; main.sh also looks config files up under exps/.
if [ -n "${SLURM_SUBMIT_DIR:-}" ] && [ -d "${SLURM_SUBMIT_DIR}" ]; then
    cd "${SLURM_SUBMIT_DIR}"
fi

# Exit status of train.py after a stop signal: model.pt holds the state to resume from.
PREEMPTED_EXIT=3

# Not exec: this shell stays to forward the signals Slurm sends it (scancel
# --signal=USR1 --batch, --signal=B:USR1@N) to train.py (or to srun, which passes
# them to every task), and to requeue the job once train.py has checkpointed.
bash "${EXPS_DIR}/main.sh" "$@" &
child=$!
forward() { kill -s "$1" "${child}" 2>/dev/null || true; }
trap 'forward USR1' USR1
trap 'forward TERM' TERM
trap 'forward INT' INT
set +e
while :; do
    wait "${child}"
    status=$?
    # a trapped signal interrupts `wait` (status > 128) while the child still runs
    if kill -0 "${child}" 2>/dev/null; then continue; fi
    break
done
set -e

if [ "${status}" = "${PREEMPTED_EXIT}" ] && [ -n "${SLURM_JOB_ID:-}" ]; then
    if scontrol requeue "${SLURM_JOB_ID}"; then
        echo "launch_exp.sh: checkpoint written; job ${SLURM_JOB_ID} requeued (it resumes from model.pt)"
        exit 0
    fi
    echo "launch_exp.sh: checkpoint written but 'scontrol requeue ${SLURM_JOB_ID}' failed; resubmit to resume" >&2
fi
exit "${status}"
