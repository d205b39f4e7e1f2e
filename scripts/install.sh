#!/usr/bin/env bash
# Installs ScaleZero and its pinned stack into a virtualenv (default: ./.venv).
#
#   bash scripts/install.sh            # create/update ./.venv
#   SCALEZERO_VENV=/path bash ...      # another virtualenv
#   TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu bash ...   # a CPU laptop without a local torch wheel
#
# Order matters (see requirements/pins.in): torch 2.13.0 first, then the locked closure and
# lightzero/DI-engine with --no-deps, so pip never re-resolves torch into a CUDA build.
# Re-running is cheap: a stamp file skips the install when nothing changed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${SCALEZERO_VENV:-$root/.venv}
python_bin=${PYTHON:-$(command -v python3.11 || command -v python3)}

if [ ! -x "$venv/bin/python" ]; then
  echo "[scalezero] creating virtualenv $venv"
  "$python_bin" -m venv "$venv"
fi
py="$venv/bin/python"
"$py" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || {
  echo "[scalezero] error: lightzero 0.2.0 ships only a CPython 3.11 wheel; $venv has $("$py" -V)" >&2
  exit 1
}

stamp="$venv/.scalezero-install-stamp"
fingerprint=$(cat "$root/requirements/pins.in" "$root/requirements/lock.txt" "$root/setup.py" | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$fingerprint" ]; then
  echo "[scalezero] stack already installed in $venv"
  exit 0
fi

pin() { grep -E "^$1==" "$root/requirements/pins.in" | sed 's/\s*#.*//'; }
pip_install() {  # quiet pip; on failure show its output (minus the local-index noise) and stop
  local log; log=$(mktemp)
  if ! "$py" -m pip install --disable-pip-version-check -q "$@" >"$log" 2>&1; then
    grep -v "^WARNING: Location" "$log" >&2; rm -f "$log"; exit 1
  fi
  rm -f "$log"
}
start=$(date +%s)
echo "[scalezero] installing $(pin torch)"
pip_install "$(pin torch)" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
echo "[scalezero] installing the locked stack (--no-deps)"
pip_install --no-deps -r "$root/requirements/lock.txt"
pip_install --no-deps "$(pin lightzero)" "$(pin DI-engine)"
echo "[scalezero] installing the plugin (editable)"
pip_install --no-deps --no-build-isolation -e "$root"
"$py" -m lzero_ext.install_check
echo "$fingerprint" > "$stamp"
echo "[scalezero] done in $(( $(date +%s) - start )) s; venv size $(du -sh "$venv" | cut -f1)"
