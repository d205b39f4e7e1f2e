"""LockstepInference: every task's call is served by one batched forward, in the serving thread."""
import threading

from policies.lockstep import LockstepInference


def _run_round(lockstep: LockstepInference, steps_per_task: dict) -> dict:
    outputs = {task: [] for task in steps_per_task}

    def work(task: int) -> None:
        try:
            for step in range(steps_per_task[task]):
                outputs[task].append(lockstep.forward(task, step))
        finally:
            lockstep.leave(task)

    with lockstep.round(list(steps_per_task)):
        threads = [threading.Thread(target=work, args=(task,), daemon=True) for task in steps_per_task]
        for thread in threads:
            thread.start()
        lockstep.serve(poll_s=0.05)
        for thread in threads:
            thread.join(10)
            assert not thread.is_alive(), "a worker is still waiting for its forward"
    return outputs


def test_each_step_is_one_batch_over_the_tasks_still_running():
    batches, batch_threads = [], set()

    def run_batch(requests):
        batches.append(sorted(requests))
        batch_threads.add(threading.current_thread().name)
        return {task: (task, args[0]) for task, (args, _kwargs) in requests.items()}

    outputs = _run_round(LockstepInference(run_batch), {0: 3, 1: 1, 2: 2})
    # tasks whose episodes end early leave; the others keep stepping together
    assert batches == [[0, 1, 2], [0, 2], [0]]
    assert outputs == {0: [(0, 0), (0, 1), (0, 2)], 1: [(1, 0)], 2: [(2, 0), (2, 1)]}
    assert batch_threads == {threading.current_thread().name}  # torch work stays in the serving thread (one pool)


def test_a_failing_batch_reaches_every_worker_and_serve_returns():
    def run_batch(requests):
        raise RuntimeError("model exploded")

    lockstep = LockstepInference(run_batch)
    errors = []

    def work(task: int) -> None:
        try:
            lockstep.forward(task, 0)
        except RuntimeError as error:
            errors.append(error)
        finally:
            lockstep.leave(task)

    with lockstep.round([0, 1]):
        threads = [threading.Thread(target=work, args=(t,), daemon=True) for t in (0, 1)]
        for thread in threads:
            thread.start()
        lockstep.serve(poll_s=0.05)
        for thread in threads:
            thread.join(10)
    assert len(errors) == 2
    assert all("model exploded" in str(e.__cause__) for e in errors)
