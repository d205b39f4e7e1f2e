"""A user's run from start to finish: quiet console, the bar, evaluate / watch a checkpoint, fine-tune from it, pictures."""
import json
import logging
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import lzero_ext  # noqa: F401
from lzero_ext.checkpoint import CheckpointError, load_checkpoint
from lzero_ext.entry import train_scalezero
from lzero_ext.entry.run_logging import run_console
from zoo.atari.config.scalezero_multitask_config import PRESETS, build_configs

SMOKE = PRESETS["smoke"]
# What third-party output looks like on the console: log-level words, warning categories, banners, worker chatter.
NOISE = re.compile(r"INFO|WARNING|Warning|DeprecationWarning|FutureWarning|unmaintained|numba|pyecharts|collected|"
                   r"clear_interval|Traceback")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """One smoke run inside the run console; its captured stdout/stderr, the result and the experiment dir."""
    root = tmp_path_factory.mktemp("run")
    exp = root / "exp"
    capture = pytest.MonkeyPatch()
    capture.chdir(root)
    import io

    class Terminal(io.StringIO):  # the bar's live redraws are for a terminal; elsewhere it writes plain lines
        def isatty(self) -> bool:
            return True

    out, err = io.StringIO(), Terminal()
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        with run_console() as bar_stream:
            logging.getLogger("ding").info("a third-party INFO line")
            warnings.warn("a third-party warning", DeprecationWarning)
            result = train_scalezero(build_configs("smoke", exp_name=str(exp), cuda=False), max_env_step=SMOKE.max_env_step,
                                     max_train_iter=3, exp_name=str(exp), score_kind="atari", checkpoint_freq=100,
                                     bar_stream=bar_stream)
    finally:
        sys.stdout, sys.stderr = saved
        capture.undo()
    return dict(out=out.getvalue(), err=err.getvalue(), result=result, exp=exp)


# ---------------------------------------------------------------------- quiet console
def test_import_leaves_root_logger_and_environment_unchanged():
    code = ("import logging, os\n"
            "handler = logging.StreamHandler(); root = logging.getLogger()\n"
            "root.addHandler(handler); root.setLevel(logging.WARNING)\n"
            "before = (root.level, list(root.handlers), list(root.filters))\n"
            "import lzero_ext\n"
            "assert (root.level, list(root.handlers), list(root.filters)) == before, (root.level, root.handlers)\n"
            "assert 'MUJOCO_GL' not in os.environ\n"
            "print('ok')\n")
    env = {k: v for k, v in __import__("os").environ.items() if k != "MUJOCO_GL"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"
    assert "unmaintained" not in done.stderr and "numba" not in done.stderr  # import-time banners are captured


def test_run_console_is_quiet_and_restores_everything(capsys):
    root = logging.getLogger()
    before = (root.level, list(root.handlers), list(root.filters), sys.stdout, sys.stderr)
    with run_console():
        logging.getLogger("ding.worker").warning("third-party warning")
        logging.getLogger("lzero.worker").info("third-party info")
        warnings.warn("noise", UserWarning)
        print("from the test module")  # not a project module: dropped
        logging.getLogger("lzero_ext.entry.train_scalezero").info("[eval] the project's line")
        import os
        assert os.environ.get("MUJOCO_GL")  # set for dm_control during a run
    captured = capsys.readouterr()
    assert "the project's line" in captured.err
    assert not NOISE.search(captured.out + captured.err.replace("[eval] the project's line", ""))
    assert "from the test module" not in captured.out
    assert (root.level, list(root.handlers), list(root.filters), sys.stdout, sys.stderr) == before
    with run_console(verbose=True):
        logging.getLogger("lzero.worker").warning("shown when verbose")
    assert "shown when verbose" in capsys.readouterr().err


def test_smoke_run_console_has_only_project_lines_and_bar(smoke_run):
    out, err = smoke_run["out"], smoke_run["err"]
    assert "mean HNS" in out  # the summary table (stdout)
    assert not NOISE.search(out), out
    lines = [line for line in re.split(r"[\r\n]+", err) if line.strip()]
    bar = [line for line in lines if "env steps [" in line]
    assert any(line.startswith("eval Pong 0/") for line in bar)  # the bar names the baseline evaluation at once
    assert any(line.startswith("collect ") for line in bar) and any(line.startswith("learn it ") for line in bar)
    assert any("Pong" in line and "Breakout" in line for line in bar)  # latest returns
    others = [line for line in lines if line not in bar]
    assert others and all(line.startswith(("[eval]", "ScaleZero multi-task", "wall time: eval")) for line in others), others


def test_no_initial_eval_skips_the_baseline(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from lzero_ext.entry.train_scalezero import MultiTaskTrainer

    trainer = MultiTaskTrainer(build_configs("smoke", exp_name=str(tmp_path / "exp"), cuda=False), seed=0,
                               exp_name=str(tmp_path / "exp"), score_kind="atari", max_env_step=16, max_train_iter=1,
                               checkpoint_freq=100, save_replay_buffer=False, progress=False, initial_eval=False)
    try:
        trainer.evaluate()
        assert all(not task.record.history for task in trainer.tasks)
        trainer.initial_eval = True
        trainer.evaluate()
        assert all(len(task.record.history) == 1 for task in trainer.tasks)
    finally:
        trainer.close()


def test_a_preset_without_the_baseline_turns_it_off_through_the_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from lzero_ext.entry.train_scalezero import MultiTaskTrainer

    configs = build_configs("smoke", exp_name=str(tmp_path / "exp"), cuda=False, overrides=dict(initial_eval=False))
    assert configs[0][0].policy.initial_eval is False
    trainer = MultiTaskTrainer(configs, seed=0, exp_name=str(tmp_path / "exp"), score_kind="atari", max_env_step=16,
                               max_train_iter=1, checkpoint_freq=100, save_replay_buffer=False, progress=False)
    try:
        assert not trainer.initial_eval  # every caller of build_configs gets the preset's choice, not only the CLI
    finally:
        trainer.close()


def test_progress_bar_counts_eval_steps_as_they_happen():
    from types import SimpleNamespace

    from easydict import EasyDict

    from lzero_ext.entry.progress import RunProgress
    from ding.policy import Policy  # noqa: F401  (namedtuple interfaces come from ding)
    from collections import namedtuple

    Mode = namedtuple("Mode", ["forward", "reset"])
    seen = []
    worker = SimpleNamespace(_policy=Mode(forward=lambda obs, **kw: {i: 0 for i in kw["ready_env_id"]}, reset=None))
    task = SimpleNamespace(name="Pong", cfg=EasyDict(env=dict(max_episode_frames=400, frame_skip=4, n_evaluator_episode=2)),
                           evaluator=worker)
    import io

    stream = io.StringIO()
    bar = RunProgress(total=100, enabled=True, file=stream, min_interval_s=0.0)
    with bar.evaluating(task):
        for _ in range(3):
            worker._policy.forward(None, ready_env_id={0, 1})
            seen.append(bar.phase)
    assert seen == ["eval Pong 2/200", "eval Pong 4/200", "eval Pong 6/200"]
    assert worker._policy.forward(None, ready_env_id={0}) == {0: 0} and bar.phase == "eval Pong 6/200"  # unwrapped
    bar.task_return("Pong", -20.0)
    bar.close()
    assert "Pong -20.0" in stream.getvalue()


# ---------------------------------------------------------------------- pictures
def test_run_writes_expert_usage_and_grad_cosine_pictures(smoke_run):
    exp = smoke_run["exp"]
    summary = json.loads((exp / "summary.json").read_text())
    assert summary["files"] == {"learning_curves": "learning_curves.png", "expert_usage": "expert_usage.png",
                                "grad_cosine": "grad_cosine.png"}
    for name in summary["files"].values():
        assert (exp / name).stat().st_size > 1000
    arrays = load_checkpoint(exp / "ckpt" / "rank0")["diagnostics"]["latest_arrays"]
    usage = np.asarray(arrays["expert_usage/task0"])
    assert usage.shape == (SMOKE.num_layers, SMOKE.num_experts) and np.allclose(usage.sum(axis=1), 1.0)
    assert arrays["grad_cos"]["task_ids"] == [0, 1] and arrays["grad_cos"]["matrix"][0][0] == pytest.approx(1.0)


# ---------------------------------------------------------------------- evaluate and watch
def test_evaluate_reproduces_the_trained_policys_greedy_actions(smoke_run):
    """Same observations -> the same greedy actions (argmax of the policy network's logits, computed by each
    policy's eval mode, bit for bit) from the trained policy object and from the one the evaluate command loads. The MCTS
    action itself is not compared: lightzero 0.2.0's C++ tree breaks visit-count ties with ``rand()`` re-seeded
    from the clock on every search, so two searches of one policy object can differ on an untrained model."""
    from ding.envs import get_vec_env_setting
    from lzero.mcts.utils import prepare_observation

    from lzero_ext.evaluate import load_run_policy

    trained = smoke_run["result"].policy
    loaded = load_run_policy(str(smoke_run["exp"]))
    assert loaded.train_iter == smoke_run["result"].train_iter and loaded.task_names == ["Pong", "Breakout"]
    for policy in (trained, loaded.policy):
        policy.recompute_pos_emb_diff_and_clear_cache()
    for task_id, cfg in enumerate(loaded.cfgs):
        env_fn, _, eval_cfgs = get_vec_env_setting(cfg.env)
        env = env_fn(cfg=eval_cfgs[0])
        env.seed(123, dynamic_seed=False)
        obs = env.reset()
        modes = [p.task_eval_mode(task_id) for p in (trained, loaded.policy)]
        actions = {0: [], 1: []}
        for step in range(6):
            batch = torch.from_numpy(prepare_observation(np.asarray([obs["observation"]]), "conv")).float()
            logits = []
            for i, mode in enumerate(modes):
                mode.reset()  # the same (empty) context: the previous MCTS action feeds the next initial inference
                out = mode.forward(batch, [obs["action_mask"]], [-1], ready_env_id=np.array([0]), timestep=[step])
                logits.append(np.asarray(out[0]["predicted_policy_logits"]))
                actions[i].append(int(np.argmax(logits[-1])))
            np.testing.assert_array_equal(logits[0], logits[1])
            obs = env.step(actions[0][-1]).obs
        env.close()
        assert actions[0] == actions[1]


def test_evaluate_writes_a_gif_of_nonzero_frames_per_task(smoke_run, tmp_path):
    import imageio.v3 as iio

    from lzero_ext.evaluate import evaluate_run, print_table

    results = evaluate_run(str(smoke_run["exp"]), episodes=1, video_dir=str(tmp_path / "videos"))
    assert [r.name for r in results] == ["Pong", "Breakout"]
    for r in results:
        assert len(r.returns) == 1 and np.isfinite(r.mean)
        frames = iio.imread(r.video)
        assert Path(r.video).name == f"{r.name}.gif" and frames.shape[0] > 1 and frames.max() > 0
    table = print_table(results)
    assert "±" in table and "HNS" in table


def test_evaluate_errors_are_one_clear_line(smoke_run, tmp_path):
    from lzero_ext.evaluate import EvaluateError, evaluate_run, load_run_policy

    done = subprocess.run([sys.executable, "-m", "lzero_ext.evaluate", "--exp-name", str(tmp_path / "nowhere")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "no such directory" in done.stderr and "Traceback" not in done.stderr
    with pytest.raises(EvaluateError, match="did not train 'Boxing'"):
        evaluate_run(str(smoke_run["exp"]), games=["Boxing"])
    with pytest.raises(EvaluateError, match="no such file"):
        load_run_policy(str(smoke_run["exp"]), str(tmp_path / "missing.pth.tar"))
    with pytest.raises(CheckpointError, match="no latest.json"):
        load_run_policy(str(smoke_run["exp"]), str(tmp_path))  # a directory without checkpoints
    # the same run's config with a wider model: the checkpoint is from another architecture
    other = tmp_path / "other"
    other.mkdir()
    text = (smoke_run["exp"] / "total_config.py").read_text()
    (other / "total_config.py").write_text(text.replace("'embed_dim': 32", "'embed_dim': 64"))
    with pytest.raises(CheckpointError, match="another architecture"):
        load_run_policy(str(other), str(smoke_run["exp"] / "ckpt" / "rank0"))


def test_watch_films_dmc_frames_with_mujoco(tmp_path):
    """DMC frames rendered headless inside a run console (``MUJOCO_GL=egl`` where an EGL library exists); a fresh
    process, since dm_control picks its GL backend once. Skipped where MuJoCo cannot render."""
    code = ("import sys, numpy as np\n"
            "from lzero_ext.entry.run_logging import run_console\n"
            "with run_console():\n"
            "    from lzero_ext.entry.watch import EpisodeRecorder\n"
            "    from lzero_ext.envs.dmc_env import DMCMultiTaskEnv\n"
            "    rec = EpisodeRecorder('cartpole-swingup', record=True)\n"
            "    env = rec.wrap(lambda: DMCMultiTaskEnv(dict(env_id='cartpole-swingup', max_episode_steps=4)), film=True)\n"
            "    env.seed(0); env.reset(); done = False\n"
            "    while not done:\n"
            "        done = env.step(np.zeros(env.action_space.shape, dtype=np.float32)).done\n"
            "    sys.__stdout__.write(f'error={rec.error}\\n' if rec.error else rec.write(sys.argv[1]) + '\\n')\n")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    if done.stdout.startswith("error="):
        pytest.skip(f"MuJoCo cannot render here: {done.stdout}")
    import imageio.v3 as iio

    frames = iio.imread(done.stdout.strip())
    assert done.stdout.strip().endswith("cartpole-swingup.gif") and frames.shape[0] == 5 and frames.max() > 0


@pytest.mark.skipif(not __import__("lzero_ext.envs.jericho_env", fromlist=["game_dir"]).game_dir().joinpath(
    "detective.z5").is_file(), reason="Jericho game files not found")
def test_watch_writes_a_jericho_transcript(tmp_path):
    from lzero_ext.entry.watch import EpisodeRecorder
    from lzero_ext.envs.jericho_env import JerichoMultiTaskEnv

    recorder = EpisodeRecorder("detective", record=True)
    env = recorder.wrap(lambda: JerichoMultiTaskEnv(dict(game="detective", max_steps=3)), film=True)
    env.reset()
    commands = []
    for _ in range(3):
        commands.append(env.valid_actions[0])
        if env.step(0).done:
            break
    env.close()
    text = Path(recorder.write(str(tmp_path))).read_text()
    assert Path(tmp_path / "detective.transcript.txt").is_file() and f"> {commands[0]}" in text and "[score" in text


# ---------------------------------------------------------------------- fine-tuning
def _fresh_policy(configs, exp):
    from ding.policy import create_policy

    from lzero_ext.entry.configs import compile_task_configs

    cfgs = compile_task_configs(configs, seed=0, exp_name=str(exp), save_cfg=False)
    torch.manual_seed(1)
    policy = create_policy(cfgs[0].policy, enable_field=["learn", "collect", "eval"])
    policy.set_task_configs({t: c.policy for t, c in enumerate(cfgs)})
    return policy


def test_init_from_loads_shared_weights_and_gives_new_tasks_fresh_or_copied_heads(smoke_run, tmp_path):
    from lzero_ext.entry.finetune import FinetuneSpec, apply_finetune, shared_parameter_names

    source = load_checkpoint(smoke_run["exp"] / "ckpt" / "rank0")["policy"]["model"]  # trained Pong (0), Breakout (1)
    configs = build_configs("smoke", games=["Boxing", "Pong"], exp_name=str(tmp_path / "b"), cuda=False)
    policy = _fresh_policy(configs, tmp_path / "b")
    fresh = {k: v.clone() for k, v in policy._model.state_dict().items()}
    report = apply_finetune(policy, FinetuneSpec(str(smoke_run["exp"])), task_names=["Boxing", "Pong"],
                            exp_dir=str(tmp_path / "b"))
    state = policy._model.state_dict()
    shared = shared_parameter_names(policy._model)
    assert report.shared_loaded > 0 and report.copied == {"Boxing": None, "Pong": "Pong"}
    assert shared and all(torch.equal(state[k], source[k]) for k in shared)  # bit for bit
    heads = [k for k in state if ".per_task.0." in k]  # task 0 here is Boxing: new, fresh
    assert heads and all(torch.equal(state[k], fresh[k]) for k in heads)
    assert any(not torch.equal(state[k], source[k]) for k in heads)
    pong = [k.replace(".per_task.0.", ".per_task.1.") for k in heads]  # Pong: task 1 here, task 0 in the checkpoint
    assert all(torch.equal(state[k], source[k.replace(".per_task.1.", ".per_task.0.")]) for k in pong)
    assert all(torch.equal(v, state[k]) for k, v in policy._target_model.state_dict().items())
    assert json.loads((tmp_path / "b" / "finetune.json").read_text())["spec"]["mode"] == "full"

    policy = _fresh_policy(configs, tmp_path / "c")
    apply_finetune(policy, FinetuneSpec(str(smoke_run["exp"]), heads_from="Breakout"), task_names=["Boxing", "Pong"])
    state = policy._model.state_dict()
    assert all(torch.equal(state[k], source[k.replace(".per_task.0.", ".per_task.1.")]) for k in heads)  # Breakout's
    with pytest.raises(ValueError, match="init-heads-from 'Qbert'"):
        apply_finetune(_fresh_policy(configs, tmp_path / "d"), FinetuneSpec(str(smoke_run["exp"]), heads_from="Qbert"),
                       task_names=["Boxing", "Pong"])
    wide = build_configs("smoke", exp_name=str(tmp_path / "e"), cuda=False)
    for main, _ in wide:
        main.policy.model.world_model_cfg.embed_dim = 64
    with pytest.raises(CheckpointError, match="another architecture"):
        apply_finetune(_fresh_policy(wide, tmp_path / "e"), FinetuneSpec(str(smoke_run["exp"])), task_names=["Pong", "Breakout"])


def test_lora_finetune_trains_adapters_and_leaves_the_base_unchanged(smoke_run, tmp_path, monkeypatch):
    from lzero_ext.entry.finetune import FinetuneSpec, shared_parameter_names
    from lzero_ext.evaluate import load_run_policy

    monkeypatch.chdir(tmp_path)
    source = load_checkpoint(smoke_run["exp"] / "ckpt" / "rank0")["policy"]["model"]
    exp = tmp_path / "lora"
    result = train_scalezero(build_configs("smoke", games=["Pong", "Boxing"], exp_name=str(exp), cuda=False),
                             max_env_step=SMOKE.max_env_step, max_train_iter=3, exp_name=str(exp), progress=False,
                             initial_eval=False, init_from=FinetuneSpec(str(smoke_run["exp"]), mode="lora"))
    model = result.policy._model
    state = model.state_dict()
    base = [k for k in shared_parameter_names(model) if "lora_" not in k]
    assert base and all(torch.equal(state[k], source[k]) for k in base)  # frozen base: bit for bit after 3 steps
    lora_b = [k for k in state if "lora_B.0" in k]
    assert lora_b and any(state[k].abs().sum() > 0 for k in lora_b)  # adapters trained (B starts at 0)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not trainable & set(base) and any(".per_task.1." in n for n in trainable)  # heads (Boxing's too) train
    loaded = load_run_policy(str(exp))  # evaluate rebuilds the adapters from finetune.json
    assert all(torch.equal(v, state[k]) for k, v in loaded.policy._model.state_dict().items())


def test_evaluate_makes_lightzeros_per_step_cache_call(smoke_run, monkeypatch):
    """lzero_ext.evaluate's evaluator resets the policy after every step with the step count, as lightzero's does
    for UniZero, so long episodes clear their KV caches every cache_clear_interval steps."""
    from lzero_ext.evaluate import evaluate_run
    from policies.multitask import MultiTaskPolicyMixin

    steps = []
    original = MultiTaskPolicyMixin._reset_task

    def spy(self, task_id, mode, env_id, current_steps, reset_init_data):
        if mode == "eval" and current_steps is not None:
            steps.append(current_steps)
        return original(self, task_id, mode, env_id, current_steps, reset_init_data)
    monkeypatch.setattr(MultiTaskPolicyMixin, "_reset_task", spy)
    evaluate_run(str(smoke_run["exp"]), episodes=1, games=["Pong"])
    assert steps[:3] == [1, 2, 3]
