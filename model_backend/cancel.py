"""Cancelling a request while its input is prepared (decoding, tiling, tokenizing).

A thread cannot be stopped from outside: the long steps of preparing a request call
`raise_if_cancelled` between them, and whoever asked for the input sets an event when it leaves.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class RequestCancelled(Exception):
    """The request was cancelled while its input was being prepared."""


_preparing = threading.local()


@contextmanager
def cancellable(cancelled: threading.Event) -> Iterator[None]:
    """While this block runs, `raise_if_cancelled` in this thread raises once `cancelled` is set."""
    _preparing.cancelled = cancelled
    try:
        yield
    finally:
        _preparing.cancelled = None


def raise_if_cancelled() -> None:
    """Raise RequestCancelled if whoever asked for the input being prepared has gone.

    Call it between the long steps of preparing a request (decoding, tiling, tokenizing): a
    thread cannot be stopped from outside, and a cancelled request must not keep one working.
    """
    cancelled = getattr(_preparing, "cancelled", None)
    if cancelled is not None and cancelled.is_set():
        raise RequestCancelled("The request was cancelled.")
