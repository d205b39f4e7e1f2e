#!/usr/bin/env bash
# One-shot GPU check (docs/gpu.md): CUDA smoke of model + learner per domain, NCCL DDP with one process,
# atari8 learn-step (fp32 / bf16 / bf16 + compile) and inference timings, a printed table. Under 8 minutes.
#
# On the GPU machine (Python 3.12 with its own CUDA torch, no registry), from the repository root:
#   bash scripts/gpu_check.sh [lzero_ext.gpu_check options]
# Wheels: bash scripts/gpu_wheels.sh fills .whl/ beforehand, on a machine with PyPI (docs/gpu.md).
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
# lightzero ships only a CPython 3.11 wheel: its pure-Python package goes on the path; the compiled MCTS trees
# (cp311 extension modules) do not load elsewhere and the check says so.
for w in .whl/lightzero-*.whl .whl/LightZero-*.whl; do
  "$py" - "$w" "$site" <<'PY'
import sys, zipfile
wheel, site = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    z.extractall(site, [n for n in z.namelist() if n.startswith("lzero/") and not n.endswith(".so")])
PY
done
text_dir=()
[ -d .whl/minilm ] && text_dir=(--text-model-dir .whl/minilm)
export PYTHONPATH="$root:$site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 WANDB_MODE=disabled
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | tee "$out/gpu.txt"
timeout "${SCALEZERO_GPU_CHECK_TIMEOUT:-450}" "$py" -m lzero_ext.gpu_check "${text_dir[@]}" "$@" 2>&1 | tee "$out/gpu_check.log"
status=${PIPESTATUS[0]}
[ "$status" = 124 ] && echo "[gpu_check] stopped at the time limit; the log so far is in $out/gpu_check.log"
exit "$status"
