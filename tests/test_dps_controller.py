"""Tests of the DPS curriculum controller (docs/dps.md) with scripted evaluation returns."""
import doctest
import json

import pytest

import lzero_ext.dps.controller as controller_module
from lzero_ext.dps.controller import (
    ATARI_DPS_TARGETS, DMC_DPS_TARGETS, DPSController, dps_preset, resolve_targets,
)

TASKS = ['t0', 't1', 't2', 't3', 't4', 't5', 't6', 't7']
TARGETS = {name: 10.0 for name in TASKS}


def make(num_stages: int = 5, min0: int = 100, max_iters: int = 1000, tasks=TASKS) -> DPSController:
    return DPSController(tasks, targets=TARGETS, num_stages=num_stages, min_stage0_iters=min0,
                         max_stage_iters=max_iters)


def solve(*names: str) -> dict:
    return {name: 11.0 for name in names}


def test_no_switch_before_min_stage0_iters_even_if_everything_but_one_is_solved():
    ctrl = make()
    for it in range(0, 100, 10):
        assert ctrl.update(it, solve(*TASKS[:7])) is None
    assert ctrl.stage == 0 and len(ctrl.solved) == 7
    assert ctrl.update(100, {}) == 1  # 7 newly solved >= ceil(8 / 4)
    assert ctrl.history[-1] == dict(train_iter=100, stage=1, reason='solved', newly_solved=7, threshold=2)


def test_switch_when_enough_tasks_are_newly_solved():
    ctrl = make(num_stages=5, min0=0, max_iters=10_000)
    assert ctrl.switch_threshold == 2  # ceil(8 unsolved / 4 remaining stages)
    assert ctrl.update(10, solve('t0')) is None
    assert ctrl.update(20, solve('t0', 't1')) == 1  # t0 counted once
    assert ctrl.unsolved == TASKS[2:] and ctrl.newly_solved == 0
    assert ctrl.switch_threshold == 2  # ceil(6 / 3)
    assert ctrl.update(30, solve('t2')) is None
    assert ctrl.update(40, solve('t3')) == 2
    assert ctrl.switch_threshold == 2  # ceil(4 / 2)
    assert ctrl.update(50, solve('t4', 't5')) == 3
    assert ctrl.switch_threshold == 2  # ceil(2 / 1): the last adapter waits for every remaining task
    assert ctrl.update(60, solve('t6')) is None
    assert ctrl.update(70, solve('t7')) is None  # everything solved: no adapter is needed any more
    assert ctrl.all_solved and ctrl.stage == 3 and [h['reason'] for h in ctrl.history] == ['solved'] * 3


def test_switch_on_max_stage_iters_timeout():
    ctrl = make(num_stages=5, min0=100, max_iters=50)
    assert ctrl.update(99, {}) is None
    assert ctrl.update(100, {}) == 1  # stage 0's clock starts at iteration 0: 100 >= 50
    assert ctrl.update(149, solve('t0')) is None  # 1 < ceil(8 / 3)
    assert ctrl.update(150, {}) == 2
    assert ctrl.history[-1]['reason'] == 'timeout' and ctrl.last_switch_iter == 150
    assert ctrl.newly_solved == 0 and ctrl.unsolved_at_last_switch == 7


def test_stage_is_capped_at_the_last_one():
    ctrl = make(num_stages=3, min0=0, max_iters=1)
    stages = [ctrl.update(it, {}) for it in range(1, 50)]
    assert [s for s in stages if s is not None] == [1, 2]
    assert ctrl.stage == 2 and ctrl.update(1000, solve(*TASKS[:7])) is None and ctrl.stage == 2
    single = make(num_stages=1, min0=0, max_iters=1)
    assert all(single.update(it, solve('t0')) is None for it in range(10)) and single.stage == 0


def test_solved_is_sticky():
    ctrl = make()
    ctrl.update(10, {'t0': 10.0})  # return == target counts as solved
    ctrl.update(20, {'t0': -5.0, 't1': float('nan')})
    assert ctrl.solved == {'t0'} and 't1' in ctrl.unsolved


def test_all_solved_stops_switching():
    ctrl = make(num_stages=5, min0=0, max_iters=10)
    assert ctrl.update(5, solve(*TASKS)) is None  # nothing left to learn
    assert ctrl.all_solved and ctrl.update(500, {}) is None and ctrl.stage == 0


def test_state_dict_round_trip_is_json_and_resumes_identically():
    ctrl = make(num_stages=5, min0=10, max_iters=100)
    ctrl.update(10, solve('t0', 't1'))
    ctrl.update(20, solve('t2'))
    state = json.loads(json.dumps(ctrl.state_dict()))
    resumed = make(num_stages=5, min0=10, max_iters=100)
    resumed.load_state_dict(state)
    assert resumed.state_dict() == ctrl.state_dict() and resumed.stage == 1 and resumed.solved == {'t0', 't1', 't2'}
    script = [(50, solve('t3')), (90, {}), (111, {}), (120, solve('t4', 't5', 't6'))]
    assert [resumed.update(it, r) for it, r in script] == [ctrl.update(it, r) for it, r in script]
    with pytest.raises(ValueError, match='tasks'):
        make(tasks=TASKS[:4]).load_state_dict(state)


def test_unknown_tasks_are_errors_naming_them():
    with pytest.raises(ValueError, match="'NotAGame'"):
        DPSController.from_preset('atari', ['Pong', 'NotAGame'])
    with pytest.raises(ValueError, match="'t9'"):
        DPSController(['t0', 't9'], targets=TARGETS)
    with pytest.raises(ValueError, match="'typo'"):
        make().update(0, {'typo': 1.0})
    with pytest.raises(ValueError, match='backwards'):
        ctrl = make()
        ctrl.update(10, {})
        ctrl.update(5, {})


def test_targets_presets_and_name_resolution():
    assert len(ATARI_DPS_TARGETS) == 26 and len(DMC_DPS_TARGETS) == 18
    assert ATARI_DPS_TARGETS['Amidar'] == 100.5 and ATARI_DPS_TARGETS['Breakout'] == 30.5
    assert ATARI_DPS_TARGETS['MsPacman'] == 6951.6 and DMC_DPS_TARGETS['hopper-hop'] == 150.0
    ctrl = DPSController.from_preset('atari', ['PongNoFrameskip-v4', 'ALE/MsPacman-v5'], targets={'Pong': 1.0})
    assert ctrl.targets == {'PongNoFrameskip-v4': 20.0, 'ALE/MsPacman-v5': 6951.6}  # override is by exact name
    assert (ctrl.num_stages, ctrl.min_stage0_iters, ctrl.max_stage_iters) == (5, 50_000, 20_000)
    dmc = DPSController.from_preset('dmc', ['cartpole-swingup'], targets={'cartpole-swingup': 800},
                                    max_stage_iters=7)
    assert dmc.targets == {'cartpole-swingup': 800.0} and (dmc.min_stage0_iters, dmc.max_stage_iters) == (10_000, 7)
    assert dps_preset('atari') == dict(num_stages=5, min_stage0_iters=50_000, max_stage_iters=20_000, rank=64,
                                       alpha=32.0, dropout=0.1)
    assert dps_preset('dmc')['alpha'] == 1.0 and dps_preset('dmc')['dropout'] == 0.0
    with pytest.raises(ValueError, match='suite'):
        dps_preset('jericho')
    with pytest.raises(ValueError, match='controller keys'):
        DPSController.from_preset('dmc', ['cartpole-swingup'], rank=8)
    assert resolve_targets(['walker-walk'], DMC_DPS_TARGETS) == {'walker-walk': 900.0}


def test_docstring_examples():
    result = doctest.testmod(controller_module)
    assert result.attempted > 0 and result.failed == 0
