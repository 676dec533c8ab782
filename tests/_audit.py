"""Watching what the code under test asks of the operating system, without patching it.

Python's audit hooks (PEP 578) see every `open` and `os.rename`/`os.replace` before it
happens, in whatever thread it runs. A hook cannot be removed once added, so one is added per
process, the first time a test asks, and passes events on only while a test watches.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

Listener = Callable[[str, tuple[Any, ...]], None]

_listeners: list[Listener] = []
_lock = threading.Lock()
_installed = False


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if _listeners:
        for listener in tuple(_listeners):
            listener(event, args)


@contextmanager
def watching(event: str, call: Callable[..., None]) -> Iterator[None]:
    """Call `call(*args)` for each audit `event` raised in this process during the block."""
    global _installed
    with _lock:
        if not _installed:
            sys.addaudithook(_hook)
            _installed = True

    def listener(name: str, args: tuple[Any, ...]) -> None:
        if name == event:
            call(*args)

    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)
