"""Tests of the diagnostics across domains: run-long accumulation, within/between-domain gradient
conflict, expert-usage specialisation, rank merge, the recorder's resume state and the picture."""
import json
import math

import numpy as np
import pytest

from lzero_ext.domain_diagnostics import accumulate, domain_summary, new_accumulator, specialisation
from lzero_ext.entry.run_logging import DiagnosticsRecorder
from lzero_ext.pictures import plot_domain_diagnostics

DOMAINS = {0: "atari", 1: "atari", 2: "dmc", 3: "dmc", 4: "jericho"}


def cosines(task_ids, within, between, domains=DOMAINS):
    """Grad-cosine arrays: ``within`` for pairs of one domain, ``between`` otherwise, 1 on the diagonal."""
    matrix = [[1.0 if a == b else within if domains[a] == domains[b] else between for b in task_ids] for a in task_ids]
    return {"grad_cos": {"task_ids": list(task_ids), "matrix": matrix}}


def usage_arrays(usage):
    return {f"expert_usage/task{t}": np.asarray(u, dtype=float).tolist() for t, u in usage.items()}


def test_within_and_between_domain_conflict():
    acc = new_accumulator()
    accumulate(acc, cosines(range(5), within=0.8, between=-0.5))
    step = cosines(range(5), within=0.4, between=0.1)
    matrix = step["grad_cos"]["matrix"]
    for t in range(5):  # task 3: zero gradient, its row and column undefined
        matrix[3][t] = matrix[t][3] = math.nan
    matrix[0][4] = matrix[4][0] = None
    accumulate(acc, step)
    summary = domain_summary([acc], DOMAINS)
    json.dumps(summary, allow_nan=False)
    assert summary["domains"] == ["atari", "dmc", "jericho"]
    assert summary["tasks"] == {"atari": [0, 1], "dmc": [2, 3], "jericho": [4]}
    within, between = summary["grad_cos"]["within"], summary["grad_cos"]["between"]
    # within: (0,1) twice (0.8, 0.4), (2,3) once (0.8); between: 8 pairs at step 1, 4 defined at step 2
    assert within == pytest.approx({"mean_cosine": 2.0 / 3, "negative_fraction": 0.0, "pairs": 2, "samples": 3})
    assert between == pytest.approx({"mean_cosine": (8 * -0.5 + 4 * 0.1) / 12, "negative_fraction": 8 / 12,
                                     "pairs": 8, "samples": 12})
    matrix = summary["grad_cos"]["matrix"]
    assert matrix[0][0] == pytest.approx(0.6) and matrix[1][1] == pytest.approx(0.8)
    assert matrix[2][2] is None  # one jericho task: no pair within the domain
    assert matrix[0][1] == matrix[1][0] == pytest.approx((4 * -0.5 + 2 * 0.1) / 6)  # (0|1, 2|3); step 2 lacks task 3
    assert matrix[0][2] == pytest.approx((2 * -0.5 + 0.1) / 3)  # (0|1, 4); (0, 4) undefined at step 2


def test_unknown_task_domain_is_an_error():
    acc = new_accumulator()
    accumulate(acc, cosines([0, 7], within=0.0, between=0.0, domains={0: "a", 7: "b"}))
    with pytest.raises(KeyError, match="7"):
        domain_summary([acc], {0: "atari"})


def test_specialisation_bounds():
    uniform = np.full((3, 4), 0.25)
    assert specialisation(uniform) == pytest.approx(0.0, abs=1e-12)
    skewed = np.tile([0.7, 0.1, 0.1, 0.1], (3, 1))
    assert specialisation(skewed) == pytest.approx(0.0, abs=1e-12)  # identical, not uniform
    disjoint = np.array([[0.5, 0.5, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]])
    assert specialisation(disjoint) == pytest.approx(1.0)
    assert 0.0 < specialisation(np.array([[0.6, 0.4, 0, 0], [0.4, 0.6, 0, 0]])) < 0.1
    assert specialisation(np.array([[0.5, 0.5], [0.0, 0.0]])) is None  # one group with tokens


def test_expert_usage_by_domain():
    layer_shared = [0.25, 0.25, 0.25, 0.25]
    usage = {0: [layer_shared, [1, 0, 0, 0]], 1: [layer_shared, [0, 1, 0, 0]],
             2: [layer_shared, [0, 0, 1, 0]], 3: [layer_shared, [0, 0, 0.5, 0.5]]}
    acc = new_accumulator()
    accumulate(acc, usage_arrays(usage))
    accumulate(acc, usage_arrays({0: [layer_shared, [0, 0, 0, 1]]}))  # task 0 averages over its two steps
    summary = domain_summary([acc], DOMAINS)
    json.dumps(summary, allow_nan=False)
    per_domain = summary["expert_usage"]["per_domain"]
    assert sorted(per_domain) == ["atari", "dmc"]  # jericho has no usage
    np.testing.assert_allclose(per_domain["atari"][1], [0.25, 0.5, 0, 0.25])
    np.testing.assert_allclose(per_domain["dmc"][1], [0, 0, 0.75, 0.25])
    spec = summary["expert_usage"]["specialisation"]
    assert spec["per_layer"][0] == pytest.approx(0.0, abs=1e-12)  # both domains route alike
    assert 0.5 < spec["per_layer"][1] < 1.0                      # mostly disjoint experts
    assert spec["mean"] == pytest.approx(np.mean(spec["per_layer"]))
    assert summary["grad_cos"]["within"]["mean_cosine"] is None and summary["grad_cos"]["within"]["samples"] == 0


def test_rank_accumulators_merge():
    rank0, rank1, single = new_accumulator(), new_accumulator(), new_accumulator()
    steps0 = [dict(cosines([0, 2], 0.0, -0.3), **usage_arrays({0: [[1, 0]], 2: [[0, 1]]})),
              dict(cosines([0, 2], 0.0, 0.1), **usage_arrays({0: [[0.5, 0.5]], 2: [[0, 1]]}))]
    steps1 = [dict(cosines([1, 3], 0.0, 0.5), **usage_arrays({1: [[1, 0]], 3: [[0.5, 0.5]]}))]
    for arrays in steps0:
        accumulate(rank0, arrays)
        accumulate(single, arrays)
    for arrays in steps1:
        accumulate(rank1, arrays)
        accumulate(single, arrays)
    merged = domain_summary([rank0, rank1], DOMAINS)
    assert merged == domain_summary([single], DOMAINS)
    assert merged["grad_cos"]["between"] == pytest.approx({"mean_cosine": 0.1, "negative_fraction": 1 / 3,
                                                           "pairs": 2, "samples": 3})
    np.testing.assert_allclose(merged["expert_usage"]["per_domain"]["atari"], [[0.875, 0.125]])
    np.testing.assert_allclose(merged["expert_usage"]["per_domain"]["dmc"], [[0.25, 0.75]])


def learn_log(value):
    return {"diag/grad_cos_mean": value, "task0/loss": 1.0}


def test_recorder_accumulates_every_diagnostics_step_and_resumes(tmp_path):
    recorder = DiagnosticsRecorder(str(tmp_path / "a"), 0, {})
    for step, cos in enumerate([0.2, -0.4, 0.5]):
        recorder.record(step, learn_log(cos), dict(cosines([0, 2], 0.0, cos), **usage_arrays({0: [[step, 1]]})))
    recorder.record(4, {"task0/loss": 1.0}, cosines([0, 2], 0.0, 0.9))  # no diagnostics this step: stale arrays
    assert recorder.accumulated["grad_cos"] == {"0,2": {"sum": pytest.approx(0.3), "negative": 1, "count": 3}}
    assert recorder.accumulated["expert_usage"] == {"0": {"sum": [[3.0, 3.0]], "count": 3}}
    assert recorder.latest_arrays["train_iter"] == 2

    state = json.loads(json.dumps(recorder.state_dict()))  # JSON-able
    snapshot = recorder.state_dict()
    resumed = DiagnosticsRecorder(str(tmp_path / "b"), 0, {})
    resumed.load_state_dict(state)
    for r in (recorder, resumed):
        r.record(5, learn_log(0.1), cosines([0, 2], 0.0, 0.1))
    assert resumed.accumulated == recorder.accumulated
    assert snapshot["accumulated"]["grad_cos"]["0,2"]["count"] == 3  # a saved state does not follow the recorder
    summary = domain_summary([resumed.accumulated], DOMAINS)
    assert summary["grad_cos"]["between"]["mean_cosine"] == pytest.approx(0.1)

    old = DiagnosticsRecorder(str(tmp_path / "c"), 0, {})
    old.load_state_dict({"history": state["history"], "latest_arrays": state["latest_arrays"]})  # before accumulation
    old.record(6, learn_log(-0.2), cosines([0, 2], 0.0, -0.2))
    assert old.accumulated["grad_cos"] == {"0,2": {"sum": -0.2, "negative": 1, "count": 1}}
    for r in (recorder, resumed, old):
        r.close()


@pytest.mark.parametrize("with_usage", [True, False])
def test_plot_writes_a_png(tmp_path, with_usage):
    acc = new_accumulator()
    accumulate(acc, cosines(range(5), within=0.8, between=-0.5))
    if with_usage:
        accumulate(acc, usage_arrays({0: [[1, 0, 0]], 2: [[0, 1, 0]], 4: [[0, 0, 1]]}))
    name = plot_domain_diagnostics(tmp_path / "domain_diagnostics.png", domain_summary([acc], DOMAINS))
    assert name == "domain_diagnostics.png"
    assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
