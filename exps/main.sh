#!/usr/bin/env bash
# exps/main.sh -- start one training run.
#
#   RUN_LOCAL=1 bash main.sh sbgm <name> <config> [<config> ...] [key=value ...]   run in place
#   RUN_LOCAL=1 bash main.sh gano <name> <config> [...]   the GANO baseline (process.type=adversarial)
#               bash main.sh sbgm <name> <config> [<config> ...] [key=value ...]   copy code, run the copy
#               bash main.sh <name> <config> [...]                                 same, method = sbgm
#
# <config> is any experiment file of any system: exps/json/*.json (the published form),
# configs/**/*.yaml (heat / linear maps, the toy, the starter interpolants, ...); several
# files are merged in order (the toy: base_config.yaml then <experiment>/specific_config.yaml).
#
# The run folder is $SAVEDIR/<name>/<id>, where <id> is $SLURM_JOB_ID when set
# (so a requeued Slurm job finds and resumes its own folder) and otherwise a
# fresh timestamp id YYYYmmdd-HHMMSS-<pid>.  SAVEDIR / DATA_DIR come from
# env.sh.  Each <config> is looked up from the current directory first, then from
# exps/ (so both `cd exps; bash main.sh sbgm x json/q.json` and
# `bash exps/main.sh sbgm x exps/json/q.json` work).  Extra arguments go to
# train.py unchanged (key=value overrides, --quiet).
#
# Without RUN_LOCAL (what a Slurm job should do) the working tree is copied to
# <run>/code (git-tracked plus untracked, non-ignored files), the commit and
# the uncommitted changes are recorded (git_commit.txt, git_diff.patch,
# git_status.txt) and train.py runs from that copy, so editing the checkout
# while jobs wait in the queue does not change them.  On a requeue the
# existing copy is reused.
#
# Python (or srun, for a job of several tasks) replaces this shell (exec):
# signals reach it and its exit status is the script's exit status.

set -euo pipefail

METHODS="sbgm gano"
EXPS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "${EXPS_DIR}/.." && pwd)"

usage() {
    echo "usage: [RUN_LOCAL=1] bash main.sh [sbgm|gano] <experiment name> <config file> [<config file> ...] [key=value ...]" >&2
    exit 2
}
die() {
    echo "main.sh: $*" >&2
    exit 2
}

is_method() {
    case " ${METHODS} " in *" $1 "*) return 0 ;; *) return 1 ;; esac
}

# ---- arguments --------------------------------------------------------------
[ "$#" -ge 1 ] || usage
case "$1" in -h|--help) usage ;; esac
if is_method "$1"; then
    METHOD="$1"
    shift
else
    METHOD="sbgm"   # the seed-000 form: main.sh <name> <json>
fi
[ "$#" -ge 2 ] || usage
NAME="$1"
JSON="$2"
shift 2
case "${NAME}" in
    ""|.|..|-*|*/*|*" "*) die "bad experiment name '${NAME}' (no '/', spaces or leading '-')" ;;
esac

# The config files: every argument after the name that ends in .json / .yaml / .yml / .py (merged in
# order by train.py); each absolute, or relative to the cwd, or relative to exps/.
CONFIGS=()
resolve_config() {
    local f="$1"
    if [ -f "${f}" ]; then
        echo "$(cd "$(dirname "${f}")" && pwd)/$(basename "${f}")"
    elif [ "${f#/}" = "${f}" ] && [ -f "${EXPS_DIR}/${f}" ]; then
        echo "$(cd "$(dirname "${EXPS_DIR}/${f}")" && pwd)/$(basename "${f}")"
    elif [ "${f%.py}" != "${f}" ]; then
        # The heat paper's configs/<set>/*.py are .yaml files here (train.py maps them the same way).
        local y
        for y in "${f%.py}.yaml" "${f%.py}.yml" "${f%.py}.json"; do
            if [ -f "${y}" ] || { [ "${y#/}" = "${y}" ] && [ -f "${EXPS_DIR}/${y}" ]; }; then
                echo "main.sh: note: ${f} is ${y} here" >&2
                resolve_config "${y}"
                return
            fi
        done
        die "config file '${f}' not found (looked in $(pwd) and ${EXPS_DIR}; the configs here are .yaml / .json)"
    else
        die "config file '${f}' not found (looked in $(pwd) and ${EXPS_DIR})"
    fi
}
CONFIGS+=("$(resolve_config "${JSON}")")
while [ "$#" -gt 0 ]; do
    case "$1" in
        *.json|*.yaml|*.yml|*.py) CONFIGS+=("$(resolve_config "$1")"); shift ;;
        *) break ;;
    esac
done

# ---- environment and run folder ---------------------------------------------
# shellcheck source=env.sh
source "${EXPS_DIR}/env.sh"
PYTHON="${PYTHON:-python}"

if [ -n "${SLURM_JOB_ID:-}" ]; then
    RUN_ID="${SLURM_JOB_ID}"
else
    RUN_ID="$(date +%Y%m%d-%H%M%S)-$$"
fi
RUN_DIR="${SAVEDIR}/${NAME}/${RUN_ID}"
echo "run folder: ${RUN_DIR}"

# A batch job with several tasks (sbatch --ntasks=N) starts one train.py per task
# with srun; inside an srun step (or without Slurm) python starts directly.
LAUNCHER=()
if [ "${SLURM_NTASKS:-1}" -gt 1 ] && [ -z "${SLURM_STEP_NUM_TASKS:-}" ]; then
    LAUNCHER=(srun --kill-on-bad-exit=1 --ntasks="${SLURM_NTASKS}")
    echo "starting ${SLURM_NTASKS} processes with srun"
fi

# gano trains the adversarial baseline on the same config (the network is its generator);
# a key=value given after the config files still wins.
METHOD_ARGS=()
if [ "${METHOD}" = "gano" ]; then
    METHOD_ARGS=(process.type=adversarial)
fi

case "${RUN_LOCAL:-}" in
    ""|0|false|no) RUN_LOCAL=0 ;;
    *) RUN_LOCAL=1 ;;
esac

if [ "${RUN_LOCAL}" = 1 ]; then
    cd "${REPO_ROOT}"
    exec "${LAUNCHER[@]}" "${PYTHON}" train.py --config "${CONFIGS[@]}" --savedir "${RUN_DIR}" ${METHOD_ARGS[@]+"${METHOD_ARGS[@]}"} "$@"
fi

# ---- copy the code into the run folder ----------------------------------------
# train.py holds the run folder (one writer) and creates it; only the code copy below is
# written before it starts. A folder made here for that copy is removed again by train.py
# if its first start fails (RUN_DIR_FROM_LAUNCHER), like a folder train.py made itself.
if [ ! -d "${RUN_DIR}" ]; then
    mkdir -p "${RUN_DIR}"
    export RUN_DIR_FROM_LAUNCHER=1
fi
CODE_DIR="${RUN_DIR}/code"
if [ -d "${CODE_DIR}" ]; then
    echo "reusing the code copy in ${CODE_DIR} (requeued or resumed run)"
else
    rm -rf "${CODE_DIR}.partial"   # left over from an interrupted copy
    mkdir -p "${CODE_DIR}.partial"
    if git -C "${REPO_ROOT}" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        git -C "${REPO_ROOT}" rev-parse HEAD > "${RUN_DIR}/git_commit.txt" 2>/dev/null \
            || echo "no commit yet" > "${RUN_DIR}/git_commit.txt"
        git -C "${REPO_ROOT}" diff HEAD > "${RUN_DIR}/git_diff.patch" 2>/dev/null \
            || git -C "${REPO_ROOT}" diff > "${RUN_DIR}/git_diff.patch"
        git -C "${REPO_ROOT}" status --porcelain > "${RUN_DIR}/git_status.txt"
        # Tracked files plus untracked files that are not ignored (a new module
        # or json that is not committed yet), minus deleted files and anything
        # under SAVEDIR when SAVEDIR lies inside the checkout.
        rel_savedir=""
        case "${SAVEDIR}/" in "${REPO_ROOT}/"*) rel_savedir="${SAVEDIR#"${REPO_ROOT}"/}" ;; esac
        (cd "${REPO_ROOT}" \
            && git ls-files -z --cached --others --exclude-standard \
            | while IFS= read -r -d '' f; do
                  if [ -n "${rel_savedir}" ]; then
                      case "${f}" in "${rel_savedir}"/*) continue ;; esac
                  fi
                  if [ -e "${f}" ] || [ -L "${f}" ]; then printf '%s\0' "${f}"; fi
              done \
            | tar --null --no-recursion -T - -cf -) \
            | tar -xf - -C "${CODE_DIR}.partial"
    else
        echo "not a git checkout" > "${RUN_DIR}/git_commit.txt"
        : > "${RUN_DIR}/git_diff.patch"
        excludes=(--exclude=./.venv --exclude=./results --exclude=./data --exclude=./runs
                  --exclude=./.git --exclude='__pycache__' --exclude='*.pyc')
        case "${SAVEDIR}/" in
            "${REPO_ROOT}/"*) excludes+=("--exclude=./${SAVEDIR#"${REPO_ROOT}"/}") ;;
        esac
        (cd "${REPO_ROOT}" && tar "${excludes[@]}" -cf - .) | tar -xf - -C "${CODE_DIR}.partial"
    fi
    mv "${CODE_DIR}.partial" "${CODE_DIR}"
fi

# Use the copied config files when they are part of the copied tree, so a requeued
# job reads the configuration it was submitted with.
for i in "${!CONFIGS[@]}"; do
    case "${CONFIGS[$i]}" in
        "${REPO_ROOT}/"*)
            if [ -f "${CODE_DIR}/${CONFIGS[$i]#"${REPO_ROOT}"/}" ]; then
                CONFIGS[$i]="${CODE_DIR}/${CONFIGS[$i]#"${REPO_ROOT}"/}"
            fi
            ;;
    esac
done

cd "${CODE_DIR}"
exec "${LAUNCHER[@]}" "${PYTHON}" train.py --config "${CONFIGS[@]}" --savedir "${RUN_DIR}" ${METHOD_ARGS[@]+"${METHOD_ARGS[@]}"} "$@"
