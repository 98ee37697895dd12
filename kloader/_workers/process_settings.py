"""Module-level settings of this process that decide what a worker makes, carried to the workers.

Workers started by the fork server (or spawn) begin in a fresh interpreter: a
setting the user made at module level in this process does not reach them, as
it would reach a forked child. Pillow's two are such settings, commonly set in
a script or notebook, and each decides whether a file decodes at all:
`PIL.ImageFile.LOAD_TRUNCATED_IMAGES` and `PIL.Image.MAX_IMAGE_PIXELS`. Without
them, a batch would load or fail depending on which process made it.

They are read when the workers start (each start) and set in each worker
before it makes anything. Pillow is never imported for this: a process that has
not imported it has no such settings to carry.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

# (module, attribute) pairs, read only from modules this process has imported.
_PILLOW = (("PIL.ImageFile", "LOAD_TRUNCATED_IMAGES"), ("PIL.Image", "MAX_IMAGE_PIXELS"))


def snapshot() -> dict[tuple[str, str], Any]:
    """The settings as they stand in this process now."""
    taken = {}
    for module_name, attribute in _PILLOW:
        module = sys.modules.get(module_name)
        if module is not None and hasattr(module, attribute):
            taken[(module_name, attribute)] = getattr(module, attribute)
    return taken


def apply(taken: dict[tuple[str, str], Any]) -> None:
    """Sets, in this process (a worker), the settings `snapshot()` took in the main process."""
    for (module_name, attribute), value in taken.items():
        setattr(importlib.import_module(module_name), attribute, value)
