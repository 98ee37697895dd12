"""How much memory this process can use, to refuse sizes that cannot fit before allocating them.

An `image_size=(100000, 100000)` would otherwise be accepted, and the first
read would get the process killed by the out-of-memory killer, with no message
at all. The limit is the smaller of the machine's physical memory and the
container's cgroup limit, when there is one.
"""

from __future__ import annotations

import contextlib
import functools
import os

_CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


@functools.lru_cache(maxsize=1)
def available_bytes() -> int | None:
    """Physical memory, or the cgroup limit if smaller; None where neither can be read."""
    limits = []
    with contextlib.suppress(ValueError, OSError, AttributeError):
        limits.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    for path in _CGROUP_LIMITS:
        try:
            with open(path) as file:
                text = file.read().strip()
        except OSError:
            continue
        if text.isdigit():
            limits.append(int(text))
    return min(limits) if limits else None


def describe(size: int) -> str:
    """`size` bytes for people: "1.2 GB"."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


def check_fits(size: int, what: str, fix: str) -> None:
    """Raises MemoryError, before anything is allocated, when `size` bytes exceed what there is."""
    limit = available_bytes()
    if limit is not None and size > limit:
        raise MemoryError(
            f"{what} needs {describe(size)}, more than this machine's {describe(limit)} of memory, "
            f"so it was refused before anything was allocated. {fix}"
        )
