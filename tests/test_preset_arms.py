"""``python -m lzero_ext.bench preset_arms``: the arms' ``preset_learning`` reports side by side, and the per-run
diagnostics ``preset_learning`` keeps for it."""
import json

import pytest

from lzero_ext.bench import preset_arms, preset_learning

GAMES = ("Asterix", "Breakout", "Freeway", "Seaquest", "SpaceInvaders")


def _summary(seed, *, breakout, env_steps=12_000, dps=None, diagnostics=True):
    tasks = [dict(task_id=i, name=name, eval_return=breakout + 0.1 * seed if name == "Breakout" else 0.0,
                  eval_episodes=10, history=[[0, 0.0], [env_steps, breakout]]) for i, name in enumerate(GAMES)]
    steps = {name: env_steps for name in GAMES}
    if dps:
        steps.update(dps)
    summary = dict(tasks=tasks, total_env_steps=sum(steps.values()),
                   extra=dict(wall_seconds=600.0, phase_seconds=dict(eval=60.0, collect=120.0)))
    if diagnostics:
        summary["diagnostics"] = {"grad_cos_mean": {"mean": 0.1 * (seed + 1)}, "grad_neg_frac": {"mean": 0.2},
                                  "dormant_ratio": {"mean": 0.0},
                                  **{f"expert_entropy/task{i}": {"mean": 0.5 + 0.1 * i} for i in range(5)},
                                  **{f"expert_max_share/task{i}": {"mean": 0.4} for i in range(5)}}
    if dps:
        summary["dps"] = dict(solved=sorted(dps), stage=1, env_steps=steps, total_env_steps=sum(steps.values()))
    return summary


def _report(tmp_path, arm, flags, **summary_keys):
    out = tmp_path / arm
    for seed in (0, 1):
        run = out / "runs" / f"seed{seed}"
        run.mkdir(parents=True)
        (run / "summary.json").write_text(json.dumps(_summary(seed, **summary_keys)))
    preset_learning.main(["--preset", "cpu", "--seeds", "0", "1", "--out", str(out), *flags])
    return out


def test_run_diagnostics_name_games_and_keep_dps_savings():
    diagnostics = preset_learning.run_diagnostics(_summary(0, breakout=2.0, dps={"Breakout": 3_000}))
    assert diagnostics["grad_cos_mean"] == pytest.approx(0.1)
    assert diagnostics["expert_entropy"]["Seaquest"] == pytest.approx(0.8)  # task 3, not task 0's
    assert diagnostics["dps"]["solved"] == ["Breakout"] and diagnostics["dps"]["total_env_steps"] == 51_000
    assert preset_learning.run_diagnostics(_summary(0, breakout=2.0, diagnostics=False)) == {}


def test_arms_side_by_side_with_verdicts_savings_and_a_missing_arm_named(tmp_path, capsys):
    reports = [_report(tmp_path, "moe", [], breakout=3.0),
               _report(tmp_path, "moe_dps", ["--dps"], breakout=3.0, dps={"Breakout": 3_000}),
               _report(tmp_path, "unizero", ["--unizero"], breakout=0.2, diagnostics=False)]
    capsys.readouterr()
    out = tmp_path / "arms"
    preset_arms.main(["--out", str(out)] + [f"--report={p.name}={p}" for p in reports]
                     + [f"--report=dense={tmp_path / 'nowhere'}"])
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-1] == "preset arms: minatar cpu, games learned (a) 0, (b) -, (c) 1, (d) 1 of 5 (95% CI over 2 seeds)"
    results = json.loads((out / "results.json").read_text())
    assert results["missing"] == ["dense"]
    assert results["games"]["Breakout"]["moe"]["passed"] and not results["games"]["Breakout"]["unizero"]["passed"]
    dps = results["arms"]["moe_dps"]
    assert dps["env_steps_used"] == 51_000 and dps["dps_env_step_saving"] == pytest.approx(0.15)
    assert dps["env_steps_vs_moe"] == pytest.approx(51_000 / 60_000)  # the paper's comparison: against arm (c)
    assert results["arms"]["moe"]["dps_env_step_saving"] is None and results["arms"]["moe"]["learned"] == ["Breakout"]
    assert results["arms"]["moe"]["grad_cos_mean"] == pytest.approx(0.15)  # seeds 0 and 1: 0.1 and 0.2
    assert "expert_entropy" not in results["arms"]["unizero"] and results["arms"]["unizero"]["grad_cos_mean"] is None
    table = (out / "table.txt").read_text()
    assert "no report for (b) multi-task, dense FFN" in table and "15.0%" in table and "85.0%" in table
    assert (out / "learning_curves.png").stat().st_size > 0


def test_a_report_of_another_preset_is_refused(tmp_path, capsys):
    report = _report(tmp_path, "moe", [], breakout=3.0)
    with pytest.raises(SystemExit):
        preset_arms.main(["--preset", "full", "--report", f"moe={report}", "--out", str(tmp_path / "arms")])
    assert "reports minatar cpu, not minatar full" in capsys.readouterr().err


def test_other_variants_join_by_name_and_only_reports_drops_the_defaults(tmp_path, capsys):
    moe = _report(tmp_path, "moe", [], breakout=3.0)
    sims = _report(tmp_path, "sims", ["--set", "num_simulations=8"], breakout=0.2)
    capsys.readouterr()
    preset_arms.main(["--only-reports", "--report", f"moe={moe}", "--report", f"sims8={sims}",
                      "--out", str(tmp_path / "search")])
    assert capsys.readouterr().out.strip().splitlines()[-1] == \
        "preset arms: minatar cpu, games learned (c) 1, sims8 0 of 5 (95% CI over 2 seeds)"
    results = json.loads((tmp_path / "search" / "results.json").read_text())
    assert set(results["arms"]) == {"moe", "sims8"} and results["missing"] == []
    with pytest.raises(SystemExit):
        preset_arms.main(["--only-reports", "--report", "sims8", "--out", str(tmp_path / "x")])
