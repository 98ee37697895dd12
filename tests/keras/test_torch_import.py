"""A loader that starts no worker process does not import torch.

On the TensorFlow and JAX backends nothing else imports it, and the import
costs a second or more of the first `fit` (two on a 2-core machine). Each case
runs in a fresh interpreter. On the torch backend Keras imports torch itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

PROGRAM = textwrap.dedent(
    """
    import json, sys
    import keras
    import numpy as np
    import kloader

    class Rows:
        def __len__(self):
            return 32

        def __getitem__(self, index):
            return np.full(2, index, dtype=np.float32), np.float32(index)

    case = sys.argv[1]
    x, y = np.arange(64, dtype=np.float32).reshape(32, 2), np.arange(32, dtype=np.float32)
    source = Rows() if case == "map source, 2 workers" else (x, y)
    workers = 0 if case == "arrays, no workers" else 2
    loader = kloader.Loader(source, batch_size=4, seed=0, num_workers=workers)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    model.fit(loader, epochs=2, verbose=0)
    model.evaluate(loader, verbose=0)
    loader.close()
    print(json.dumps({"torch": "torch" in sys.modules}))
    """
)

pytestmark = pytest.mark.skipif(
    os.environ.get("KERAS_BACKEND") == "torch", reason="Keras's torch backend imports torch itself"
)


def torch_imported(case: str) -> bool:
    result = subprocess.run(
        [sys.executable, "-c", PROGRAM, case], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    imported: bool = json.loads(result.stdout.strip().splitlines()[-1])["torch"]
    return imported


@pytest.mark.slow
@pytest.mark.parametrize("case", ["arrays, no workers", "arrays gathered here, num_workers=2"])
def test_a_loader_without_worker_processes_never_imports_torch(case: str) -> None:
    assert not torch_imported(case)


@pytest.mark.slow
def test_a_loader_with_worker_processes_imports_torch() -> None:
    """The check above sees an import of torch: here the workers need it."""
    assert torch_imported("map source, 2 workers")
