"""Launch tuning as frozen records, with scoped overrides instead of mutable module globals.

A launcher module declares its knobs as a frozen dataclass and makes one :class:`Tunable` of
its defaults::

    @dataclasses.dataclass(frozen=True)
    class Tuning:
        class_major: bool = True

    TUNING = Tunable("numba_cpu.gibbs", Tuning())

The launcher reads ``TUNING.current()`` once per call; tests and tools force a variant for the
calls made inside ``with TUNING.override(class_major=False): ...`` (a context variable: other
threads and later calls keep the defaults; unknown names raise ``TypeError``).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

__all__ = ["Tunable"]

T = TypeVar("T")


class Tunable(Generic[T]):
    """The default tuning record of one launcher module and its scoped overrides."""

    def __init__(self, name: str, default: T):
        if not (dataclasses.is_dataclass(default) and default.__dataclass_params__.frozen):
            raise TypeError("the tuning record must be a frozen dataclass instance")
        self.default = default
        self._var: contextvars.ContextVar[T] = contextvars.ContextVar(f"arraygen.{name}.tuning",
                                                                     default=default)

    def current(self) -> T:
        """The record in force for a call made now (the default unless overridden)."""
        return self._var.get()

    @contextlib.contextmanager
    def override(self, **changes: Any) -> Iterator[T]:
        """Calls inside the ``with`` block use the current record with ``changes`` applied."""
        token = self._var.set(dataclasses.replace(self._var.get(), **changes))
        try:
            yield self._var.get()
        finally:
            self._var.reset(token)
