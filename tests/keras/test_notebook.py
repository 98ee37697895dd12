"""A real notebook, executed by a real Jupyter kernel, trains with workers on a transform
defined in one of its cells, and the model gets the batches of num_workers=0."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent.parent
TESTS = ROOT / "tests"

CELLS = [
    f"""
    import json, os, pathlib, sys
    sys.path[:0] = [{str(ROOT)!r}, {str(TESTS)!r}]
    import numpy as np
    import keras
    import kloader
    from keras_utils import IdRecorder, id_model
    from utils import wait_until_a_worker_is_up
    """,
    # Defined in a cell: the workers can only get it by value.
    """
    PIDS = pathlib.Path(os.environ["KLOADER_TEST_PIDS"])

    def jitter_label(sample, rng):
        (PIDS / str(os.getpid())).touch()
        features, label = sample
        return features, np.float32(label + rng.uniform(-0.25, 0.25))
    """,
    """
    ids = np.arange(96, dtype=np.float32)
    data = (np.stack([ids, -ids], axis=1), ids)

    def train(num_workers):
        loader = kloader.Loader(data, batch_size=8, seed=4, transform=jitter_label, num_workers=num_workers)
        if num_workers:
            # Workers up before fit, so that they (not the kernel) make fit's batches.
            next(iter(loader))
            wait_until_a_worker_is_up(loader)
            loader.set_epoch(0)
        recorder = IdRecorder()
        id_model(recorder).fit(loader, epochs=2, verbose=0, callbacks=[recorder])
        return [batch.tolist() for batch in recorder.train]
    """,
    """
    in_process = train(0)
    with_workers = train(2)
    print(json.dumps({"same": in_process == with_workers, "batches": len(with_workers),
                      "kernel": os.getpid(), "backend": keras.backend.backend()}))
    """,
]


@pytest.mark.slow
def test_a_notebook_cell_transform_trains_with_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """num_workers=2 and num_workers=0 give the model the same batches, bit for bit, with
    the transform defined in a notebook cell, and the workers made them."""
    pids = tmp_path / "pids"
    pids.mkdir()
    monkeypatch.setenv("KLOADER_TEST_PIDS", str(pids))
    backend = os.environ.get("KERAS_BACKEND", "jax")
    monkeypatch.setenv("KERAS_BACKEND", backend)  # the kernel inherits this environment
    notebook = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(textwrap.dedent(source).strip()) for source in CELLS]
    )
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = notebook.cells[-1].outputs
    result = json.loads("".join(output.get("text", "") for output in outputs).strip().splitlines()[-1])
    assert result["backend"] == backend
    assert result["batches"] == 2 * 12
    assert result["same"], "num_workers=2 trained on other batches than num_workers=0"
    workers = {int(p.name) for p in pids.iterdir()} - {result["kernel"]}
    assert workers, "no worker process made a batch"
