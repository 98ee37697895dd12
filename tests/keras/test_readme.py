"""The README's Quickstart, pasted into a file and run as it is, trains on this backend."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def quickstart() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Quickstart") :]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, "the Quickstart has no python block"
    return match.group(1)


@pytest.mark.slow
def test_quickstart_runs_pasted_into_a_file(tmp_path: Path) -> None:
    """No __main__ guard, no edits: the block runs as a script and fit prints its 5 epochs."""
    script = tmp_path / "quickstart.py"
    script.write_text(quickstart())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Epoch 5/5" in result.stdout
