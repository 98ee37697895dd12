"""Imported last by the fork server that kloader's workers fork from.

The server has imported torch, NumPy, kloader and the user's modules by then:
about 90 MB of Python objects that every worker inherits. Without this, each
worker's cyclic garbage collector walks those objects and writes to their
headers, which copies the pages they sit on into the worker, one private copy
per worker. `gc.freeze()` moves them to the permanent generation, which the
collector never visits, so the pages stay shared (benchmarks/RESULTS.md has the
memory of the process tree). This is the use Python's
documentation gives for `gc.freeze`: call it in a parent right before it forks.
"""

import gc

gc.collect()
gc.freeze()
