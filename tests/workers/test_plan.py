"""The plan of which batch goes to the workers when: pure bookkeeping, no processes."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from kloader._workers.plan import Plan, Task

BATCHES = 4  # per epoch


def task(epoch: int, batch: int) -> Task:
    return Task(7, epoch, batch, np.array([epoch * 10 + batch]))


def plan_from(start: Task) -> Iterator[Task]:
    epoch, batch = start.epoch, start.batch
    while True:
        for b in range(batch, BATCHES):
            yield task(epoch, b)
        epoch, batch = epoch + 1, 0


def sent(plan: Plan, count: int) -> list[tuple[int, int]]:
    return [plan.next_to_send().key[1:] for _ in range(count)]


def test_tasks_go_out_in_plan_order_across_the_epoch_boundary() -> None:
    """From (0, 2): the rest of epoch 0, then epoch 1 from its first batch."""
    plan = Plan(plan_from, keep=4)
    plan.continue_from(task(0, 2))
    assert sent(plan, 4) == [(0, 2), (0, 3), (1, 0), (1, 1)]
    assert plan.in_flight == 4 and plan.is_coming(task(0, 3).key)


def test_nothing_is_planned_before_a_start() -> None:
    with pytest.raises(StopIteration):
        Plan(plan_from, keep=4).next_to_send()


def test_a_restart_does_not_send_what_is_already_out_or_back() -> None:
    """Restarting at a task already in flight or already received sends neither again."""
    plan = Plan(plan_from, keep=4)
    plan.continue_from(task(0, 0))
    assert sent(plan, 2) == [(0, 0), (0, 1)]
    assert not plan.receive(task(0, 1).key, "b01", wanted=task(0, 0).key)  # kept for later
    plan.continue_from(task(0, 0))
    assert sent(plan, 2) == [(0, 2), (0, 3)]
    assert plan.take(task(0, 1).key) == (True, "b01")
    assert plan.take(task(0, 1).key) == (False, None)


def test_the_wanted_result_is_handed_to_the_caller_not_kept() -> None:
    plan = Plan(plan_from, keep=4)
    plan.continue_from(task(0, 0))
    sent(plan, 1)
    assert plan.receive(task(0, 0).key, "b00", wanted=task(0, 0).key)
    assert plan.in_flight == 0 and plan.take(task(0, 0).key) == (False, None)


def test_early_results_are_bounded_oldest_first() -> None:
    """At most `keep` results wait to be asked for; the oldest go first."""
    plan = Plan(plan_from, keep=2)
    plan.continue_from(task(0, 0))
    sent(plan, 4)
    for b in range(3):
        plan.receive(task(0, b).key, f"b{b}", wanted=task(0, 3).key)
    assert plan.take(task(0, 0).key) == (False, None)
    assert plan.take(task(0, 1).key) == (True, "b1")
    assert plan.take(task(0, 2).key) == (True, "b2")


def test_a_task_made_elsewhere_is_dropped_when_it_comes_back() -> None:
    """continue_after: the next task sent is the one after; the copy in flight is unwanted
    and dropped on arrival, whatever it carries (a skipped task comes back as None)."""
    plan = Plan(plan_from, keep=4)
    plan.continue_from(task(0, 0))
    assert sent(plan, 2) == [(0, 0), (0, 1)]
    plan.continue_after(task(0, 0))
    plan.continue_after(task(0, 1))
    assert plan.unwanted == [task(0, 0).key, task(0, 1).key]
    assert not plan.is_coming(task(0, 0).key) and plan.is_unwanted(task(0, 0).key)
    assert sent(plan, 1) == [(0, 2)]
    assert not plan.receive(task(0, 0).key, None, wanted=None)
    assert not plan.receive(task(0, 1).key, "b01", wanted=None)
    assert plan.unwanted == [] and plan.take(task(0, 1).key) == (False, None)
    assert plan.in_flight == 1


def test_a_task_made_elsewhere_that_was_not_out_is_simply_skipped() -> None:
    plan = Plan(plan_from, keep=4)
    plan.continue_after(task(1, 3))
    assert plan.unwanted == []
    assert sent(plan, 2) == [(2, 0), (2, 1)]


def test_a_skipped_result_is_never_kept() -> None:
    """None (a task a worker skipped) is not stored as a batch to hand out later."""
    plan = Plan(plan_from, keep=4)
    plan.continue_from(task(0, 0))
    sent(plan, 2)
    assert not plan.receive(task(0, 1).key, None, wanted=task(0, 0).key)
    assert plan.take(task(0, 1).key) == (False, None)


def test_clear_forgets_everything() -> None:
    plan = Plan(plan_from, keep=4)
    plan.continue_from(task(0, 0))
    sent(plan, 2)
    plan.continue_after(task(0, 0))
    plan.clear()
    assert plan.in_flight == 0 and plan.unwanted == []
    with pytest.raises(StopIteration):
        plan.next_to_send()
