"""The one suite builder behind every zoo config: validation, keywords, default experiment names, flags."""
import dataclasses

import pytest

from lzero_ext.entry.suite import ZOO_MODULES, Suite, parse_targets, zoo_module


def test_suite_checks_its_settings_once():
    atari = zoo_module("atari").SUITE
    with pytest.raises(ValueError, match="score_kind 'hns'"):
        dataclasses.replace(atari, score_kind="hns")
    with pytest.raises(ValueError, match=r"default presets \['atari100'\]"):
        dataclasses.replace(atari, gpu_preset="atari100")
    with pytest.raises(ValueError, match="long flag"):
        dataclasses.replace(atari, task_flag="games")
    with pytest.raises(ValueError, match="unknown suite 'procgen'"):
        zoo_module("procgen")


def test_build_configs_takes_the_suites_own_keywords_only():
    atari, dmc = zoo_module("atari").SUITE, zoo_module("dmc").SUITE
    assert (atari.task_keyword, dmc.task_keyword) == ("games", "tasks")
    with pytest.raises(TypeError, match=r"unexpected keywords \['tasks'\]"):
        atari.build_configs("smoke", tasks=["Pong"], cuda=False)
    with pytest.raises(TypeError, match=r"unexpected keywords \['games_dir'\]"):
        dmc.build_configs("smoke", games_dir="/tmp", cuda=False)
    with pytest.raises(ValueError, match="must be distinct"):
        atari.build_configs("smoke", games=["Pong", "pong"], cuda=False)
    with pytest.raises(ValueError, match="unknown preset 'tiny'"):
        atari.build_configs("tiny", cuda=False)


@pytest.mark.parametrize("suite, name", [("atari", "data_scalezero/atari_smoke_dense_dps_1games"),
                                         ("minatar", "data_scalezero/minatar_smoke_dense_dps_1games")])
def test_default_experiment_name(suite, name):
    task = {"atari": "Pong", "minatar": "Breakout"}[suite]
    configs = zoo_module(suite).build_configs("smoke", games=[task], dense=True, dps=True, cuda=False)
    assert configs[0][0].exp_name == name and configs[0][0].policy.dps.enabled


def test_every_zoo_module_is_a_suite_with_the_shared_flags():
    for suite in ZOO_MODULES:
        module = zoo_module(suite)
        assert isinstance(module.SUITE, Suite) and module.build_configs == module.SUITE.build_configs
        help_text = module.SUITE.arg_parser().format_help()
        for flag in ("--preset", module.SUITE.task_flag, "--threads", "--dense", "--dps", "--resume"):
            assert flag in help_text, (suite, flag)
    jericho = zoo_module("jericho").SUITE.arg_parser().format_help()
    assert "--game-dir GAME_DIR" in jericho and "--allow-unknown-game" in jericho and "--dps-target" in jericho
    assert "--dps-target" not in zoo_module("atari").SUITE.arg_parser().format_help()


def test_jericho_dps_needs_targets_on_the_command_line(capsys):
    with pytest.raises(SystemExit) as stop:
        zoo_module("jericho").main(["--preset", "smoke", "--dps"])
    assert stop.value.code == 2 and "needs --dps-target GAME=SCORE" in capsys.readouterr().err
    with pytest.raises(ValueError, match="GAME=SCORE"):
        parse_targets(["detective:5"])


def test_set_overrides_preset_fields_by_type_and_names_mistakes():
    from lzero_ext.entry.suite import override_preset, parse_overrides

    overrides = parse_overrides(["num_simulations=8", "learning_rate=1", "eval_env_step_fractions=[0.5]",
                                 "final_eval_episodes=None", "minimal_action_set=True"])
    preset = override_preset(zoo_module("minatar").PRESETS["cpu"], overrides)
    assert (preset.num_simulations, preset.eval_env_step_fractions, preset.final_eval_episodes) == (8, (0.5,), None)
    assert preset.learning_rate == 1.0 and isinstance(preset.learning_rate, float) and preset.minimal_action_set
    cpu = zoo_module("minatar").PRESETS["cpu"]
    with pytest.raises(ValueError, match=r"unknown preset field\(s\) \['sims'\]"):
        override_preset(cpu, dict(sims=8))
    with pytest.raises(ValueError, match="num_simulations takes int"):
        override_preset(cpu, parse_overrides(["num_simulations=eight"]))
    with pytest.raises(ValueError, match="num_simulations takes int"):
        override_preset(cpu, dict(num_simulations=True))  # a bool is not a count
    with pytest.raises(ValueError, match="--games"):
        override_preset(cpu, dict(tasks=("Breakout",)))
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_overrides(["num_simulations"])
    with pytest.raises(ValueError, match="final_eval_episodes=2 must be at least evaluator_env_num=5"):
        override_preset(cpu, dict(final_eval_episodes=2))  # the preset's own checks still run


def test_set_reaches_the_configs_and_the_default_experiment_name():
    minatar = zoo_module("minatar")
    (main, _), = minatar.build_configs("smoke", games=["Breakout"], cuda=False,
                                       overrides=dict(num_simulations=3, minimal_action_set=True))
    assert main.policy.num_simulations == 3 and main.env.minimal_action_set
    assert main.exp_name == "data_scalezero/minatar_smoke_minimal_action_setTrue_num_simulations3_moe_1games"


def test_set_on_the_command_line_is_checked_before_training(capsys):
    with pytest.raises(SystemExit):
        zoo_module("minatar").main(["--preset", "smoke", "--set", "num_simulations=eight"])
    assert "--set num_simulations='eight': num_simulations takes int" in capsys.readouterr().err


@pytest.mark.parametrize("argv, baseline, flag, labels", [
    (["--preset", "cpu"], False, True, {"preset": "cpu"}),  # the Atari cpu preset evaluates after training only
    (["--preset", "cpu", "--set", "initial_eval=True"], True, True, {"preset": "cpu", "set": ["initial_eval=True"]}),
    (["--preset", "smoke"], True, True, {"preset": "smoke"}),
    (["--preset", "smoke", "--no-initial-eval"], True, False, {"preset": "smoke"}),
])
def test_the_baseline_evaluation_follows_the_preset_and_the_flag(monkeypatch, argv, baseline, flag, labels):
    import importlib

    import lzero_ext.entry.cli as cli

    trainer = importlib.import_module("lzero_ext.entry.train_scalezero")  # the module (the package exports the function)
    seen = {}
    monkeypatch.setattr(cli, "exit_on_signals_outside_training", lambda: None)
    monkeypatch.setattr(cli, "ignore_signals_after_the_run", lambda: None)
    monkeypatch.setattr(trainer, "train_scalezero", lambda configs, **kw: seen.update(kw, configs=configs))
    zoo_module("atari").main(argv + ["--device", "cpu"])
    # the preset's choice travels in the config (policy.initial_eval), the flag as the trainer's argument
    assert all(main.policy.initial_eval is baseline for main, _ in seen["configs"])
    assert seen["initial_eval"] is flag and seen["run_labels"] == labels


@pytest.mark.parametrize("argv, torch_threads, learn_threads", [
    (["--preset", "cpu", "--device", "cpu"], 1, 2),  # the MinAtar cpu preset: one thread, two while learning
    (["--preset", "cpu", "--device", "cpu", "--threads", "1"], 1, 1),  # --threads sets both
    (["--preset", "cpu", "--device", "cpu", "--set", "learn_threads=None"], 1, None),
])
def test_the_presets_threads_reach_torch_and_the_learner(monkeypatch, argv, torch_threads, learn_threads):
    import importlib

    import torch

    import lzero_ext.entry.cli as cli

    trainer = importlib.import_module("lzero_ext.entry.train_scalezero")
    seen = {}
    monkeypatch.setattr(cli, "exit_on_signals_outside_training", lambda: None)
    monkeypatch.setattr(cli, "ignore_signals_after_the_run", lambda: None)
    monkeypatch.setattr(trainer, "train_scalezero", lambda configs, **kw: seen.update(kw, threads=torch.get_num_threads()))
    before = torch.get_num_threads()
    try:
        zoo_module("minatar").main(argv)
    finally:
        torch.set_num_threads(before)
    assert seen["threads"] == torch_threads and seen["learn_threads"] == learn_threads
