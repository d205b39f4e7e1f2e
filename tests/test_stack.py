"""The installed stack: pins, ROMs, registry, the zoo merge, and lightzero's own UniZero end to end."""
import os
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_cpu_torch_and_no_cuda_packages():
    import torch

    assert torch.__version__.startswith("2.13.0")
    if torch.version.cuda is None:
        nvidia = [d.metadata["Name"] for d in metadata.distributions() if d.metadata["Name"].lower().startswith("nvidia-")]
        assert nvidia == []


@pytest.mark.parametrize("game", ["pong", "breakout", "ms_pacman"])
def test_atari_roms_present_offline(game):
    from ale_py import roms

    path = roms.get_rom_path(game)
    assert path is not None and Path(path).stat().st_size > 1000


def test_install_check_passes():
    result = subprocess.run([sys.executable, "-m", "lzero_ext.install_check"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "FAILED" not in result.stdout


def test_registry_contains_project_names():
    import lzero_ext.registry
    from ding.utils import ENV_REGISTRY, MODEL_REGISTRY, POLICY_REGISTRY

    registries = {"env": ENV_REGISTRY, "model": MODEL_REGISTRY, "policy": POLICY_REGISTRY}
    assert lzero_ext.registry.REGISTERED["env"], "no env registered"
    for kind, names in lzero_ext.registry.REGISTERED.items():
        for name in names:
            assert name in registries[kind], f"{name} missing from ding's {kind} registry"
    assert lzero_ext.registry.registered_names() == lzero_ext.registry.REGISTERED


def _python(code: str, cwd: Path, *args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args, "-c", code], capture_output=True, text=True, cwd=cwd, env=env)


def test_zoo_merge_in_this_install(tmp_path):
    """From a directory outside the repo both lightzero's and our zoo modules import."""
    code = (
        "import zoo.atari.envs.atari_lightzero_env as theirs, zoo.atari.config.scalezero_multitask_config as ours;"
        "import lzero_ext; print(theirs.__file__); print(ours.__file__)"
    )
    result = _python(code, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    theirs, ours = result.stdout.strip().splitlines()[-2:]
    assert "site-packages" in theirs
    assert ours.endswith("scalezero_multitask_config.py")


def test_zoo_merge_in_a_normal_install(tmp_path):
    """A wheel installed over lightzero's files (what pip does in a non-editable install) merges too."""
    wheel_dir = tmp_path / "wheel"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheel_dir), str(REPO)],
        capture_output=True, text=True,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = wheel_dir.glob("scalezero-*.whl")
    site = tmp_path / "site"
    import zoo.atari.envs.atari_lightzero_env as lightzero_atari

    lightzero_zoo = Path(lightzero_atari.__file__).parents[2]
    shutil.copytree(lightzero_zoo, site / "zoo")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        assert "scalezero-zoo.pth" in names and "scalezero_zoo_merge.py" in names
        archive.extractall(site)
    # -S: no site-packages, so neither the editable install nor its .pth hook can help.
    code = (
        "import importlib.util as u;"
        "a = u.find_spec('zoo.atari.envs.atari_lightzero_env'); b = u.find_spec('zoo.atari.config.scalezero_multitask_config');"
        "print(a.origin); print(b.origin)"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    result = _python(code, tmp_path, "-S", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    theirs, ours = result.stdout.strip().splitlines()
    assert theirs.startswith(str(site)) and ours.startswith(str(site))


def test_lightzero_unizero_cartpole_trains(tmp_path):
    """lightzero's own UniZero CartPole config trains a few iterations here (C++ MCTS, buffer, learner)."""
    script = tmp_path / "run_cartpole.py"
    script.write_text(
        """
import copy
from zoo.classic_control.cartpole.config.cartpole_unizero_config import main_config, create_config
from lzero.entry import train_unizero
cfg, create = copy.deepcopy(main_config), copy.deepcopy(create_config)
cfg.exp_name = 'cartpole_unizero_tiny'
cfg.env.update(collector_env_num=2, evaluator_env_num=1, n_evaluator_episode=1)
cfg.policy.update(collector_env_num=2, evaluator_env_num=1, n_episode=2, cuda=False, num_simulations=5,
                  batch_size=16, eval_freq=1000)
cfg.policy.model.world_model_cfg.update(device='cpu', env_num=2, collector_env_num=2, evaluator_env_num=1)
create.env_manager.type = 'base'
policy = train_unizero([cfg, create], seed=0, max_env_step=300, max_train_iter=5)
print('TRAIN_ITER', policy._learn_model is not None)
"""
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    checkpoints = list((tmp_path / "cartpole_unizero_tiny" / "ckpt").glob("iteration_*.pth.tar"))
    assert any(int(p.name.split("_")[1].split(".")[0]) >= 5 for p in checkpoints), checkpoints
