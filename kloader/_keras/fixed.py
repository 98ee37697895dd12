"""Loader settings that are fixed when the loader is made: readable, never silently settable.

`loader.shuffle = False` after a batch used to change `repr` while the cached
permutations, the running workers and the batch layout went on as before:
the batches stayed shuffled. Every setting that shapes the batches is
therefore read-only after construction, and setting one says how to get
what was meant (a new Loader, or `set_epoch`).
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar, overload

T = TypeVar("T")


class Fixed(Generic[T]):
    """A class attribute that reads `obj._<name>`, set once in `__init__`, and refuses later sets.

    Example:
        ```python
        class Loader:
            shuffle = Fixed[bool]("Whether each epoch is a new permutation.")
        ```
    """

    def __init__(self, doc: str):
        self.__doc__ = doc
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> Fixed[T]: ...

    @overload
    def __get__(self, obj: object, owner: type | None = None) -> T: ...

    def __get__(self, obj: object | None, owner: type | None = None) -> Any:
        if obj is None:
            return self
        return getattr(obj, "_" + self.name)

    def __set__(self, obj: object, value: T) -> None:
        if "_" + self.name not in vars(obj):
            setattr(obj, "_" + self.name, value)
            return
        raise AttributeError(
            f"`loader.{self.name}` is fixed when the loader is made: the order of every epoch, the "
            "running workers and saved states depend on it, so changing it now would change "
            f"nothing (or only some batches). Make a new loader instead, e.g. "
            f"kloader.Loader(source, {self.name}={value!r}, ...), and use set_epoch(e) or "
            "load_state_dict(state) to continue where this one is."
        )
