"""The errors kloader raises for bad samples and failed workers, and the warning for global randomness."""

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


class GlobalRandomWarning(UserWarning):
    """A source or transform drew from a global random generator instead of `rng`.

    Its batches then differ per run, per `num_workers` and after a resume. The
    warning names the generator and the sample; the fix is to draw from the
    `rng` argument of `transform(sample, rng)`. Given once per loader, with any
    `num_workers` (a worker's warning is raised in the main process).

    Example:
        ```python
        def transform(sample, rng):
            return sample + np.random.normal()  # GlobalRandomWarning: use rng.normal()

        loader = kloader.Loader(x, batch_size=32, seed=1, transform=transform)
        ```
    """
