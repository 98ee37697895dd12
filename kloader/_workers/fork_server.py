"""The fork server that kloader's workers fork from: what it preloads, and starting it early.

A fresh fork server is a new interpreter that imports torch, kloader and the
modules a loader's source and transform come from before it forks a worker:
one to two seconds of CPU. A loader starts it when it is made, and before this
process imports torch itself (this module imports no torch), so that the two
imports run side by side on two cores, and the workers fork from a warm server
when the first batch is asked for.
"""

from __future__ import annotations

import atexit
import multiprocessing
import multiprocessing.forkserver

from kloader._core.batches import BatchMaker
from kloader._workers import multiprocessing_internals

# The module that imports torch and everything a worker runs; and the one imported
# last, which freezes what the server imported so that the workers share those
# pages instead of copying them.
_WORKER_MODULE = "kloader._workers.pool"
_FREEZE_MODULE = "kloader._workers.freeze_fork_server"

# Set at exit: a loader made then starts no server, and a framework thread
# (tf.data's, say) still pulling batches while Python shuts down must not start
# a fresh set of workers (pool.py stops every pool at exit and checks this).
_interpreter_exiting = False


@atexit.register
def note_interpreter_exit() -> None:
    """From now on no fork server and no worker process starts."""
    global _interpreter_exiting
    _interpreter_exiting = True


def interpreter_exiting() -> bool:
    return _interpreter_exiting


def set_preload(maker: BatchMaker) -> None:
    """Makes the fork server import what `maker`'s workers need (when it starts).

    Workers fork from a server that has already imported torch, kloader and the
    modules defining the source and transform, so starting them costs
    milliseconds, not seconds. This only takes effect when the server starts,
    for the first loader. The main module is never imported: what it defines
    reaches the workers by value.
    """
    multiprocessing.set_forkserver_preload([_WORKER_MODULE, *maker.modules(), _FREEZE_MODULE])


def warm(maker: BatchMaker) -> None:
    """Starts the fork server now, if it is not running, without waiting for it.

    Returns at once: the imports run in the server process. Does nothing while
    the interpreter exits, or in a 'spawn' child importing the main module (the
    pool says why if that child goes on to ask for a batch).
    """
    if interpreter_exiting() or multiprocessing_internals.importing_main_module():
        return
    set_preload(maker)
    multiprocessing.forkserver.ensure_running()
