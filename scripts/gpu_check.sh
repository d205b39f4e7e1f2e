#!/usr/bin/env bash
# One-shot GPU check (docs/gpu.md): builds lightzero 0.2.0's C++ MCTS trees for this Python, then runs the
# smoke preset end to end per domain on CUDA (collection through the C++ tree, replay, learn, evaluation,
# checkpoint, resume), the collectives on NCCL forced at world size 1, and the timings; a printed table.
#
# On the GPU machine (Python 3.12 with its own CUDA torch, Cython and a C++ compiler, no registry), from the
# repository root:
#   bash scripts/gpu_check.sh [lzero_ext.gpu_check options]
# Wheels: bash scripts/gpu_wheels.sh fills .whl/ beforehand, on a machine with PyPI (docs/gpu.md).
# lightzero's sources: LIGHTZERO_SRC, else the first LightZero-v0.2.0-*.tar.gz in .whl/, shared/upstream/ or
# ../shared/upstream/. Jericho's game files: .whl/jericho-games (else the Jericho row checks the model only).
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
py=${PYTHON:-python3}
out=${OUT:-$root/gpu_check_out}
site=${SCALEZERO_GPU_SITE:-/tmp/scalezero_site}
mkdir -p "$out" "$site"
shopt -s nullglob
wheels=()
for w in .whl/*.whl; do
  case "$(basename "$w")" in lightzero-*|LightZero-*) ;; *) wheels+=("$w") ;; esac
done
if [ ${#wheels[@]} -gt 0 ]; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "${wheels[@]}" \
    || { echo "[gpu_check] error: installing the carried wheels failed" >&2; exit 1; }
fi
# lightzero ships only a CPython 3.11 wheel: its pure-Python package goes on the path, and its compiled MCTS
# trees are built below from the v0.2.0 sources for this Python.
for w in .whl/lightzero-*.whl .whl/LightZero-*.whl; do
  "$py" - "$w" "$site" <<'PY'
import sys, zipfile
wheel, site = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    z.extractall(site, [n for n in z.namelist() if n.startswith("lzero/") and not n.endswith(".so")])
PY
done
export PYTHONPATH="$root:$site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 WANDB_MODE=disabled
src=${LIGHTZERO_SRC:-}
if [ -z "$src" ]; then
  for candidate in .whl/LightZero-v0.2.0-*.tar.gz shared/upstream/LightZero-v0.2.0-*.tar.gz \
                   ../shared/upstream/LightZero-v0.2.0-*.tar.gz; do src=$candidate; break; done
fi
suffix=$("$py" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
if [ -f "$site/lzero/mcts/ctree/ctree_muzero/mz_tree$suffix" ]; then
  echo "[gpu_check] lightzero's MCTS trees for this Python are already built in $site"
elif [ -z "$src" ]; then
  echo "[gpu_check] no LightZero-v0.2.0-*.tar.gz found (set LIGHTZERO_SRC): the MCTS trees are not built" >&2
elif ! "$py" -c 'import Cython, setuptools, numpy' 2>/dev/null; then
  echo "[gpu_check] building the MCTS trees needs Cython, setuptools and numpy for $py: not built" >&2
else
  "$py" scripts/build_lightzero_trees.py "$src" "$site" --jobs "$(nproc)" > "$out/build_trees.log" 2>&1
  tail -n 1 "$out/build_trees.log"
fi
extra=()
[ -d .whl/minilm ] && extra+=(--text-model-dir .whl/minilm)
[ -d .whl/jericho-games ] && extra+=(--jericho-dir .whl/jericho-games)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | tee "$out/gpu.txt"
timeout "${SCALEZERO_GPU_CHECK_TIMEOUT:-450}" "$py" -m lzero_ext.gpu_check "${extra[@]}" "$@" 2>&1 | tee "$out/gpu_check.log"
status=${PIPESTATUS[0]}
[ "$status" = 124 ] && echo "[gpu_check] stopped at the time limit; the log so far is in $out/gpu_check.log"
exit "$status"
