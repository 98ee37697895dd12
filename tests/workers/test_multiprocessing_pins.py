"""Pins: the multiprocessing internals kloader relies on to start workers, one test each.

Every name kloader/_workers/multiprocessing_internals.py touches is checked here
against the installed Python. If one of these fails after an upgrade, fix
multiprocessing_internals.py before anything else: the symptom elsewhere would
be a worker that runs the user's script again, or a fork server started where
it must not be.
"""

from __future__ import annotations

import inspect
import multiprocessing
import re
import subprocess
import sys
import textwrap
import threading
from multiprocessing import popen_forkserver
from pathlib import Path

from kloader._workers import multiprocessing_internals

TESTS = str(Path(__file__).parent.parent)


def run(source: str, tmp_path: Path) -> str:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(source))
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_a_spawn_child_importing_the_main_module_is_inheriting(tmp_path: Path) -> None:
    """multiprocessing sets current_process()._inheriting while a spawn child imports
    the parent's main module (and only then)."""
    output = run(
        f"""
        import multiprocessing, sys
        sys.path.insert(0, {TESTS!r})
        from kloader._workers import multiprocessing_internals

        print(__name__, multiprocessing_internals.importing_main_module(), flush=True)

        def child():
            print("child", multiprocessing_internals.importing_main_module(), flush=True)

        if __name__ == "__main__":
            process = multiprocessing.get_context("spawn").Process(target=child)
            process.start()
            process.join()
        """,
        tmp_path,
    )
    assert output.split("\n")[:3] == ["__main__ False", "__mp_main__ True", "child False"], output


def test_forkserver_launch_is_pythons_less_the_main_module() -> None:
    """The copy of popen_forkserver.Popen._launch differs from Python's only by
    dropping the main module from the preparation data."""
    ours = inspect.getsource(multiprocessing_internals._ForkServerPopenWithoutMain._launch)
    ours = re.sub(r"#[^\n]*", "", ours)
    ours = ours.replace("for key in MAIN_MODULE_KEYS:", "").replace("prep_data.pop(key, None)", "")
    ours = ours.replace("multiprocessing.reduction.dump", "reduction.dump").replace(": Any) -> None", ")")
    pythons = re.sub(r"#[^\n]*", "", inspect.getsource(popen_forkserver.Popen._launch))
    assert re.sub(r"[\s,]", "", ours).replace("'", '"') == re.sub(r"[\s,]", "", pythons).replace("'", '"')


def test_forkserver_children_without_main_do_not_run_the_script(tmp_path: Path) -> None:
    """With the stock forkserver context a child runs the script again (as __mp_main__);
    with ForkServerContextWithoutMain it does not."""
    output = run(
        f"""
        import multiprocessing, os, sys
        sys.path.insert(0, {TESTS!r})
        from kloader._workers import multiprocessing_internals

        print("script run by", __name__, flush=True)

        if __name__ == "__main__":
            for context in (multiprocessing.get_context("forkserver"),
                            multiprocessing_internals.ForkServerContextWithoutMain()):
                process = context.Process(target=os.getpid)
                process.start()
                process.join()
                print("child done", process.exitcode, flush=True)
        """,
        tmp_path,
    )
    assert output.split("\n")[:5] == [
        "script run by __main__",
        "script run by __mp_main__",
        "child done 0",
        "child done 0",
        "",
    ], output


def test_a_closed_queues_feeder_thread_ends_and_is_waited_for() -> None:
    """A queue's feeder thread (`_thread`, started by the first put) holds the queue's lock
    until it ends after `close`: the close of kloader's workers waits for it."""
    queue = multiprocessing.get_context("spawn").Queue()
    queue.put(1)
    thread = queue._thread  # type: ignore[attr-defined]
    assert isinstance(thread, threading.Thread) and thread.is_alive()
    queue.get()
    queue.close()
    multiprocessing_internals.wait_for_feeder_thread(queue, 10.0)
    assert not thread.is_alive()
