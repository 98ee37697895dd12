"""Loader called the way Keras users call fit and ImageDataGenerator.flow."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import torch

import kloader

from utils import assert_batches_equal


def arrays(n: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = np.arange(n * 3, dtype="float32").reshape(n, 3)
    return x, np.arange(n) % 2, np.linspace(0.5, 1.5, n).astype("float32")


def test_x_y_positional_is_the_tuple_source() -> None:
    """Loader(x, y, ...) gives exactly the batches of Loader((x, y), ...)."""
    x, y, _ = arrays()
    a = kloader.Loader(x, y, batch_size=4, seed=3)
    b = kloader.Loader((x, y), batch_size=4, seed=3)
    for _ in range(2):
        batches = list(a)
        assert all(isinstance(batch, tuple) and len(batch) == 2 for batch in batches)
        assert_batches_equal(batches, list(b))


def test_x_y_sample_weight_positional_and_keyword() -> None:
    """Loader(x, y, sample_weight) and Loader(x, y=y, sample_weight=w) are (x, y, w) sources."""
    x, y, w = arrays()
    expected = list(kloader.Loader((x, y, w), batch_size=3, seed=5))
    for loader in (
        kloader.Loader(x, y, w, batch_size=3, seed=5),
        kloader.Loader(x, y=y, sample_weight=w, batch_size=3, seed=5),
    ):
        got = list(loader)
        assert all(len(batch) == 3 for batch in got)
        assert_batches_equal(got, expected)


def test_y_and_sample_weight_may_be_lists_as_in_fit() -> None:
    """fit(x, y_list) takes a list: so does Loader(x, y_list, w_list), as the (x, y, w) columns
    of Loader((x, y_list, w_list)) (it was refused: "`y` must be an array")."""
    x, y, w = arrays()
    expected = list(kloader.Loader((x, y.tolist(), w.tolist()), batch_size=3, seed=5))
    got = list(kloader.Loader(x, y.tolist(), w.tolist(), batch_size=3, seed=5))
    assert_batches_equal(got, expected)
    with pytest.raises(ValueError, match=r"source\[1\] has 4"):
        kloader.Loader(x, y.tolist()[:4], batch_size=3)


def test_fit_shaped_mistakes_are_named() -> None:
    """y with a dataset, sample_weight without y, x= and a y of the wrong length say what to do."""
    x, y, w = arrays()
    with pytest.raises(ValueError, match="without `y`"):
        kloader.Loader(x, sample_weight=w, batch_size=2)
    with pytest.raises(TypeError, match="returns its targets in each sample"):
        kloader.Loader(torch.utils.data.TensorDataset(torch.zeros(4)), y, batch_size=2)
    with pytest.raises(TypeError, match=r"`x=`: the inputs are the first argument"):
        kloader.Loader(x, batch_size=2, x=x)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="`y` must be an array"):
        kloader.Loader(x, "labels", batch_size=2)
    with pytest.raises(ValueError, match="different lengths"):
        kloader.Loader(x, y[:5], batch_size=2)


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("workers", "num_workers=N"),
        ("use_multiprocessing", "num_workers=N"),
        ("max_queue_size", "prefetch=K"),
        ("drop_last", "drop_remainder=True"),
        ("prefetch_factor", "prefetch=K"),
        ("multiprocessing_context", "start_method="),
        ("save_to_dir", "save_preview"),
        ("subset", "validation_split=0.2"),
        ("target_size", "ImageFolder"),
        ("class_mode", "label_mode"),
    ],
)
def test_other_libraries_argument_names_point_to_kloaders(name: str, hint: str) -> None:
    """Keras, ImageDataGenerator and DataLoader names that kloader spells differently name kloader's."""
    x, y, _ = arrays()
    with pytest.raises(TypeError, match=rf"does not take `{name}=`.*{hint}"):
        kloader.Loader(x, y, batch_size=2, **{name: 2})


class BatchesPyDataset(keras.utils.PyDataset):
    def __len__(self) -> int:
        return 3

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros((4, 2)), np.zeros(4)


def test_a_pydataset_source_is_refused_with_the_migration() -> None:
    """A PyDataset's items are batches: refused, with the per-sample rewrite and audit in the message."""
    with pytest.raises(TypeError, match=r"BatchesPyDataset.*__getitem__\(i\) = sample i.*kloader audit"):
        kloader.Loader(BatchesPyDataset(), batch_size=2)


def test_a_loader_or_torch_dataloader_source_is_refused() -> None:
    """A Loader is passed to fit as it is; a torch DataLoader's dataset is the source."""
    x, y, _ = arrays()
    loader = kloader.Loader(x, y, batch_size=2)
    with pytest.raises(TypeError, match=r"already a kloader\.Loader: pass it to model\.fit"):
        kloader.Loader(loader, batch_size=4)
    data_loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(4)), batch_size=2)
    with pytest.raises(TypeError, match=r"data_loader\.dataset"):
        kloader.Loader(data_loader, batch_size=2)
