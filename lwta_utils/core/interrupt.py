"""Ctrl-C (SIGINT) that always stops a long loop.

Python raises ``KeyboardInterrupt`` between any two bytecodes. When that happens to be inside a
finaliser (an object's ``__del__``, a weakref callback, a generator closed by the garbage
collector), Python prints "Exception ignored in ..." and goes on: the interruption is lost. A
training of 200 epochs, interrupted that way, ran to its end (seen in the killed-training test
under load). Inside :func:`deferred_interrupt`, SIGINT only marks itself; the loop calls the
yielded ``check`` at safe points (after an optimiser step), which raises ``KeyboardInterrupt``
there, or on leaving the block. A second Ctrl-C before the next check raises at once, as Python does by default.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Callable, Iterator


def _nothing() -> None:
    return None


@contextmanager
def deferred_interrupt() -> Iterator[Callable[[], None]]:
    """Yield ``check()``: it raises ``KeyboardInterrupt`` when SIGINT arrived since the block began.

    Only where SIGINT has Python's default handler and in the main thread (the only one that
    receives signals); elsewhere (another thread, SIGINT ignored, a handler someone installed)
    nothing changes and ``check`` does nothing. The previous handler is restored on leaving."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield _nothing
        return
    pending: list[int] = []

    def mark(signum, frame):
        if pending:  # the second Ctrl-C: do not wait for the next check
            pending.clear()
            raise KeyboardInterrupt
        pending.append(signum)

    def check() -> None:
        if pending:
            pending.clear()
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, mark)
    try:
        yield check
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    check()  # a Ctrl-C after the block's last check is raised on leaving it
