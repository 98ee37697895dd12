"""Nested structures of tuples, lists and dicts, flattened to a list of leaves.

Batches keep the structure of a sample: a tuple sample gives a tuple batch, a
dict sample a dict batch. Lists become tuples, which Keras reads the same way
(`(inputs, targets)` or `(inputs, targets, sample_weights)`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# A structure definition: None for a leaf, ("tuple", [children]) or ("dict", [(key, child)]).
Structure = tuple[str, Any] | None


def flatten(obj: Any) -> tuple[list[Any], Structure]:
    """Returns the leaves of `obj` in a fixed order, and its structure."""
    leaves: list[Any] = []
    return leaves, _flatten_into(obj, leaves)


def _flatten_into(obj: Any, leaves: list[Any]) -> Structure:
    if isinstance(obj, (tuple, list)):
        return ("tuple", [_flatten_into(item, leaves) for item in obj])
    if isinstance(obj, Mapping):
        # Sorted keys, so that samples whose dicts were built in different orders agree.
        return ("dict", [(key, _flatten_into(obj[key], leaves)) for key in sorted(obj, key=str)])
    leaves.append(obj)
    return None


def unflatten(structure: Structure, leaves: list[Any]) -> Any:
    """The inverse of `flatten`: rebuilds the structure around `leaves`."""
    iterator = iter(leaves)
    return _build(structure, iterator)


def _build(structure: Structure, leaves: Any) -> Any:
    if structure is None:
        return next(leaves)
    kind, children = structure
    if kind == "tuple":
        return tuple(_build(child, leaves) for child in children)
    return {key: _build(child, leaves) for key, child in children}


def leaf_paths(structure: Structure, prefix: str) -> list[str]:
    """Names of the leaves, in `flatten` order, such as `sample[0]` or `source['x']`."""
    if structure is None:
        return [prefix]
    kind, children = structure
    if kind == "tuple":
        return [name for i, child in enumerate(children) for name in leaf_paths(child, f"{prefix}[{i}]")]
    return [name for key, child in children for name in leaf_paths(child, f"{prefix}[{key!r}]")]


def describe(structure: Structure) -> str:
    """A short human-readable picture of a structure, for error messages."""
    if structure is None:
        return "array"
    kind, children = structure
    if kind == "tuple":
        return "(" + ", ".join(describe(child) for child in children) + ")"
    return "{" + ", ".join(f"{key!r}: {describe(child)}" for key, child in children) + "}"
