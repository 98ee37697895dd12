"""The cursor, passes and the rules that move a loader's epoch, as pure logic (no Keras).

`drive` plays a framework the way Keras's EpochIterator does: a pull to build
the model that is then thrown away (`reset`), and epochs that pull through a
read-ahead of 0, 1 or 2 batches before the model trains on them. The same
rules run under real Keras in tests/keras/test_read_ahead.py.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterator

import pytest

from kloader._core import passes
from kloader._core.cursor import Cursor, Position
from kloader._core.epochs import IteratorPasses, loose_pass, manual_pass
from kloader._core.passes import Pass


def read_ahead(batches: Iterator[Position], depth: int) -> Iterator[Position]:
    """Hands out what `batches` yields, `depth` batches ahead of the consumer (as Keras's
    prefetching iterators do: 1 in Keras 3.14 and on accelerators, 2 in 3.8-3.13)."""
    queue: deque[Position] = deque(itertools.islice(batches, depth))
    for batch in batches:
        queue.append(batch)
        yield queue.popleft()
    yield from queue


def drive(
    passes: IteratorPasses, *, epochs: int, depth: int, built: bool, steps: int | None = None
) -> list[list[Position]]:
    """What the model trains on in `epochs` epochs, through a read-ahead of `depth`."""
    if not built:
        build = read_ahead(passes.new_pass(Position), depth)
        next(build)
        passes.reset()
    trained: list[list[Position]] = []
    current: Iterator[Position] | None = None
    for _ in range(epochs):
        if current is None or steps is None:
            current = read_ahead(passes.new_pass(Position), depth)
        epoch = list(itertools.islice(current, steps)) if steps else list(current)
        if steps and len(epoch) < steps:  # ran out: a new iterator next time
            current = None
        trained.append(epoch)
        passes.epoch_ended()
    return trained


def epoch_positions(epoch: int, batches: int) -> list[Position]:
    return [Position(epoch, b) for b in range(batches)]


@pytest.mark.parametrize("depth", [0, 1, 2, 5])
@pytest.mark.parametrize("batches", [1, 2, 3, 7])
@pytest.mark.parametrize("built", [True, False])
def test_each_epoch_trains_on_its_own_loader_epoch_whatever_the_read_ahead(
    depth: int, batches: int, built: bool
) -> None:
    """Any read-ahead depth, any epoch length, built or not: epochs 0..E-1, then the cursor at E."""
    cursor = Cursor(batches)
    trained = drive(IteratorPasses(cursor), epochs=3, depth=depth, built=built)
    assert trained == [epoch_positions(e, batches) for e in range(3)]
    assert cursor.position == (3, 0)


@pytest.mark.parametrize("depth", [0, 1, 2])
def test_a_second_run_continues_with_the_next_epochs(depth: int) -> None:
    """A second framework iterator over the same cursor starts where the first ended."""
    cursor = Cursor(2)
    drive(IteratorPasses(cursor), epochs=2, depth=depth, built=False)
    trained = drive(IteratorPasses(cursor), epochs=1, depth=depth, built=True)
    assert trained == [epoch_positions(2, 2)]
    assert cursor.position == (3, 0)


@pytest.mark.parametrize("depth", [0, 1, 2])
def test_steps_slicing_an_epoch_continues_one_pass_across_framework_epochs(depth: int) -> None:
    """steps=2 over 5-batch epochs: slices [0,1], [2,3], [4], then the next loader epoch."""
    cursor = Cursor(5)
    trained = drive(IteratorPasses(cursor), epochs=4, depth=depth, built=False, steps=2)
    assert trained == [
        [Position(0, 0), Position(0, 1)],
        [Position(0, 2), Position(0, 3)],
        [Position(0, 4)],
        [Position(1, 0), Position(1, 1)],
    ]


def test_a_pass_pulled_to_its_end_completes_only_when_the_epoch_ends() -> None:
    """Exhausting a pass moves nothing; epoch_ended does; reset discards."""
    cursor = Cursor(1)
    passes = IteratorPasses(cursor)
    assert list(passes.new_pass(Position)) == [Position(0, 0)]
    assert cursor.position == (0, 0)
    passes.reset()
    passes.epoch_ended()
    assert cursor.position == (0, 0) and passes.open_passes == 0
    assert list(passes.new_pass(Position)) == [Position(0, 0)]
    passes.epoch_ended()
    assert cursor.position == (1, 0)


def test_an_epoch_ending_before_the_pass_handed_out_all_leaves_it_open() -> None:
    """A framework epoch shorter than the loader epoch (steps, stop_training) completes nothing."""
    cursor = Cursor(3)
    passes = IteratorPasses(cursor)
    part = passes.new_pass(Position)
    next(part)
    passes.epoch_ended()
    assert cursor.position == (0, 0) and passes.open_passes == 1
    list(part)
    passes.epoch_ended()
    assert cursor.position == (1, 0) and passes.open_passes == 0


def test_completes_on_last_moves_the_cursor_as_the_last_batch_goes() -> None:
    """TensorFlow's rule: the next pass, started early by a prefetch, begins at the next epoch."""
    cursor = Cursor(2)
    passes = IteratorPasses(cursor, completes_on_last=True)
    first = passes.new_pass(Position)
    assert [next(first), next(first)] == epoch_positions(0, 2)
    assert cursor.position == (1, 0)
    assert list(passes.new_pass(Position)) == epoch_positions(1, 2)


# ---------------------------------------------- a call that ends in the middle of a pass


def pulled(passes: IteratorPasses, count: int) -> Pass:
    """A new pass of `passes` with `count` batches handed out (trained or read ahead)."""
    made = passes.new_pass(Position)
    for _ in range(count):
        next(made)
    return made


def test_a_call_ending_mid_pass_leaves_the_cursor_after_the_last_trained_batch() -> None:
    """steps_per_epoch=3 of a 7-batch epoch, 2 batches read ahead: the next call starts at batch 3."""
    cursor = Cursor(7)
    passes = IteratorPasses(cursor)
    pulled(passes, 5)
    passes.epoch_ended()
    passes.trained(3)
    assert cursor.position == (0, 0)
    passes.close()
    assert cursor.position == (0, 3)


def test_slices_across_framework_epochs_add_up() -> None:
    cursor = Cursor(7)
    passes = IteratorPasses(cursor)
    part = pulled(passes, 4)
    passes.epoch_ended()
    passes.trained(3)
    next(part)
    passes.epoch_ended()
    passes.trained(2)
    passes.close()
    assert cursor.position == (0, 5)


def test_tensorflows_early_completion_is_taken_back_for_batches_never_trained() -> None:
    """tf.data prefetched the last batch of a 3-batch epoch (the pass completed), 2 were trained."""
    cursor = Cursor(3)
    passes = IteratorPasses(cursor, completes_on_last=True)
    pulled(passes, 3)
    assert cursor.position == (1, 0)
    passes.epoch_ended()
    passes.trained(2)
    passes.close()
    assert cursor.position == (0, 2)


def test_a_prefetched_next_pass_that_trained_nothing_moves_back_to_its_start() -> None:
    """Epoch 0 trained in full; tf.data also handed out all of epoch 1 (completing it), untrained."""
    cursor = Cursor(2)
    passes = IteratorPasses(cursor, completes_on_last=True)
    pulled(passes, 2)
    pulled(passes, 2)
    assert cursor.position == (2, 0)
    passes.epoch_ended()
    passes.trained(2)
    passes.close()
    assert cursor.position == (1, 0)


@pytest.mark.parametrize("completes_on_last", [False, True])
def test_a_stopped_call_leaves_the_cursor_at_the_start_of_the_pass_it_cut(completes_on_last: bool) -> None:
    cursor = Cursor(3)
    cursor.jump_to(2, 0)
    passes = IteratorPasses(cursor, completes_on_last=completes_on_last)
    pulled(passes, 3)
    passes.epoch_ended()
    passes.trained(1)
    passes.stopped(1)
    passes.close()
    assert cursor.position == (2, 0)


@pytest.mark.parametrize("completes_on_last", [False, True])
def test_a_call_stopped_in_its_second_epoch_of_one_pass_leaves_the_cursor_after_the_first(
    completes_on_last: bool,
) -> None:
    """Framework epochs of 2 batches in a pass of 5 (Keras's steps_per_epoch): stopped after
    one batch of the second, the cursor goes back to that epoch's start, not the pass's."""
    cursor = Cursor(5)
    passes = IteratorPasses(cursor, completes_on_last=completes_on_last)
    pulled(passes, 5)  # read ahead to the pass's end
    passes.training(2)
    passes.epoch_trained()
    passes.training(1)
    passes.epoch_trained(stopped=True)
    passes.close()
    assert cursor.position == (0, 2)


@pytest.mark.parametrize("completes_on_last", [False, True])
def test_a_reading_iterator_reads_the_epoch_the_trained_batches_reached(completes_on_last: bool) -> None:
    """Validation on the training loader: after 2 batches trained of a 3-batch loader epoch,
    pulled to its end (and completed, on TensorFlow), it reads epoch 0, where the trained
    batches are, not epoch 1, where TensorFlow's cursor is; after the third, epoch 1, even
    where the framework has not ended the epoch yet (JAX: the validation may start first)."""
    cursor = Cursor(3)
    training = IteratorPasses(cursor, completes_on_last=completes_on_last)
    pulled(training, 3)
    training.training(1)
    training.training(1)
    assert cursor.position == ((1, 0) if completes_on_last else (0, 0))
    reading = IteratorPasses(cursor, reads_only=True, reads_beside=training)
    assert list(reading.new_pass(Position)) == [(0, 0), (0, 1), (0, 2)]
    training.epoch_trained()
    assert list(reading.new_pass(Position)) == [(0, 0), (0, 1), (0, 2)]
    training.training(1)  # all trained: epoch 1, even before the framework ends the epoch
    assert list(reading.new_pass(Position)) == [(1, 0), (1, 1), (1, 2)]


def test_a_pass_trained_in_full_completes_even_if_its_epoch_never_ended() -> None:
    """stop_training at an epoch's last batch: Keras leaves before the epoch's end."""
    cursor = Cursor(3)
    passes = IteratorPasses(cursor)
    pulled(passes, 3)
    passes.trained(3)
    passes.stopped(3)
    passes.close()
    assert cursor.position == (1, 0)


def test_without_counts_the_call_end_moves_nothing() -> None:
    """A call whose trained batches were not counted keeps the rules without them."""
    cursor = Cursor(3)
    passes = IteratorPasses(cursor, completes_on_last=True)
    pulled(passes, 3)
    passes.close()
    assert cursor.position == (1, 0)


def test_passes_kept_for_counting_stay_few_when_nothing_is_counted() -> None:
    cursor = Cursor(2)
    passes = IteratorPasses(cursor)
    for _ in range(50):
        pulled(passes, 2)
        passes.epoch_ended()
    assert cursor.position == (50, 0)
    assert len(passes._in_training) <= 8


def test_an_evaluation_that_used_part_of_a_prefetched_pass_does_not_complete_it() -> None:
    """evaluate(steps=3) on TensorFlow, whose prefetch pulled all 5 batches (the pass completed
    as it handed out its last): the pass is taken back, as it is where nothing reads ahead
    (Keras throws it away at the next evaluation). An evaluation that used them all, and
    a pass not pulled to its end, keep what they did."""
    cursor = Cursor(5)
    evaluation = IteratorPasses(cursor, completes_on_last=True)
    pulled(evaluation, 5)
    assert cursor.position == (1, 0)
    evaluation.epoch_ended()
    evaluation.evaluated(3)
    assert cursor.position == (0, 0)
    evaluation.reset()
    pulled(evaluation, 5)
    evaluation.epoch_ended()
    evaluation.evaluated(5)
    assert cursor.position == (1, 0)
    evaluation.reset()
    pulled(evaluation, 4)
    evaluation.epoch_ended()
    evaluation.evaluated(3)
    assert cursor.position == (1, 0)


@pytest.mark.parametrize("batches", [1, 2, 5])
def test_a_pass_built_from_and_prefetched_to_its_end_is_taken_back_on_reset(batches: int) -> None:
    """TensorFlow under a tf.distribute strategy builds the model from a pass, and tf.data
    can pull a short one to its end (completing it) before Keras throws it away: epoch 0
    is still the first epoch trained."""
    cursor = Cursor(batches)
    passes = IteratorPasses(cursor, completes_on_last=True)
    pulled(passes, batches)
    assert cursor.position == (1, 0)
    passes.reset()
    assert cursor.position == (0, 0)
    assert list(passes.new_pass(Position)) == epoch_positions(0, batches)
    assert cursor.position == (1, 0)
    passes.epoch_ended()
    assert list(passes.new_pass(Position)) == epoch_positions(1, batches)


def test_a_reset_does_not_take_back_a_pass_after_a_jump() -> None:
    cursor = Cursor(3)
    passes = IteratorPasses(cursor, completes_on_last=True)
    pulled(passes, 3)
    cursor.jump_to(4, 1)
    passes.reset()
    assert cursor.position == (4, 1)


def test_an_evaluation_does_not_take_back_a_pass_after_a_jump() -> None:
    cursor = Cursor(5)
    evaluation = IteratorPasses(cursor, completes_on_last=True)
    pulled(evaluation, 5)
    cursor.jump_to(7, 0)
    evaluation.evaluated(3)
    assert cursor.position == (7, 0)


def test_a_jump_during_the_call_wins_over_what_was_trained() -> None:
    cursor = Cursor(7)
    passes = IteratorPasses(cursor)
    pulled(passes, 4)
    passes.trained(3)
    cursor.jump_to(5, 0)
    passes.close()
    assert cursor.position == (5, 0)


def test_a_reading_iterator_reads_whole_epochs_and_never_moves_the_cursor() -> None:
    """Validation on the loader that trains reads all of the training epoch, from batch 0."""
    cursor = Cursor(3)
    cursor.jump_to(4, 1)
    reader = IteratorPasses(cursor, reads_only=True)
    assert list(reader.new_pass(Position)) == epoch_positions(4, 3)
    reader.epoch_ended()
    assert cursor.position == (4, 1)


def test_a_jump_during_a_pass_wins_over_its_completion() -> None:
    """set_epoch / load_state_dict while a pass runs: the pass's completion moves nothing."""
    cursor = Cursor(2)
    passes = IteratorPasses(cursor)
    running = passes.new_pass(Position)
    list(running)
    cursor.jump_to(7, 0)
    passes.epoch_ended()
    assert cursor.position == (7, 0)


def test_manual_pass_moves_the_cursor_past_each_batch_and_not_past_a_failed_one() -> None:
    """iter(loader): after each batch the cursor points past it; an error leaves it on the batch."""
    cursor = Cursor(3)
    seen = iter(manual_pass(cursor, Position))
    assert next(seen) == (0, 0) and cursor.position == (0, 1)

    def fail(epoch: int, batch: int) -> Position:
        raise ValueError("broken sample")

    failing = manual_pass(cursor, fail)
    with pytest.raises(ValueError):
        next(failing)
    assert cursor.position == (0, 1)
    with pytest.raises(StopIteration):  # the pass is over after an error
        next(failing)


def test_loose_pass_completes_when_exhausted() -> None:
    """A pass no framework iterator owns moves the cursor when pulled past its end."""
    cursor = Cursor(2)
    cursor.jump_to(0, 1)
    assert list(loose_pass(cursor, Position)) == [Position(0, 1)]
    assert cursor.position == (1, 0)


@pytest.mark.parametrize(("batch", "expected"), [(0, (2, 0)), (2, (2, 2)), (3, (3, 0)), (7, (4, 1))])
def test_past_the_last_batch_is_the_next_epoch(batch: int, expected: tuple[int, int]) -> None:
    """One rule for every caller: batch b of epoch e is batch b - n of epoch e + 1."""
    cursor = Cursor(3)
    assert cursor.normalised(2, batch) == expected
    cursor.jump_to(2, batch)
    assert cursor.position == expected


def test_a_length_runs_on_into_the_next_epoch() -> None:
    """A pass of `length` batches from the middle of an epoch continues into the next."""
    cursor = Cursor(3)
    cursor.jump_to(0, 2)
    assert list(Pass(cursor, length=3)) == [Position(0, 2), Position(1, 0), Position(1, 1)]


def test_a_stop_iteration_while_making_a_batch_is_an_error_not_the_end_of_the_epoch() -> None:
    """A StopIteration out of `make` (a worker pool's iterator that ended) would end the
    framework's loop over the pass as if the epoch were over, dropping the rest of it."""
    cursor = Cursor(4)

    def make(epoch: int, batch: int) -> int:
        if batch == 2:
            raise StopIteration
        return batch

    made = Pass(cursor, make=make)
    with pytest.raises(RuntimeError, match="batch 2 of epoch 0 raised StopIteration"):
        list(made)
    assert list(made) == []  # and the pass is over


def test_an_epoch_needs_a_batch() -> None:
    with pytest.raises(ValueError, match="at least one batch"):
        Cursor(0)


def test_a_closed_iterator_hands_out_nothing_more() -> None:
    """After the framework's call ended, its passes (started or not, or made later) are empty
    and never move the cursor: a prefetch thread still pulling gets nothing."""
    cursor = Cursor(4)
    passes = IteratorPasses(cursor, completes_on_last=True)
    started, waiting = passes.new_pass(Position), passes.new_pass(Position)
    next(started)
    passes.close()
    assert list(started) == [] and list(waiting) == [] and list(passes.new_pass(Position)) == []
    passes.epoch_ended()
    assert cursor.position == (0, 0)


def test_making_names_the_pass_whose_batch_this_thread_is_making() -> None:
    """While a pass makes a batch, `passes.making()` on that thread is the pass (the
    loader asks the worker pool on its behalf); outside, and once it fails, None."""
    seen: list[object] = []

    def make(epoch: int, batch: int) -> Position:
        seen.append(passes.making())
        if batch == 1:
            raise ValueError("broken sample")
        return Position(epoch, batch)

    handing_out = Pass(Cursor(batches_per_epoch=3), make=make)
    assert next(handing_out) == (0, 0)
    with pytest.raises(ValueError):
        next(handing_out)
    assert seen == [handing_out, handing_out]
    assert passes.making() is None


def test_a_closed_pass_is_no_longer_open() -> None:
    handing_out = Pass(Cursor(batches_per_epoch=3))
    assert handing_out.is_open()
    next(handing_out)
    handing_out.close()
    assert not handing_out.is_open()
    with pytest.raises(StopIteration):
        next(handing_out)
