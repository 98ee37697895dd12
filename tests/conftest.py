"""Test configuration: the Keras backend is a process-level axis, never a parameter.

tox sets KERAS_BACKEND per environment. Tests that only make sense on one
backend carry `@pytest.mark.backend("jax")` and are skipped elsewhere.
"""

from __future__ import annotations

import logging
import os

import pytest

# torch before tensorflow: importing them the other way round can crash.
import torch  # noqa: F401
from hypothesis import settings

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras

# kloader logs at DEBUG how each Keras call ended and which pass that cut short;
# pytest shows these records under a failing test ("Captured log call").
logging.getLogger("kloader").setLevel(logging.DEBUG)

# Property tests check values, never timings: Hypothesis's default 200 ms
# deadline per example fails at random on a loaded shared machine (seen in CI:
# a first call took 332 ms, its replay 0.2 ms).
settings.register_profile("kloader", deadline=None)
settings.load_profile("kloader")


# Keras before 3.12 shuts a CallbackList's thread pool down in `CallbackList.__del__`.
# On JAX and torch, after a call that raised (a SampleError, say), the list's last
# reference can go in one of that pool's own threads, which then tries to join itself:
# "Exception ignored in: <function CallbackList.__del__ ...> RuntimeError: cannot join
# current thread". Measured on Keras 3.10 with a plain PyDataset that raises, no
# kloader: 13 of 40 failed fits. Harmless (the pool's threads still end), not
# kloader's, and pytest would pin it on whichever test runs next. Only that message is
# let through, and only where Keras has that `__del__`
# (tests/keras/test_keras_pins.py pins which versions do).
KERAS_CALLBACK_LIST_DEL_RACE = "__del__" in vars(keras.callbacks.CallbackList)


def pytest_configure(config: pytest.Config) -> None:
    if KERAS_CALLBACK_LIST_DEL_RACE:
        config.addinivalue_line(
            "filterwarnings",
            r"ignore:Exception ignored .*CallbackList\.__del__:pytest.PytestUnraisableExceptionWarning",
        )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    backend = keras.backend.backend()
    for item in items:
        for marker in item.iter_markers("backend"):
            if backend not in marker.args:
                item.add_marker(
                    pytest.mark.skip(
                        reason=f"needs the {'/'.join(marker.args)} backend, this run is {backend}"
                    )
                )


def pytest_report_header(config: pytest.Config) -> str:
    return f"keras {keras.__version__}, backend {keras.backend.backend()}"
