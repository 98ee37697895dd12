"""The contract at the edges: each bad input gives a correct result or a clear error, never silence.

One test per case, each running the real thing: real files, named pipes made
with os.mkfifo, folders that cannot be read (root's file-access capabilities
dropped with setpriv when the tests run as root), real worker processes. The
cases that need a Keras fit or predict are in tests/keras/test_edge_cases_keras.py.
"""

from __future__ import annotations

import copy
import os
import pickle
import random
import re
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import kloader

import image_files as images
from utils import IdDataset, assert_batches_equal, jitter

# ------------------------------------------------------------------ helpers


class MixedDtypes:
    """Map-style dataset whose sample i has the value and dtype `samples[i]` gives."""

    def __init__(self, samples: list[tuple[Any, str]]):
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> np.ndarray:
        value, dtype = self.samples[index]
        return np.array([value], dtype=dtype)


def numpy_global_noise(sample: Any, rng: np.random.Generator) -> Any:
    features, label = sample
    return features + np.float32(np.random.random()), label


def python_random_noise(sample: Any, rng: np.random.Generator) -> Any:
    features, label = sample
    return features + np.float32(random.random()), label


def torch_global_noise(sample: Any, rng: np.random.Generator) -> Any:
    features, label = sample
    return features + np.float32(torch.rand(()).item()), label


class NoiseOnlyInWorkers:
    """Draws from np.random only outside the process that made it: only worker processes do."""

    def __init__(self) -> None:
        self.main_pid = os.getpid()

    def __call__(self, sample: Any, rng: np.random.Generator) -> Any:
        features, label = sample
        if os.getpid() != self.main_pid:
            features = features + np.float32(np.random.random())
        return features, label


class GlobalRandomDataset(IdDataset):
    """IdDataset whose __getitem__ adds np.random noise."""

    def __getitem__(self, index: int) -> Any:
        features, label = super().__getitem__(index)
        return features + np.float32(np.random.random()), label


def global_random_warnings(make: Any) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make()
    return [str(w.message) for w in caught if issubclass(w.category, kloader.GlobalRandomWarning)]


def run_python(
    code: str, *, privileged: bool = True, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    """Runs `code` in a fresh interpreter; `privileged=False` drops root's right to read anything."""
    command = [sys.executable, "-c", code]
    if not privileged and os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: no way to make a folder unreadable")
        command = [setpriv, "--bounding-set=-dac_override,-dac_read_search", *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


# ------------------------------------------------------------------ dtypes


def test_int64_sample_after_int32_sample_is_refused_when_it_does_not_fit() -> None:
    """2**40 + 5 in an int64 sample never becomes 5 in an int32 batch: the sample index is named."""
    loader = kloader.Loader(
        MixedDtypes([(1, "int32"), (2**40 + 5, "int64")]), batch_size=2, shuffle=False, seed=0
    )
    with pytest.raises(kloader.SampleError, match=r"Sample 1 has dtype int64.*1099511627781 would become 5"):
        loader[0]


def test_float64_sample_after_float16_sample_is_refused_when_it_overflows() -> None:
    """1e5 in a float64 sample never becomes inf in a float16 batch."""
    loader = kloader.Loader(
        MixedDtypes([(1, "float16"), (1e5, "float64")]), batch_size=2, shuffle=False, seed=0
    )
    with pytest.raises(kloader.SampleError, match=r"Sample 1 has dtype float64.*100000.0 would become inf"):
        loader[0]


@pytest.mark.parametrize(
    ("reference", "sample", "value", "becomes"),
    [
        ("int32", "uint32", 3_000_000_000, "-1294967296"),  # same size, the sign flips
        ("int8", "uint8", 200, "-56"),
        ("uint64", "int64", -1, "18446744073709551615"),
        ("uint16", "int16", -3, "65533"),
        ("float64", "int64", 2**53 + 1, "9007199254740992.0"),  # a "safe" cast that rounds
        ("float64", "uint64", 2**64 - 1, "1.8446744073709552e+19"),
        ("complex128", "int64", 2**60 + 1, "(1.152921504606847e+18+0j)"),
        ("int64", "uint64", 2**63, "-9223372036854775808"),
        ("float64", "complex128", 1 + 2j, "1.0"),
    ],
)
def test_a_value_that_changes_in_the_cast_is_refused(
    reference: str, sample: str, value: int, becomes: str
) -> None:
    """Every value must survive the cast to the batch dtype: wrapping between signed and
    unsigned integers of one size, and rounding in numpy's 'safe' int64 -> float64, too."""
    loader = kloader.Loader(
        MixedDtypes([(0, reference), (value, sample)]), batch_size=2, shuffle=False, seed=0
    )
    with pytest.raises(
        kloader.SampleError,
        match=rf"Sample 1 has dtype {sample}.*{re.escape(str(value))} would become {re.escape(becomes)}",
    ):
        loader[0]


@pytest.mark.parametrize(
    ("reference", "sample", "value"),
    [
        ("int32", "uint32", 2**31 - 1),
        ("uint64", "int64", 2**62),
        ("float64", "int64", 2**53),
        ("float64", "int32", -(2**31)),
        ("float32", "float64", 0.5),
        ("int16", "float32", -7.0),
        ("int64", "bool", True),
    ],
)
def test_a_value_that_survives_the_cast_is_stored(reference: str, sample: str, value: object) -> None:
    loader = kloader.Loader(
        MixedDtypes([(0, reference), (value, sample)]), batch_size=2, shuffle=False, seed=0
    )
    batch = loader[0]
    assert batch.dtype == np.dtype(reference) and batch[1] == value


def test_batch_dtype_is_sample_0s_whatever_the_shuffle_puts_first() -> None:
    """Mixed int32 / int64 samples whose values fit: every batch of every epoch is int32, exact."""
    samples = [(i, "int32" if i % 2 == 0 else "int64") for i in range(12)]
    loader = kloader.Loader(MixedDtypes(samples), batch_size=3, seed=5)
    for epoch in range(4):
        for batch in range(len(loader)):
            made = loader._maker.make(loader.seed, epoch, loader.indices(batch, epoch))
            assert made.dtype == np.int32
            assert made.ravel().tolist() == loader.indices(batch, epoch).tolist()


class Labelled:
    """Map-style dataset of (features, label) with the labels given."""

    def __init__(self, labels: list[Any]):
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[np.ndarray, Any]:
        return np.full(2, index, dtype=np.float32), self.labels[index]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_object_and_string_parts_keep_sample_0s_kind_in_every_batch(num_workers: int) -> None:
    """A big Python int in sample 0 makes every batch's labels objects (np.array made int64 of
    a batch without it); strings are str in every batch, as wide as the batch's longest."""
    big = Labelled([2**70, *range(1, 12)])
    names = Labelled(["a", *("x" * i for i in range(1, 12))])
    for dataset in (big, names):
        with kloader.Loader(dataset, batch_size=4, seed=3, num_workers=num_workers) as loader:
            for epoch in range(2):
                loader.set_epoch(epoch)
                for batch in range(len(loader)):
                    labels = loader[batch][1]
                    expected = [dataset.labels[i] for i in loader.indices(batch, epoch)]
                    assert labels.tolist() == expected
                    if dataset is big:
                        assert labels.dtype == object
                    else:
                        assert labels.dtype == np.dtype(f"<U{max(map(len, expected))}")


def test_a_number_among_strings_is_refused_not_turned_into_text() -> None:
    loader = kloader.Loader(Labelled(["cat", "dog", 7, "emu"]), batch_size=4, shuffle=False)
    with pytest.raises(
        kloader.SampleError, match=r"Sample 2 has dtype int64 at sample\[1\], but the batch holds str"
    ):
        loader[0]


def test_a_bfloat16_tensor_sample_is_refused_naming_the_sample_and_the_fix() -> None:
    class BFloat16:
        def __len__(self) -> int:
            return 3

        def __getitem__(self, index: int) -> Any:
            return torch.ones(2, dtype=torch.float32 if index != 1 else torch.bfloat16)

    loader = kloader.Loader(BFloat16(), batch_size=3, shuffle=False)
    with pytest.raises(
        kloader.SampleError, match=r"Sample 1 at sample cannot become a NumPy array.*tensor\.float\(\)"
    ):
        loader[0]


# ------------------------------------------------------------------ sources


def test_two_python_lists_are_read_as_columns() -> None:
    """(x_list, y_list) is 10 samples in two columns, not a dataset of 2 samples."""
    x_list = [np.full(3, i, dtype=np.float32) for i in range(10)]
    y_list = list(range(10))
    loader = kloader.Loader((x_list, y_list), batch_size=4, shuffle=False, seed=0)
    assert loader.num_samples == 10
    x, y = loader[0]
    assert x.shape == (4, 3) and y.tolist() == [0, 1, 2, 3]
    assert x[:, 0].tolist() == [0, 1, 2, 3]


def test_python_lists_of_different_lengths_are_refused() -> None:
    """Lists that cannot be columns are refused with both lengths, never read as 2 samples."""
    with pytest.raises(ValueError, match=r"source\[0\] has 3, source\[1\] has 2"):
        kloader.Loader(([1.0, 2.0, 3.0], [0, 1]), batch_size=2, seed=0)


def test_a_list_of_two_python_lists_is_refused_as_ambiguous() -> None:
    """[x_list, y_list] could be columns or two samples: refused with both fixes, never 2 samples."""
    with pytest.raises(ValueError, match=r"cannot tell columns.*\(x_list, y_list\).*np.asarray\(samples\)"):
        kloader.Loader([[0.0, 1.0, 2.0], [0, 1, 2]], batch_size=2, seed=0)


# ------------------------------------------------------------------ settings


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("shuffle", False),
        ("batch_size", 2),
        ("drop_remainder", True),
        ("num_workers", 2),
        ("prefetch", 4),
        ("seed", 7),
        ("start_method", "spawn"),
        ("shard_index", 1),
        ("num_shards", 2),
        # The constructor's own names: before, setting them made a new attribute and did nothing.
        ("shard", (1, 2)),
        ("transform", np.negative),
    ],
)
def test_settings_cannot_be_changed_after_construction(name: str, value: Any) -> None:
    """`loader.shuffle = False` after a batch is refused with advice; the batches stay as they were."""
    loader = kloader.Loader(IdDataset(10), batch_size=4, seed=3, shard=None)
    before = [loader[i] for i in range(len(loader))]
    with pytest.raises(AttributeError, match=rf"`loader.{name}` is fixed when the loader is made.*{name}="):
        setattr(loader, name, value)
    assert_batches_equal([loader[i] for i in range(len(loader))], before)
    assert f"shuffle={loader.shuffle}" in repr(loader) and loader.shuffle is True


def test_the_constructors_names_read_what_it_was_given() -> None:
    loader = kloader.Loader(IdDataset(10), batch_size=4, seed=3, shard=(1, 2), transform=np.negative)
    assert loader.shard == (1, 2) and loader.transform is np.negative
    assert kloader.Loader(IdDataset(10), batch_size=4, seed=3, shard=None).transform is None


@pytest.mark.parametrize("name", ["shuffle", "drop_remainder"])
@pytest.mark.parametrize("value", ["false", None, 0, 1.0])
def test_flags_take_only_true_or_false(name: str, value: Any) -> None:
    """shuffle="false" used to shuffle and shuffle=None not to, without a word."""
    with pytest.raises(TypeError, match=rf"`{name}` must be True or False, got {re.escape(repr(value))}"):
        kloader.Loader(IdDataset(10), batch_size=4, seed=3, **{name: value})
    assert kloader.Loader(IdDataset(10), batch_size=4, seed=3, **{name: np.bool_(False)}).shuffle is (
        name != "shuffle"
    )


# ------------------------------------------------------------------ memory


def test_image_size_that_cannot_fit_in_memory_is_refused_before_anything_is_allocated(tmp_path: Path) -> None:
    """image_size=(100000, 100000) is refused at construction, with the estimate in the message."""
    images.make_folder(tmp_path, {"a": 1, "b": 1})
    with pytest.raises(MemoryError, match=r"100000 x 100000 x 3, float32\) needs 150.0 GB.*refused before"):
        kloader.ImageFolder(tmp_path, image_size=(100000, 100000))


def test_batch_that_cannot_fit_in_memory_is_refused_before_it_is_allocated() -> None:
    """A batch larger than the machine's memory is refused with its size and the fix."""
    loader = kloader.Loader(LargeSamples(10**6), batch_size=10**5, seed=0)
    with pytest.raises(MemoryError, match=r"A batch of 100000 samples.*800.0 GB.*refused before.*batch_size"):
        next(iter(loader))


class LargeSamples:
    """A million samples of 8 MB each (made on demand)."""

    def __init__(self, num_samples: int):
        self.num_samples = num_samples

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> np.ndarray:
        return np.zeros((1000, 1000))


# ------------------------------------------------------------------ image scan


def _mkfifo(path: Path) -> None:
    if not hasattr(os, "mkfifo"):
        pytest.skip("this platform has no named pipes")
    os.mkfifo(path)


def test_named_pipe_with_an_image_extension_is_refused_never_opened(tmp_path: Path) -> None:
    """A FIFO named x.jpg is named in the error (or skipped); opening it would block forever."""
    images.make_folder(tmp_path, {"cats": 2, "dogs": 2})
    _mkfifo(tmp_path / "cats" / "pipe.jpg")
    code = (
        "import kloader, warnings\n"
        f"try:\n    kloader.ImageFolder({str(tmp_path)!r}, image_size=8)\n"
        "except ValueError as error:\n    print('REFUSED', error)\n"
        "with warnings.catch_warnings():\n    warnings.simplefilter('ignore')\n"
        f"    folder = kloader.ImageFolder({str(tmp_path)!r}, image_size=8, on_error='skip')\n"
        "print('SKIPPED', len(folder), folder.skipped)\n"
    )
    result = run_python(code, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "REFUSED" in result.stdout and "pipe.jpg: a named pipe (FIFO), not a regular file" in result.stdout
    assert "SKIPPED 4" in result.stdout and "pipe.jpg" in result.stdout.split("SKIPPED")[1]


def test_named_pipe_among_explicit_paths_is_never_opened(tmp_path: Path) -> None:
    """paths=[..., a FIFO]: reading it is a SampleError naming it, and on_error='skip' leaves it out."""
    image = images.write_pattern(tmp_path / "a.png")
    _mkfifo(tmp_path / "pipe.png")
    paths = [str(image), str(tmp_path / "pipe.png")]
    code = (
        "import kloader, warnings\n"
        f"folder = kloader.ImageFolder(paths={paths!r}, labels=[0, 1], image_size=8)\n"
        "try:\n    folder[1]\nexcept kloader.SampleError as error:\n    print('REFUSED', error)\n"
        "with warnings.catch_warnings():\n    warnings.simplefilter('ignore')\n"
        f"    skipping = kloader.ImageFolder(paths={paths!r}, labels=[0, 1], image_size=8, on_error='skip')\n"
        "print('KEPT', len(skipping))\n"
    )
    result = run_python(code, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "REFUSED Sample 1: cannot read image" in result.stdout and "not a regular file" in result.stdout
    assert "KEPT 1" in result.stdout


def test_a_directory_among_explicit_paths_is_named_a_directory(tmp_path: Path) -> None:
    image = images.write_pattern(tmp_path / "a.png")
    (tmp_path / "photos.png").mkdir()
    folder = kloader.ImageFolder(
        paths=[str(image), str(tmp_path / "photos.png")], labels=[0, 1], image_size=8
    )
    with pytest.raises(
        kloader.SampleError,
        match=r"Sample 1: cannot read image .*photos\.png: a directory, not an image file",
    ):
        folder[1]


def test_inspect_reports_a_named_pipe_without_opening_it(tmp_path: Path) -> None:
    """`python -m kloader inspect` finishes and counts the FIFO as unreadable."""
    images.make_folder(tmp_path, {"cats": 2, "dogs": 2})
    _mkfifo(tmp_path / "dogs" / "pipe.png")
    result = subprocess.run(
        [sys.executable, "-m", "kloader", "inspect", str(tmp_path), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "Unreadable: 1" in result.stdout, result.stdout + result.stderr
    assert "pipe.png: a named pipe (FIFO)" in result.stdout


def test_class_subfolder_that_cannot_be_read_is_refused_and_counted_by_inspect(tmp_path: Path) -> None:
    """An unreadable folder inside a class is named, never left out; inspect never says Unreadable: 0."""
    images.make_folder(tmp_path, {"cats": 2, "dogs": 2})
    images.write_pattern(tmp_path / "cats" / "hidden" / "c.png")
    (tmp_path / "cats" / "hidden").chmod(0)
    try:
        code = (
            "import kloader\nfrom kloader._images import survey\n"
            f"try:\n    kloader.ImageFolder({str(tmp_path)!r}, image_size=8)\n"
            "except ValueError as error:\n    print('REFUSED', error)\n"
            f"print(survey.report(survey.survey({str(tmp_path)!r})))\n"
        )
        result = run_python(code, privileged=False)
    finally:
        (tmp_path / "cats" / "hidden").chmod(0o755)
    assert result.returncode == 0, result.stderr
    assert "REFUSED" in result.stdout and "hidden: folder cannot be read (Permission denied)" in result.stdout
    assert "Unreadable: 1" in result.stdout


def test_follow_links_never_files_an_image_under_two_classes(tmp_path: Path) -> None:
    """A link back up the tree would file dogs' images under cats as well: refused, by class names."""
    images.make_folder(tmp_path, {"cats": 2, "dogs": 3})
    os.symlink(tmp_path, tmp_path / "cats" / "up")
    with pytest.raises(ValueError, match=r"'cats' and 'dogs'.*reach the same folder"):
        kloader.ImageFolder(tmp_path, image_size=8, follow_links=True)
    assert len(kloader.ImageFolder(tmp_path, image_size=8)) == 5  # links not followed: each file once


# ------------------------------------------------------------------ determinism guard


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize(
    ("transform", "generator"),
    [
        (numpy_global_noise, "NumPy's global generator"),
        (python_random_noise, "Python's random module"),
        (torch_global_noise, "torch's default generator"),
    ],
)
def test_transform_drawing_from_global_random_state_warns_once(
    transform: Any, generator: str, num_workers: int
) -> None:
    """np.random / random / torch.rand in a transform: one GlobalRandomWarning naming it and `rng`."""
    loader = kloader.Loader(IdDataset(64), batch_size=4, seed=1, transform=transform, num_workers=num_workers)

    def two_epochs() -> None:
        with loader:
            for _ in range(2):
                list(loader)

    messages = global_random_warnings(two_epochs)
    assert len(messages) == 1, messages
    assert generator in messages[0] and "The transform" in messages[0] and "rng" in messages[0]


def test_global_random_drawn_only_in_workers_is_warned_in_the_main_process() -> None:
    """A draw that happens only in a worker process still reaches the user, as a warning in this process."""
    loader = kloader.Loader(
        IdDataset(80), batch_size=4, seed=1, transform=NoiseOnlyInWorkers(), num_workers=2
    )

    with warnings.catch_warnings(record=True) as caught, loader:
        warnings.simplefilter("always")
        # This process makes batches until a worker is up: go on until workers made some.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not caught:
            list(loader)
        list(loader)  # and once more: still one warning
    messages = [str(w.message) for w in caught if issubclass(w.category, kloader.GlobalRandomWarning)]
    assert len(messages) == 1 and "NumPy's global generator" in messages[0]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_source_drawing_from_global_random_state_warns(num_workers: int) -> None:
    """A map-style source whose __getitem__ uses np.random is named as the culprit."""
    loader = kloader.Loader(GlobalRandomDataset(32), batch_size=4, seed=1, num_workers=num_workers)

    def epoch() -> None:
        with loader:
            list(loader)

    messages = global_random_warnings(epoch)
    assert len(messages) == 1 and "The source's __getitem__" in messages[0]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_transform_using_rng_does_not_warn(num_workers: int) -> None:
    """No false alarm: a transform that only uses `rng` (torch imported, workers starting) is quiet."""
    loader = kloader.Loader(IdDataset(64), batch_size=4, seed=1, transform=jitter, num_workers=num_workers)

    def two_epochs() -> None:
        with loader:
            for _ in range(2):
                list(loader)

    assert global_random_warnings(two_epochs) == []


def test_starting_workers_leaves_torch_global_random_state_alone() -> None:
    """torch draws its workers' base seed from a private generator, not from the user's global one."""
    torch.manual_seed(123)
    state = torch.get_rng_state()
    loader = kloader.Loader(IdDataset(32), batch_size=4, seed=1, transform=jitter, num_workers=2)
    with loader:
        list(loader)
    assert torch.equal(torch.get_rng_state(), state)


# ------------------------------------------------------------------ copies


@pytest.mark.parametrize(
    "duplicate",
    [copy.copy, copy.deepcopy, lambda loader: pickle.loads(pickle.dumps(loader))],
    ids=["copy", "deepcopy", "pickle"],
)
def test_copy_is_an_independent_loader_at_the_same_position_without_workers(duplicate: Any) -> None:
    """A copy has the settings, seed and position of the original, and starts its own workers."""
    loader = kloader.Loader(IdDataset(40), batch_size=4, seed=3, transform=jitter, num_workers=2)
    with loader:
        passing = iter(loader)
        for _ in range(3):
            next(passing)
        copied = duplicate(loader)
        with copied:
            assert copied.worker_pids == []
            assert copied.state_dict() == loader.state_dict()
            assert repr(copied) == repr(loader)
            rest_of_copy = list(copied)
            assert set(copied.worker_pids).isdisjoint(loader.worker_pids)
        assert_batches_equal(rest_of_copy, list(passing), "copy vs original")
        assert copied.epoch == 1 and loader.epoch == 1
