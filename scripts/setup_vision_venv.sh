#!/usr/bin/env bash
# scripts/setup_vision_venv.sh -- create / update .venv-vision, the environment of the tests and
# evaluations that need torchvision and clean-fid (tests/vision/, eval.py --mode fid).
#
#   bash scripts/setup_vision_venv.sh      (what `make venv-vision` runs; `make test` depends on it)
#
# Why a second environment: PyPI's torchvision is built against one exact torch release, and
# none imports beside the CPU torch of .venv, which must stay as it is (a cluster's own torch
# is never replaced either). So .venv-vision holds a matching torch / torchvision pair of its
# own plus clean-fid, and takes every other package (numpy, scipy, omegaconf, neuraloperator,
# pytest, ...) from .venv through a .pth file that APPENDS .venv's site-packages to its
# sys.path: torch resolves here first, the rest from .venv, nothing is installed twice.
#
# Steps (skipped in about 0.1 s while .venv-vision/.vision.stamp matches this script):
#   1. python -m venv .venv-vision            with .venv's base interpreter (same ABI as .venv's packages)
#   2. the .pth file pointing at .venv's site-packages
#   3. pip install torch / torchvision        the pair for this machine's architecture (below);
#                                             pip sees .venv's packages through the .pth, so only
#                                             what they lack is installed, into .venv-vision only
#   4. pip install --no-deps clean-fid        its wheel declares torch and torchvision, which must
#                                             not be resolved again
#   5. one import of everything, from the right place
#
# The pairs: x86_64 torch 2.14.1 + torchvision 0.29.1 (a CUDA build; it runs on the CPU too,
# about 5 GB, about a minute to install); aarch64 torch 2.9.1 + torchvision 0.24.1 (CPU).
# Environment: VISION_TORCH / VISION_TORCHVISION (other pins), VISION_PIP_ARGS (extra pip
# arguments, e.g. an --index-url), VENV_VISION_FORCE=1 (ignore the stamp).

set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

MAIN=".venv"
VENV=".venv-vision"
PY="${VENV}/bin/python"
STAMP="${VENV}/.vision.stamp"
PTH_NAME="zz_main_venv.pth"
CLEANFID_SPEC="clean-fid==0.1.35"

say() { echo "setup_vision_venv: $*"; }
die() { echo "setup_vision_venv: error: $*" >&2; exit 1; }

case "$(uname -m)" in
    x86_64|amd64)  pair=("torch==2.14.1" "torchvision==0.29.1") ;;
    aarch64|arm64) pair=("torch==2.9.1" "torchvision==0.24.1") ;;
    *)             pair=("" "") ;;
esac
TORCH_SPEC="${VISION_TORCH:-${pair[0]}}"
TV_SPEC="${VISION_TORCHVISION:-${pair[1]}}"
[ -n "${TORCH_SPEC}" ] && [ -n "${TV_SPEC}" ] \
    || die "no known torch / torchvision pair for $(uname -m); set VISION_TORCH and VISION_TORCHVISION"

[ -x "${MAIN}/bin/python" ] || die "${MAIN} is missing: run 'make venv' (scripts/setup_venv.sh) first"

# The stamp covers the pins, this script and where .venv lives: a moved checkout or a new pin
# rebuilds, anything else is the fast path.
want="$( { sha256sum scripts/setup_vision_venv.sh | cut -d' ' -f1; \
           echo "${TORCH_SPEC} ${TV_SPEC} ${CLEANFID_SPEC}"; readlink -f "${MAIN}"; } | sha256sum | cut -d' ' -f1)"
if [ "${VENV_VISION_FORCE:-0}" != "1" ] && [ -x "${PY}" ] && [ "$(cat "${STAMP}" 2>/dev/null || true)" = "${want}" ]; then
    say "${VENV} is up to date"
    exit 0
fi
rm -f "${STAMP}"

site_of() { "$1" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])"; }
main_site="$(site_of "${MAIN}/bin/python")"
base_python="$("${MAIN}/bin/python" -c "import sys; print(sys._base_executable)")"
main_version="$("${MAIN}/bin/python" -c "import sys; print(sys.version_info[:2])")"

# 1. the venv, rebuilt when .venv moved to another Python (its compiled packages would not load)
vision_version="$("${PY}" -c "import sys; print(sys.version_info[:2])" 2>/dev/null || true)"
if [ -x "${PY}" ] && [ "${vision_version}" != "${main_version}" ]; then
    say "${VENV} has another Python than ${MAIN}: recreating it"
    rm -rf "${VENV}"
fi
if [ ! -x "${PY}" ]; then
    say "creating ${VENV} (Python of ${MAIN}: ${base_python})"
    "${base_python}" -m venv "${VENV}"
fi

# 2. .venv's packages, after .venv-vision's own (a .pth line is appended to sys.path)
vision_site="$(site_of "${PY}")"
echo "${main_site}" > "${vision_site}/${PTH_NAME}"

# 3. + 4. torch / torchvision, then clean-fid alone.  .venv's torch is visible to pip through
# the .pth but lies outside this environment, so pip installs the pinned one here and leaves
# .venv's alone; that is checked below all the same.
main_torch_before="$(ls -d "${main_site}"/torch-*.dist-info 2>/dev/null || true)"
say "installing ${TORCH_SPEC} ${TV_SPEC} (the pair for $(uname -m)) and ${CLEANFID_SPEC}"
# shellcheck disable=SC2086
"${PY}" -m pip install --quiet --disable-pip-version-check ${VISION_PIP_ARGS:-} "${TORCH_SPEC}" "${TV_SPEC}"
# shellcheck disable=SC2086
"${PY}" -m pip install --quiet --disable-pip-version-check --no-deps ${VISION_PIP_ARGS:-} "${CLEANFID_SPEC}"
[ "$(ls -d "${main_site}"/torch-*.dist-info 2>/dev/null || true)" = "${main_torch_before}" ] \
    || die "the torch of ${MAIN} changed during the install; run 'make venv' to restore it"

# 5. everything imports, torch from here and the rest from .venv
"${PY}" - "${TORCH_SPEC#torch==}" "${vision_site}" <<'EOF'
import sys
import torch, torchvision, cleanfid.fid, numpy, scipy, omegaconf, neuralop, PIL, pytest  # noqa: F401
want, here = sys.argv[1], sys.argv[2]
if not torch.__version__.startswith(want) or not torch.__file__.startswith(here):
    sys.exit(f"torch {torch.__version__} from {torch.__file__}: expected {want} from {here}")
torchvision.datasets.MNIST, torchvision.datasets.CIFAR10
EOF

echo "${want}" > "${STAMP}"
say "done"
