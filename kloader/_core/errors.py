"""The errors kloader raises for bad samples and failed workers."""

from __future__ import annotations


class SampleError(Exception):
    """Reading or transforming one sample failed.

    The message names the sample index and the epoch (and the file, for image
    sources). The original exception is chained as `__cause__`; when the failure
    happened in a worker process, the worker's traceback is part of the message.

    Example:
        ```python
        try:
            batch = loader[0]
        except kloader.SampleError as error:
            print(error)  # "transform(sample, rng) failed on sample 3 (epoch 0): ..."
        ```
    """


class WorkerError(RuntimeError):
    """A worker process died or could not start; the message says which and what to do."""
