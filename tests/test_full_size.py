"""The paper presets at full model size on the CPU: build, one collection round, 2 learner iterations (slow).

Each preset runs in its own process (``python -m lzero_ext.bench full_size``), so memory is freed between
presets; pytest's ``--durations`` reports the time of each.
"""
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lzero_ext.envs.jericho_env import GAME_DIR_ENV_VAR, game_dir
from zoo.jericho.config.scalezero_jericho_multitask_config import JERICHO4

REPO = Path(__file__).resolve().parents[1]
# Stored parameters of the transformer (the MoE backbone): 63.7 M per 768-wide layer with 8 SwiGLU experts and
# the GELU shared expert, so the 4-layer presets give the paper's ~255 M stored / ~57 M active per token.
BACKBONE = {'atari8': (127.436, 28.345), 'atari26': (254.870, 56.689), 'dmc18': (254.870, 56.689),
            'jericho4': (127.436, 28.345)}
TASKS = {'atari8': 8, 'atari26': 26, 'dmc18': 18, 'jericho4': 4}
has_jericho_games = all((game_dir() / f"{g}.z5").is_file() for g in JERICHO4)


@pytest.mark.slow
@pytest.mark.parametrize('preset', [
    'atari8', 'atari26', 'dmc18',
    pytest.param('jericho4', marks=pytest.mark.skipif(
        not has_jericho_games, reason=f"Jericho games not found in {game_dir()} (set ${GAME_DIR_ENV_VAR})")),
])
def test_full_size_preset_builds_collects_and_learns(preset, tmp_path):
    run = subprocess.run([sys.executable, '-m', 'lzero_ext.bench', 'full_size', '--preset', preset],
                         cwd=tmp_path, capture_output=True, text=True, timeout=3600)
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout
    assert f"{preset} at full size ({TASKS[preset]} tasks)" in out
    stored, active = (float(x) for x in re.search(r'^transformer\s+([\d.]+)\s+([\d.]+)$', out, re.M).groups())
    assert (stored, active) == pytest.approx(BACKBONE[preset], abs=1e-3)
    losses = [float(x) for x in re.findall(r"loss_total': ([-\d.e+naif]+)", out)]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    assert re.search(r'learn iter 2 \(2 tasks', out)
    print(out[out.index(f"{preset} at full size"):])  # the report and timings, shown with -s
