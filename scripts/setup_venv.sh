#!/usr/bin/env bash
# scripts/setup_venv.sh -- create / update the repository's .venv.
#
#   bash scripts/setup_venv.sh          (what `make venv` runs; every make target depends on it)
#
# Steps (each skipped when already done, so a repeat call takes about a second):
#   1. python3 -m venv .venv                  if .venv/bin/python is missing
#   2. pip install torch==2.13.0              only if `import torch` fails in .venv
#   3. install requirements.txt               with uv when available, else pip;
#                                             skipped while .venv/.requirements.stamp
#                                             holds the hash of requirements.txt
#
# Why torch is handled apart: an unpinned `torch` (or a range admitting a newer
# release) pulls the newest CUDA build with several GB of CUDA packages, and on a
# GPU cluster the site's own CUDA torch must not be replaced.  So torch is
# installed only when it cannot be imported, pinned to the CPU build the CPU
# machines of this project use.  On a cluster that provides torch, either
# create the venv yourself first with access to it
#     python3 -m venv --system-site-packages .venv
# or activate your conda/venv and install requirements.txt there (see exps/env.sh).
# Extra pip arguments for the torch install can be given in TORCH_PIP_ARGS,
# e.g. TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu" to get
# the CPU wheel from PyTorch's own index.
#
# Environment: VENV_PYTHON (interpreter that creates the venv, default python3),
#              USE_UV=0 (never use uv).

set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV_DIR=".venv"
PY="${VENV_DIR}/bin/python"
REQ="requirements.txt"
STAMP="${VENV_DIR}/.requirements.stamp"
TORCH_SPEC="torch==2.13.0"
UV_SPEC="uv==0.13.8"

say() { echo "setup_venv: $*"; }

# 1. the venv
if [ ! -x "${PY}" ]; then
    say "creating ${VENV_DIR}"
    "${VENV_PYTHON:-python3}" -m venv "${VENV_DIR}"
fi

want="$(sha256sum "${REQ}" | cut -d' ' -f1)"
have="$(cat "${STAMP}" 2>/dev/null || true)"
# Fast path (about 0.1 s): requirements unchanged since the last install and a
# torch package present.  `import torch` itself takes seconds, so it is only
# tried below, when something has to be installed anyway.
if [ "${want}" = "${have}" ] \
   && "${PY}" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is None)" 2>/dev/null; then
    say "${VENV_DIR} is up to date"
    exit 0
fi

# 2. torch, only when it cannot be imported
if ! "${PY}" -c "import torch" >/dev/null 2>&1; then
    say "installing ${TORCH_SPEC} (CPU build; see the comment in this script)"
    # shellcheck disable=SC2086
    "${PY}" -m pip install --quiet ${TORCH_PIP_ARGS:-} "${TORCH_SPEC}"
fi

# 3. requirements.txt, unless unchanged since the last successful install
if [ "${want}" = "${have}" ]; then
    say "${VENV_DIR} is up to date"
    exit 0
fi

installed=0
if [ "${USE_UV:-1}" != "0" ]; then
    UV=""
    if command -v uv >/dev/null 2>&1; then
        UV="$(command -v uv)"
    elif [ -x "${VENV_DIR}/bin/uv" ]; then
        UV="${VENV_DIR}/bin/uv"
    elif "${PY}" -m pip install --quiet "${UV_SPEC}" >/dev/null 2>&1 && [ -x "${VENV_DIR}/bin/uv" ]; then
        UV="${VENV_DIR}/bin/uv"
    fi
    if [ -n "${UV}" ]; then
        say "installing ${REQ} with uv"
        # --compile-bytecode: uv leaves no .pyc behind otherwise, and where PYTHONDONTWRITEBYTECODE
        # is set every later start of python recompiles the libraries (seconds per process).
        if "${UV}" pip install --quiet --compile-bytecode --python "${PY}" -r "${REQ}"; then
            installed=1
        else
            say "uv failed; falling back to pip"
        fi
    fi
fi
if [ "${installed}" = 0 ]; then
    say "installing ${REQ} with pip (slower; install uv to speed this up)"
    "${PY}" -m pip install --quiet -r "${REQ}"
fi

echo "${want}" > "${STAMP}"
say "done"
