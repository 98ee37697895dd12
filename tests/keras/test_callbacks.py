"""EpochSync and BackupAndRestore: Keras's epoch numbers and exact resume, through real fit."""

from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest

import kloader

from keras_utils import EpochLengths, IdRecorder, StopAt, id_model, keras_epochs
from utils import IdDataset, id_arrays


def epoch_ids(loader: kloader.Loader, epochs: range) -> list[list[int]]:
    return [loader.indices(b, e).tolist() for e in epochs for b in range(len(loader))]


def test_initial_epoch_trains_on_the_loaders_epoch() -> None:
    """fit(initial_epoch=3) with EpochSync trains epochs 3 and 4 on the loader's epochs 3 and 4."""
    recorder = IdRecorder()
    loader = kloader.Loader(IdDataset(10), batch_size=4, seed=6)
    id_model(recorder).fit(
        loader, epochs=5, initial_epoch=3, verbose=0, callbacks=[recorder, kloader.EpochSync(loader)]
    )
    assert recorder.train_ids() == epoch_ids(loader, range(3, 5))
    assert loader.epoch == 5


def test_epoch_sync_maps_keras_epochs_onto_slices_with_steps_per_epoch() -> None:
    """With steps_per_epoch=2 of 4 batches, Keras epoch 3 is the second half of loader epoch 1."""
    recorder = IdRecorder()
    loader = kloader.Loader(IdDataset(16), batch_size=4, seed=2)
    id_model(recorder).fit(
        loader,
        epochs=5,
        initial_epoch=3,
        steps_per_epoch=2,
        verbose=0,
        callbacks=[recorder, kloader.EpochSync(loader)],
    )
    assert recorder.train_ids() == epoch_ids(loader, range(1, 3))[2:6]


@pytest.mark.parametrize("initial_epoch", [0, 1, 2, 4])
def test_epoch_sync_with_steps_per_epoch_that_do_not_divide_the_loader(initial_epoch: int) -> None:
    """7 batches in Keras epochs of 3: slices of 3, 3 and 1 of each loader epoch. A fit from
    any initial_epoch (the short slice included) trains each Keras epoch on the batches an
    uninterrupted fit trains it on, and Keras says the input ran out in the same epochs."""
    recorder, lengths = IdRecorder(), EpochLengths()
    loader = kloader.Loader(IdDataset(28), batch_size=4, seed=3)
    expected = keras_epochs(loader, 3, 9)[initial_epoch:]
    with warnings.catch_warnings(record=True) as ran_out:
        warnings.simplefilter("ignore")
        warnings.filterwarnings("always", message="Your input ran out of data", category=UserWarning)
        id_model(recorder).fit(
            loader, epochs=9, initial_epoch=initial_epoch, steps_per_epoch=3, verbose=0,
            callbacks=[recorder, lengths, kloader.EpochSync(loader)],
        )  # fmt: skip
    assert recorder.train_ids() == [batch for epoch in expected for batch in epoch]
    assert lengths.lengths == [len(epoch) for epoch in expected]
    assert len(ran_out) == sum(len(epoch) < 3 for epoch in expected)


class ValidationRuns(keras.callbacks.Callback):
    """The batches of each validation, by the Keras epoch at whose end it ran."""

    def __init__(self, recorder: IdRecorder):
        super().__init__()
        self.recorder = recorder
        self.runs: dict[int, list[list[int]]] = {}
        self._epoch = 0
        self._seen = 0

    def on_epoch_begin(self, epoch: int, logs: object = None) -> None:
        self._epoch = epoch

    def on_test_end(self, logs: object = None) -> None:  # after the recorder's, which flushes
        ids = self.recorder.test_ids()
        self.runs[self._epoch] = ids[self._seen :]
        self._seen = len(ids)


@pytest.mark.parametrize(
    ("validation_steps", "validation_freq"), [(None, 1), (None, 2), (2, 1), (3, [2, 3, 5])]
)
@pytest.mark.parametrize("steps_per_epoch", [None, 3])
def test_epoch_sync_puts_a_validation_loader_where_an_uninterrupted_fit_reads_it(
    steps_per_epoch: int | None, validation_steps: int | None, validation_freq: int | list[int]
) -> None:
    """EpochSync(train, validation) from initial epochs 1, 2 and 3: each validation reads
    what the uninterrupted fit's validation at that epoch reads, whatever the training
    loader's steps_per_epoch and the validation_freq: one whole epoch of the validation
    loader per validation, or, with validation_steps shorter than it, the same first
    batches every time (Keras restarts its validation iterator at each validation)."""

    def fit(initial_epoch: int) -> tuple[dict[int, list[list[int]]], kloader.Loader]:
        recorder = IdRecorder()
        runs = ValidationRuns(recorder)
        train = kloader.Loader(IdDataset(28), batch_size=4, seed=3)  # 7 batches
        validation = kloader.Loader(IdDataset(20), batch_size=4, seed=11)  # 5 batches, shuffled
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Your input ran out of data", category=UserWarning)
            id_model(recorder).fit(
                train, validation_data=validation, epochs=6, initial_epoch=initial_epoch,
                steps_per_epoch=steps_per_epoch, validation_steps=validation_steps,
                validation_freq=validation_freq, verbose=0,
                callbacks=[recorder, runs, kloader.EpochSync(train, validation)],
            )  # fmt: skip
        return runs.runs, validation

    reference, validation = fit(0)
    if validation_steps is None:  # validation n reads the validation loader's epoch n, whole
        assert list(reference.values()) == [
            epoch_ids(validation, range(n, n + 1)) for n in range(len(reference))
        ]
    else:
        assert all(run == epoch_ids(validation, range(1))[:validation_steps] for run in reference.values())
    for initial_epoch in (1, 2, 3):
        resumed, _ = fit(initial_epoch)
        assert resumed == {epoch: run for epoch, run in reference.items() if epoch >= initial_epoch}


def test_keras_backup_and_restore_with_epoch_sync(tmp_path: Path) -> None:
    """Keras's own BackupAndRestore resumes at the interrupted epoch; with EpochSync
    that epoch trains on the loader's order for it (from its first batch, as Keras
    restarts the epoch)."""
    backup = str(tmp_path / "backup")
    recorder = IdRecorder()
    model = id_model(recorder)
    loader = kloader.Loader(IdDataset(12), batch_size=4, seed=4)
    callbacks = [recorder, keras.callbacks.BackupAndRestore(backup), kloader.EpochSync(loader)]
    with contextlib.suppress(RuntimeError):
        model.fit(loader, epochs=4, verbose=0, callbacks=[*callbacks, StopAt(7)])  # dies in epoch 2
    recorder.train.clear()
    fresh = kloader.Loader(IdDataset(12), batch_size=4, seed=4)
    model.fit(
        fresh,
        epochs=4,
        verbose=0,
        callbacks=[recorder, keras.callbacks.BackupAndRestore(backup), kloader.EpochSync(fresh)],
    )
    assert recorder.train_ids() == epoch_ids(fresh, range(2, 4))


@pytest.mark.parametrize(("source", "num_workers"), [("dataset", 0), ("dataset", 2), ("arrays", 0)])
def test_kloader_backup_and_restore_resumes_at_the_next_batch(
    tmp_path: Path, source: str, num_workers: int
) -> None:
    """kloader.BackupAndRestore saves the loader position with the weights: after a crash
    in epoch 1, the restarted fit continues right after the last backup."""

    def samples() -> object:  # arrays without a transform: gathered by tf.data on TensorFlow
        return id_arrays(19) if source == "arrays" else IdDataset(19)

    backup = str(tmp_path / "backup")
    loader = kloader.Loader(samples(), batch_size=4, seed=8, num_workers=num_workers)  # 5 batches
    reference = epoch_ids(loader, range(3))
    recorder = IdRecorder()
    model = id_model(recorder)
    with contextlib.suppress(RuntimeError):
        model.fit(
            loader, epochs=3, verbose=0,
            callbacks=[recorder, kloader.BackupAndRestore(loader, backup, save_freq=3), StopAt(8)],
        )  # fmt: skip
    first = recorder.train_ids()
    assert len(first) == 8
    state = json.loads((tmp_path / "backup" / kloader.BackupAndRestore.STATE_FILE).read_text())["kloader"][
        "loader"
    ]
    assert (state["epoch"], state["batch"]) == (1, 1), "last backup after batch 6 = epoch 1, batch 1"

    recorder.train.clear()
    restarted = kloader.Loader(
        samples(), batch_size=4, seed=None, num_workers=num_workers
    )  # seed from the state
    model.fit(
        restarted,
        epochs=3,
        verbose=0,
        callbacks=[recorder, kloader.BackupAndRestore(restarted, backup, save_freq=3)],
    )
    assert restarted.seed == 8
    assert first[:6] + recorder.train_ids() == reference


def test_backup_at_the_end_of_an_epoch_resumes_with_the_next_epoch(tmp_path: Path) -> None:
    """A backup taken on the last batch of an epoch resumes with the next epoch, not a replay."""
    backup = str(tmp_path / "backup")
    loader = kloader.Loader(IdDataset(12), batch_size=4, seed=3)  # 3 batches, backups every 3 = epoch ends
    reference = epoch_ids(loader, range(3))
    recorder = IdRecorder()
    model = id_model(recorder)
    with contextlib.suppress(RuntimeError):
        model.fit(
            loader,
            epochs=3,
            verbose=0,
            callbacks=[recorder, kloader.BackupAndRestore(loader, backup, save_freq=3), StopAt(4)],
        )
    first = recorder.train_ids()
    recorder.train.clear()
    restarted = kloader.Loader(IdDataset(12), batch_size=4, seed=3)
    model.fit(
        restarted,
        epochs=3,
        verbose=0,
        callbacks=[recorder, kloader.BackupAndRestore(restarted, backup, save_freq=3)],
    )
    assert first[:3] + recorder.train_ids() == reference


def test_shards_sharing_one_backup_dir_each_resume_their_own_position(tmp_path: Path) -> None:
    """The two ranks of a job pass the same backup_dir (as with Keras's own callback): each
    shard keeps its backup in its own subfolder, and each resumes at its own next batch.
    In one folder, the second rank's files replaced the first's, whose resume was refused."""
    backup = str(tmp_path / "backup")

    def shard_loader(index: int) -> kloader.Loader:
        return kloader.Loader(IdDataset(24), batch_size=4, seed=3, shard=(index, 2))  # 3 batches

    first_runs = []
    for index in (0, 1):
        loader, recorder = shard_loader(index), IdRecorder()
        with contextlib.suppress(RuntimeError):
            id_model(recorder).fit(
                loader,
                epochs=2,
                verbose=0,
                callbacks=[recorder, kloader.BackupAndRestore(loader, backup, save_freq=2), StopAt(4)],
            )
        first_runs.append(recorder.train_ids())  # 4 batches, all backed up (save_freq=2)
    assert sorted(p.name for p in (tmp_path / "backup").iterdir()) == ["shard-0-of-2", "shard-1-of-2"]
    for index in (0, 1):
        recorder, restarted = IdRecorder(), shard_loader(index)
        id_model(recorder).fit(
            restarted,
            epochs=2,
            verbose=0,
            callbacks=[recorder, kloader.BackupAndRestore(restarted, backup, save_freq=2)],
        )
        assert first_runs[index] + recorder.train_ids() == epoch_ids(shard_loader(index), range(2))


def test_a_backup_of_another_number_of_shards_is_refused(tmp_path: Path) -> None:
    """Resumed with another number of processes, the backup is refused with a message that
    says so, instead of training again from scratch."""
    backup = str(tmp_path / "backup")
    loader = kloader.Loader(IdDataset(24), batch_size=4, seed=3, shard=(0, 2))
    with contextlib.suppress(RuntimeError):
        id_model(IdRecorder()).fit(
            loader,
            epochs=2,
            verbose=0,
            callbacks=[kloader.BackupAndRestore(loader, backup, save_freq=2), StopAt(4)],
        )
    for shard in (None, (0, 3)):
        other = kloader.Loader(IdDataset(24), batch_size=4, seed=3, shard=shard)
        with pytest.raises(
            ValueError, match=r"written by another number of processes \(it holds shard-0-of-2\)"
        ):
            id_model(IdRecorder()).fit(
                other, epochs=2, verbose=0, callbacks=[kloader.BackupAndRestore(other, backup)]
            )


def test_callbacks_take_loaders_only() -> None:
    """Passing something other than a Loader is refused."""
    with pytest.raises(TypeError, match=r"kloader\.Loader"):
        kloader.EpochSync(np.zeros(3))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"kloader\.Loader"):
        kloader.BackupAndRestore(np.zeros(3), "/tmp/x")  # type: ignore[arg-type]


def test_backup_and_restore_with_steps_per_epoch(tmp_path: Path) -> None:
    """steps_per_epoch slicing loader epochs, a crash in the middle of a Keras epoch: the
    restarted run trains the rest of that Keras epoch, then the same slices as an
    uninterrupted run."""
    backup = str(tmp_path / "backup")
    loader = kloader.Loader(IdDataset(24), batch_size=4, seed=5)  # 6 batches, Keras epochs of 2
    reference = epoch_ids(loader, range(2))  # 6 Keras epochs = 2 loader epochs
    recorder = IdRecorder()
    model = id_model(recorder)
    callbacks = [recorder, kloader.BackupAndRestore(loader, backup, save_freq=1)]
    with contextlib.suppress(RuntimeError):
        model.fit(loader, epochs=6, steps_per_epoch=2, verbose=0, callbacks=[*callbacks, StopAt(5)])
    first = recorder.train_ids()
    assert len(first) == 5  # Keras epochs 0, 1 and the first step of epoch 2; backed up after each
    recorder.train.clear()
    restarted = kloader.Loader(IdDataset(24), batch_size=4, seed=5)
    model.fit(
        restarted, epochs=6, steps_per_epoch=2, verbose=0,
        callbacks=[recorder, kloader.BackupAndRestore(restarted, backup, save_freq=1)],
    )  # fmt: skip
    assert first + recorder.train_ids() == reference


@pytest.mark.filterwarnings("ignore:Your input ran out of data:UserWarning")
@pytest.mark.parametrize(
    ("samples", "steps", "crash_after"),
    [
        (28, 3, 4),  # 7 batches, Keras epochs of 3, 3, 1: in Keras epoch 1, after its first batch
        (28, 3, 7),  # after the short Keras epoch 2 (its one batch)
        (28, 3, 8),  # in Keras epoch 3, the first of the next loader epoch
        (12, 5, 4),  # steps_per_epoch beyond the loader's 3 batches: Keras epochs of 3
    ],
)
def test_backup_and_restore_with_steps_per_epoch_that_do_not_divide_the_loader(
    tmp_path: Path, samples: int, steps: int, crash_after: int
) -> None:
    """A crash anywhere in a fit whose steps_per_epoch does not divide the loader: the
    restarted fit trains the rest of the Keras epoch it crashed in, then each later Keras
    epoch on the batches an uninterrupted fit trains it on."""
    backup = str(tmp_path / "backup")
    loader = kloader.Loader(IdDataset(samples), batch_size=4, seed=9)
    expected = keras_epochs(loader, steps, 6)
    recorder, lengths = IdRecorder(), EpochLengths()
    model = id_model(recorder)
    with contextlib.suppress(RuntimeError):
        model.fit(
            loader, epochs=6, steps_per_epoch=steps, verbose=0,
            callbacks=[recorder, kloader.BackupAndRestore(loader, backup, save_freq=1), StopAt(crash_after)],
        )  # fmt: skip
    first = recorder.train_ids()
    assert len(first) == crash_after
    recorder.train.clear()
    restarted = kloader.Loader(IdDataset(samples), batch_size=4, seed=9)
    model.fit(
        restarted, epochs=6, steps_per_epoch=steps, verbose=0,
        callbacks=[recorder, lengths, kloader.BackupAndRestore(restarted, backup, save_freq=1)],
    )  # fmt: skip
    assert first + recorder.train_ids() == [batch for epoch in expected for batch in epoch]
    trained = crash_after
    left = [len(epoch) for epoch in expected]
    while trained >= left[0]:
        trained -= left.pop(0)
    left[0] -= trained  # the Keras epoch the crash was in, less what it had trained
    assert lengths.lengths == left


@pytest.mark.parametrize("crashes", [(5, 1), (5, 2), (3, 4), (7, 9)])
def test_backup_and_restore_after_two_crashes(tmp_path: Path, crashes: tuple[int, int]) -> None:
    """A run resumed by kloader.BackupAndRestore crashes again, before or after its first
    epoch end; a third run finishes: together they train the uninterrupted run's sequence.
    (Keras's own callback counts the epoch from the first epoch end of each run: a crash
    before it recorded epoch 0 and the third run began again from epoch 0.)"""
    backup = str(tmp_path / "backup")
    reference = epoch_ids(kloader.Loader(IdDataset(20), batch_size=4, seed=4), range(4))  # 5 batches
    recorder = IdRecorder()
    model = id_model(recorder)
    for crash in [*crashes, None]:
        loader = kloader.Loader(IdDataset(20), batch_size=4, seed=4)
        callbacks = [recorder, kloader.BackupAndRestore(loader, backup, save_freq=1)]
        if crash is not None:
            callbacks.append(StopAt(crash))
        with contextlib.suppress(RuntimeError):
            model.fit(loader, epochs=4, verbose=0, callbacks=callbacks)
    assert recorder.train_ids() == reference


def test_double_checkpoint_takes_weights_and_position_from_the_same_backup(tmp_path: Path) -> None:
    """double_checkpoint=True with damaged newest weights: Keras restores the previous
    weights, and the loader resumes from the previous backup's position with them, so
    no batch between the two backups goes untrained."""
    backup = tmp_path / "backup"
    loader = kloader.Loader(IdDataset(16), batch_size=4, seed=5)  # 4 batches
    reference = epoch_ids(loader, range(2))
    recorder = IdRecorder()
    model = id_model(recorder)
    callback = kloader.BackupAndRestore(loader, str(backup), save_freq=2, double_checkpoint=True)
    with contextlib.suppress(RuntimeError):
        model.fit(loader, epochs=2, verbose=0, callbacks=[recorder, callback, StopAt(7)])
    # Backups after batches 2, 4 and 6; the newest (after 6) is damaged, the previous is after 4.
    assert len(recorder.train_ids()) == 7
    (backup / "latest.weights.h5").write_bytes(b"damaged")
    previous = json.loads((backup / (kloader.BackupAndRestore.STATE_FILE + ".bkp")).read_text())
    assert (previous["kloader"]["loader"]["epoch"], previous["kloader"]["loader"]["batch"]) == (1, 0)

    recorder.train.clear()
    restarted = kloader.Loader(IdDataset(16), batch_size=4, seed=5)
    model.fit(
        restarted,
        epochs=2,
        verbose=0,
        callbacks=[
            recorder,
            kloader.BackupAndRestore(restarted, str(backup), save_freq=2, double_checkpoint=True),
        ],
    )
    assert recorder.train_ids() == reference[4:], "resumes after batch 4, where the restored weights are"


@pytest.mark.parametrize("backup_first", [False, True])
def test_backup_and_restore_with_epoch_sync_resumes_the_validation_loader_too(
    tmp_path: Path, backup_first: bool
) -> None:
    """As the README says: kloader.BackupAndRestore steers the training loader, and
    EpochSync(train, validation) beside it puts a shuffled validation loader where the
    uninterrupted run's validations read it. A crash in Keras epoch 2 (after two
    validations), then a fresh process's loaders: the same training batches from the
    next one, and validations 2 and 3 read the validation loader's epochs 2 and 3. In
    either order: EpochSync leaves the training loader to BackupAndRestore (listed after
    it, it used to put that loader back at its Keras epoch's start: batches trained twice,
    the last epoch never)."""
    backup = str(tmp_path / "backup")

    def fit(backup_and_crash: int | None) -> tuple[IdRecorder, dict[int, list[list[int]]], kloader.Loader]:
        recorder = IdRecorder()
        runs = ValidationRuns(recorder)
        train = kloader.Loader(IdDataset(20), batch_size=4, seed=3)  # 5 batches
        validation = kloader.Loader(IdDataset(12), batch_size=4, seed=11)  # 3 batches, shuffled
        callbacks: list[keras.callbacks.Callback] = [recorder, runs]
        if backup_and_crash is not None:
            steering = [
                kloader.EpochSync(train, validation),
                kloader.BackupAndRestore(train, backup, save_freq=1),
            ]
            callbacks += steering[::-1] if backup_first else steering
        if backup_and_crash:
            callbacks.append(StopAt(backup_and_crash))
        with contextlib.suppress(RuntimeError):
            id_model(recorder).fit(
                train, validation_data=validation, epochs=4, verbose=0, callbacks=callbacks
            )
        return recorder, runs.runs, validation

    reference, reference_runs, validation = fit(None)
    assert list(reference_runs.values()) == [epoch_ids(validation, range(n, n + 1)) for n in range(4)]
    fit(12)  # crashes after batch 2 of Keras epoch 2
    resumed, resumed_runs, _ = fit(0)
    assert resumed.train_ids() == reference.train_ids()[12:]
    assert resumed_runs == {2: reference_runs[2], 3: reference_runs[3]}


def test_damaged_backup_metadata_names_the_file(tmp_path: Path) -> None:
    """A training metadata file that is not JSON: a ValueError that names it and says what to do."""
    backup = tmp_path / "backup"
    backup.mkdir()
    (backup / kloader.BackupAndRestore.STATE_FILE).write_text("{not json")
    loader = kloader.Loader(IdDataset(8), batch_size=4, seed=1)
    with pytest.raises(ValueError, match=r"training_metadata\.json.*Delete the backup folder"):
        id_model(IdRecorder()).fit(
            loader, epochs=1, verbose=0, callbacks=[kloader.BackupAndRestore(loader, str(backup))]
        )


@pytest.mark.parametrize("own_filter", [False, True])
def test_a_crash_during_a_resumed_epoch_leaves_the_warning_filters_as_they_were(
    tmp_path: Path, own_filter: bool
) -> None:
    """The "ran out of data" warning is silenced for a resumed epoch only: after a crash in
    that epoch and a finished run, warnings.filters is what it was before, the user's own
    filter for that warning (equal to the one kloader adds) included."""
    backup = str(tmp_path / "backup")

    def fit(batches: int | None) -> None:
        loader = kloader.Loader(IdDataset(16), batch_size=4, seed=2)
        callbacks: list[keras.callbacks.Callback] = [kloader.BackupAndRestore(loader, backup, save_freq=1)]
        if batches is not None:
            callbacks.append(StopAt(batches))
        with contextlib.suppress(RuntimeError):
            id_model(IdRecorder()).fit(loader, epochs=2, verbose=0, callbacks=callbacks)

    with warnings.catch_warnings():
        if own_filter:
            warnings.filterwarnings("ignore", message="Your input ran out of data", category=UserWarning)
        filters_before = list(warnings.filters)
        fit(2)  # crash in epoch 0 after batch 2
        fit(1)  # resume mid-epoch (filter on), crash again
        assert list(warnings.filters) != filters_before, "the resumed epoch silences Keras's warning"
        fit(None)  # resume and finish
        assert list(warnings.filters) == filters_before
