"""Keras callbacks that keep a Loader on Keras's epoch numbers, and resume it exactly.

Without a callback a Loader counts its own epochs: each epoch Keras completes
moves it on by one, so a fresh `fit` trains epoch e on the loader's epoch e,
and a second `fit` continues with the next epochs. Two things need Keras's
epoch number, which only callbacks receive:

- `fit(initial_epoch=k)` and `keras.callbacks.BackupAndRestore`, which must
  train epoch k on the loader's epoch k: use `EpochSync(loader)`.
- Resuming in the middle of an epoch. Keras's BackupAndRestore saves the batch
  but restarts the epoch from batch 0; `kloader.BackupAndRestore` saves the
  loader's position with the weights and resumes at the next batch, so the
  samples trained on equal those of an uninterrupted run.
"""

from __future__ import annotations

import json
import os
from typing import Any

import keras

from kloader._keras import feed, internals
from kloader._keras.loader import Loader, feed_of


def _position_of_keras_epoch(loader: Loader, keras_epoch: int, steps: int | None) -> tuple[int, int]:
    """Where Keras epoch `keras_epoch` starts, if every earlier one ran in full.

    With `steps_per_epoch` s smaller than the loader, Keras epochs are slices
    of s batches of each loader epoch, the last slice cut short at its end.
    """
    if steps is None or steps >= len(loader):
        return keras_epoch, 0
    slices = -(-len(loader) // steps)
    return keras_epoch // slices, (keras_epoch % slices) * steps


def _shard_folder(backup_dir: str, index: int, count: int) -> str:
    """Where shard `index` of `count` keeps its backup: backup_dir itself without shards."""
    return backup_dir if count == 1 else os.path.join(backup_dir, f"shard-{index}-of-{count}")


def _keras_epoch_length(loader: Loader, keras_epoch: int, steps: int | None) -> int:
    """How many batches Keras epoch `keras_epoch` trains, if every earlier one ran in full.

    Keras takes a new iterator once the current one has given the loader's length: with
    `steps_per_epoch` s not dividing the loader, the last slice of each loader epoch is
    short (Keras warns that the input ran out); with s beyond the loader, every Keras
    epoch is one loader epoch.
    """
    if steps is None or steps >= len(loader):
        return len(loader)
    _, batch = _position_of_keras_epoch(loader, keras_epoch, steps)
    return min(steps, len(loader) - batch)


def _follow_steps(loader: Loader, steps: int | None) -> None:
    """A run that starts in the middle of a loader epoch (`initial_epoch`, a resume) gets a
    fresh Keras iterator, which Keras counts from 0 up to the loader's length, however
    far into the loader epoch it starts.

    With steps_per_epoch dividing the loader, every slice is a full one: each iterator
    then hands Keras one loader epoch's worth of batches, running on into the next
    epoch. Otherwise each iterator ends with its loader epoch, where the uninterrupted
    run's short slice ends: Keras sees the input run out there (as it does in the
    uninterrupted run) and takes a new iterator at the next loader epoch's start. Either
    way the batches of every Keras epoch are exactly the uninterrupted run's.
    """
    feed_of(loader).slices_epochs = feed.slices(steps, len(loader))


class EpochSync(keras.callbacks.Callback):  # type: ignore[misc]
    """Starts each `fit` with the loaders at the epoch Keras starts from.

    With `fit(initial_epoch=k)`, or a run resumed by
    `keras.callbacks.BackupAndRestore`, epoch k then trains on the loader's
    epoch k, exactly as in an uninterrupted run. Without it a loader counts its
    own epochs and a second `fit` continues where the first stopped; with it,
    Keras's epoch numbers rule (a second `fit` from epoch 0 replays epoch 0).

    A validation loader (any loader but the one `fit` trains on) is put where an
    uninterrupted run's validation would read it: each validation reads one whole
    epoch of it, so it starts at the epoch that counts the validations
    `validation_freq` runs before epoch k. (With `validation_steps` shorter than
    the loader, Keras restarts the validation iterator at every validation: each
    reads the first batches of the loader's epoch 0, which never completes.)

    Args:
        *loaders: the training loader, and any others (validation) to keep in step.

    Example:
        ```python
        loader = kloader.Loader((x, y), batch_size=32, seed=1)
        model.fit(loader, epochs=10, initial_epoch=5, callbacks=[kloader.EpochSync(loader)])
        ```
    """

    def __init__(self, *loaders: Loader):
        super().__init__()
        if not loaders or not all(isinstance(loader, Loader) for loader in loaders):
            raise TypeError("EpochSync(*loaders) takes one or more kloader.Loader objects.")
        self.loaders = loaders
        self._placed: list[Loader] = list(loaders)  # the loaders this callback places
        self._first_epoch = True
        self._validation: internals.FitValidation | None = None

    def on_train_begin(self, logs: Any = None) -> None:
        self._first_epoch = True
        frame = internals.caller_frame(0)
        self._validation = internals.fit_validation(frame)
        # A loader that a kloader.BackupAndRestore of the same fit restores is placed by it
        # (at the batch its backup saved, on Keras's epoch numbers): placed here too, it
        # would go back to its Keras epoch's start when this callback's hook ran second.
        restored = [
            callback.loader
            for callback in internals.fit_callbacks(frame)
            if isinstance(callback, BackupAndRestore)
        ]
        self._placed = [loader for loader in self.loaders if not any(loader is other for other in restored)]
        for loader in self._placed:
            _follow_steps(loader, self._steps_of(loader))

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        if self._first_epoch:
            self._first_epoch = False
            for loader in self._placed:
                self._position(loader, epoch)

    def _trains_on(self, loader: Loader) -> bool:
        if self._validation is None or self._validation.training_data is None:
            return loader is self.loaders[0]  # no Keras fit seen: as documented, the first
        return loader is self._validation.training_data

    def _steps_of(self, loader: Loader) -> int | None:
        # Keras's evaluate restarts its iterator at every validation: never slices.
        return self.params.get("steps") if self._trains_on(loader) else None

    def _position(self, loader: Loader, keras_epoch: int) -> None:
        if self._trains_on(loader):
            epoch, batch = _position_of_keras_epoch(loader, keras_epoch, self._steps_of(loader))
            feed_of(loader).jump_to(epoch, batch)
            return
        validation = self._validation or internals.FitValidation(training_data=None, steps=None, freq=1)
        if validation.steps is not None and validation.steps < len(loader):
            feed_of(loader).jump_to(0, 0)  # its validations never complete an epoch
        else:
            feed_of(loader).jump_to(validation.validations_before(keras_epoch), 0)


class BackupAndRestore(keras.callbacks.BackupAndRestore):  # type: ignore[misc]
    """Keras's BackupAndRestore that also saves and restores the loader's exact position.

    It saves the weights every `save_freq` batches (or every epoch) as Keras
    does, and with them the position of the last batch the model trained on.
    After a crash, the restarted `fit` restores both and continues with the
    next batch of that epoch, so the sequence of samples trained on equals an
    uninterrupted run's. It also keeps the loader on Keras's epoch numbers, as
    `EpochSync` does.

    The loader's position is written into Keras's own training metadata file
    (`STATE_FILE`, under "kloader"), beside the epoch Keras records, so the
    weights and the position always come from the same checkpoint: with
    `double_checkpoint=True`, when the newest weights cannot be read and Keras
    falls back to the previous ones, the position falls back with them.

    Args:
        loader: the training loader.
        backup_dir: where to keep the backup (as in Keras's callback). A sharded loader
            keeps its own in the subfolder `shard-<index>-of-<count>`, so that every
            rank of a job may pass the same folder.
        save_freq: "epoch" or a number of batches.
        double_checkpoint: keep the previous backup too.
        delete_checkpoint: delete the backup when training finishes.

    Example:
        ```python
        loader = kloader.Loader(kloader.ImageFolder("train", image_size=(160, 160)), batch_size=64, seed=7)
        backup = kloader.BackupAndRestore(loader, "/tmp/backup", save_freq=100)
        model.fit(loader, epochs=20, callbacks=[backup])  # run again after a crash
        ```
    """

    STATE_FILE = "training_metadata.json"

    def __init__(
        self,
        loader: Loader,
        backup_dir: str,
        save_freq: str | int = "epoch",
        double_checkpoint: bool = False,
        delete_checkpoint: bool = True,
    ):
        if not isinstance(loader, Loader):
            raise TypeError(
                f"BackupAndRestore needs the kloader.Loader to save, got {type(loader).__name__}."
            )
        # Every rank of a sharded job saves its own position (and its copy of the weights):
        # ranks that share one backup_dir would overwrite each other's files.
        self._shared_dir = backup_dir
        super().__init__(
            _shard_folder(backup_dir, loader.shard_index, loader.num_shards) if backup_dir else backup_dir,
            save_freq=save_freq,
            double_checkpoint=double_checkpoint,
            delete_checkpoint=delete_checkpoint,
        )
        self.loader = loader
        self._resume: dict[str, Any] | None = None
        self._position = (0, 0)
        self._keras_epoch = 0
        self._done = 0  # batches trained in the current Keras epoch
        self._last_batch = -1
        self._first_epoch = True
        self._quiet: internals.RanOutSilenced | None = None

    def on_train_begin(self, logs: Any = None) -> None:
        self._stop_quiet()  # left by a run that crashed mid-epoch
        path = internals.backup_metadata_path(self)
        if not os.path.exists(path):
            self._refuse_another_jobs_backup()
        try:
            # Restores the weights and the metadata, falling back to the
            # previous pair of both when the newest weights cannot be read.
            super().on_train_begin(logs)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"The backup's training metadata {path} is not valid JSON ({error}): the file is "
                "damaged. Delete the backup folder to start training from scratch."
            ) from error
        _follow_steps(self.loader, self.params.get("steps"))
        self._first_epoch = True
        self._resume = None
        if os.path.exists(path):
            with open(path) as file:
                self._resume = json.load(file).get("kloader")
        if self._resume is not None:
            try:
                self.loader.load_state_dict(self._resume["loader"])
            except (KeyError, TypeError, ValueError) as error:
                raise ValueError(f"The loader position saved in {path} cannot be used: {error}") from error

    def _refuse_another_jobs_backup(self) -> None:
        """A backup in backup_dir written by a job of another number of shards (another world
        size) cannot be resumed here: say so, rather than start again from scratch."""
        if not os.path.isdir(self._shared_dir):
            return
        names = os.listdir(self._shared_dir)
        count = self.loader.num_shards
        if count > 1:  # the other shards of this job keep theirs beside this one's
            others = [
                n
                for n in names
                if n == self.STATE_FILE or (n.startswith("shard-") and not n.endswith(f"-of-{count}"))
            ]
        else:
            others = [n for n in names if n.startswith("shard-")]
        others.sort()
        if others:
            raise ValueError(
                f"The backup in {self._shared_dir} was written by another number of processes (it holds "
                f"{', '.join(others)}), but this loader reads "
                f"shard {self.loader.shard_index} of {self.loader.num_shards}: a backup resumes only "
                "with the number of processes that wrote it. Run the job with that number, or delete "
                "the backup folder to start training from scratch."
            )

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        super().on_epoch_begin(epoch, logs)
        self._keras_epoch = epoch
        # The epoch a backup records. Keras counts it only from each run's first epoch
        # end: a resumed run that crashed before that recorded epoch 0.
        self._current_epoch = epoch
        self._done = 0
        self._last_batch = -1
        if not self._first_epoch:
            return
        self._first_epoch = False
        if self._resume is None:
            self._position = _position_of_keras_epoch(self.loader, epoch, self.params.get("steps"))
        else:
            state = self._resume["loader"]
            self._position = (state["epoch"], state["batch"])
            self._done = self._resume["done_in_keras_epoch"]
        feed_of(self.loader).jump_to(*self._position)
        if self._done > 0:
            # Keras restarts the interrupted epoch from its first step; the
            # loader hands it only the batches that epoch had left, and Keras
            # warns that the input "ran out" when they end. That is expected.
            feed_of(self.loader).next_pass_length = self._steps() - self._done
            # Until the end of this epoch (or the next on_train_begin after a crash).
            self._quiet = internals.RanOutSilenced()

    def _steps(self) -> int:
        """The batches of the Keras epoch in progress, in an uninterrupted run."""
        return _keras_epoch_length(self.loader, self._keras_epoch, self.params.get("steps"))

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        # `batch` counts from 0 in each Keras epoch; with steps_per_execution it
        # jumps by more than one. Advance the loader position by as much.
        advance = batch - self._last_batch
        self._last_batch = batch
        self._done += advance
        self._position = feed_of(self.loader).cursor.normalised(
            self._position[0], self._position[1] + advance
        )
        super().on_train_batch_end(batch, logs)

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        self._stop_quiet()
        super().on_epoch_end(epoch, logs)

    def on_train_end(self, logs: Any = None) -> None:
        self._stop_quiet()
        super().on_train_end(logs)

    def _stop_quiet(self) -> None:
        if self._quiet is not None:
            self._quiet.stop()
            self._quiet = None

    def _save_model(self) -> None:
        # Keras records the epoch in progress; when the last batch trained
        # finished its epoch, the restarted fit must begin with the next one.
        finished = self._done >= self._steps()
        if finished:
            self._current_epoch = self._keras_epoch + 1
        super()._save_model()
        path = internals.backup_metadata_path(self)
        with open(path) as file:
            metadata = json.load(file)
        metadata["kloader"] = {
            "loader": self.loader.state_at(*self._position),
            "done_in_keras_epoch": 0 if finished else self._done,
        }
        temporary = path + ".tmp"
        with open(temporary, "w") as file:
            json.dump(metadata, file)
        os.replace(temporary, path)
