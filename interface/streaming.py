"""Streaming an answer, independent of Gradio: the running streams (so Stop can end them), the
preparation of an answer off the request's thread, and the answer's text as it grows.

The chat panel (interface.chat) and the API endpoints (interface.api) both stream through
`stream_answer`.
"""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import NamedTuple

from model_backend.base import (
    KEEPALIVE_S,
    Backend,
    Conversation,
    GenerationSettings,
    GenerationStats,
    TextStream,
    cancellable,
)
from model_backend.errors import GenerationError, InputError
from model_backend.media import check_turn
from model_backend.thinking import THINK_CLOSE, THINK_OPEN

UPDATE_INTERVAL_S = 0.05  # at most 20 screen updates a second while an answer streams
PREPARE_THREAD = "internvl-prepare"


class ActiveStreams:
    """The running generation of each browser session and tab, so Stop can end it.

    Stop tells the model to stop (the stream then ends by itself and the answer keeps what was
    written, marked "stopped"). A Stop that arrives while the request still waits in the queue
    is remembered and applied the moment its generation starts.
    """

    def __init__(self) -> None:
        self._streams: dict[str, TextStream] = {}
        self._stop_requested: set[str] = set()
        self._lock = threading.Lock()

    def add(self, key: str, stream: TextStream) -> None:
        with self._lock:
            self._streams[key] = stream
            stop_now = key in self._stop_requested
            self._stop_requested.discard(key)
        if stop_now:
            stream.cancel()

    def remove(self, key: str, stream: TextStream) -> None:
        with self._lock:
            if self._streams.get(key) is stream:
                del self._streams[key]

    def new_request(self, key: str) -> None:
        """Forget a Stop that came too late for the previous request."""
        with self._lock:
            self._stop_requested.discard(key)

    def stop(self, key: str) -> None:
        with self._lock:
            stream = self._streams.get(key)
            if stream is None:
                self._stop_requested.add(key)
        if stream is not None:
            stream.cancel()


ACTIVE_STREAMS = ActiveStreams()


# ---------------------------------------------------------------------------------------------
# Preparing an answer (images decoded and tiled, prompt built) off the request's own thread


_PREPARING: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_PREPARING_LOCK = threading.Lock()


def preparing_slots(backend: Backend, limit: int) -> threading.BoundedSemaphore:
    """How many answers the backend may be preparing at once (the model queue's concurrency).

    Gradio frees a cancelled job's place in the queue at once, while the step it was running
    carries on in its thread; a slot stays taken until that thread has really ended, so
    cancelled requests cannot pile up working threads.
    """
    with _PREPARING_LOCK:
        if backend not in _PREPARING:
            _PREPARING[backend] = threading.BoundedSemaphore(limit)
        return _PREPARING[backend]


class Preparation:
    """`start()` (which returns the answer's stream) run in a worker thread holding a slot.

    `cancel()` asks the worker to stop (see model_backend.base.raise_if_cancelled) and closes
    the stream if it has been made, or as soon as it is.
    """

    def __init__(self, start: Callable[[], TextStream], slots: threading.BoundedSemaphore):
        self._start = start
        self._slots = slots
        self._cancelled = threading.Event()
        self._lock = threading.Lock()  # hands the outcome over to exactly one owner
        self._outcome: TextStream | BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=PREPARE_THREAD, daemon=True)

    def _run(self) -> None:
        try:
            with cancellable(self._cancelled):
                outcome = self._start()
        except BaseException as error:  # re-raised in the request's thread
            outcome = error
        finally:
            self._slots.release()
        with self._lock:
            self._outcome = outcome
            if self._cancelled.is_set() and isinstance(outcome, TextStream):
                outcome.close()

    def cancel(self) -> None:
        with self._lock:
            self._cancelled.set()
            if isinstance(self._outcome, TextStream):
                self._outcome.close()

    def stream(self) -> TextStream:
        """The stream once the worker has ended; its error if it failed."""
        if isinstance(self._outcome, BaseException):
            raise self._outcome
        return self._outcome


def prepared_stream(
    backend: Backend, start: Callable[[], TextStream], concurrency_limit: int
) -> Iterator[TextStream | None]:
    """Yield None every KEEPALIVE_S while `start()` runs in a worker thread, then its stream.

    The request's own thread stays free to be closed (a cancelled job, a closed page), and
    closing this generator cancels the preparation.
    """
    # Before any work: Gradio can close a job's generator (when the job is cancelled) only
    # once it has had a first output.
    yield None
    slots = preparing_slots(backend, concurrency_limit)
    while not slots.acquire(timeout=KEEPALIVE_S):
        yield None
    preparation = Preparation(start, slots)
    preparation.thread.start()
    finished = False
    try:
        while preparation.thread.is_alive():
            preparation.thread.join(KEEPALIVE_S)
            if preparation.thread.is_alive():
                yield None
        finished = True
    finally:
        if not finished:
            preparation.cancel()
    yield preparation.stream()


class AnswerStep(NamedTuple):
    """One step of a streaming answer."""

    text: str  # the answer so far, thinking included (model_backend.thinking splits it)
    stats: GenerationStats | None  # at the end only
    thinking_seconds: float | None  # once the thinking has ended (None: not yet, or none)


class ThinkingClock:
    """How long a reply thinks: from its first text to its `</think>`, or to its end for a
    reply cut off while thinking. Without tags it says nothing (None)."""

    def __init__(self) -> None:
        self.started: float | None = None
        self.seconds: float | None = None

    def add(self, text: str, piece: str) -> None:
        """`text` (the reply so far) has just grown by `piece`."""
        if self.seconds is not None or not piece:
            return
        now = time.perf_counter()
        if self.started is None:
            self.started = now
        # Only the new end can hold a tag that just closed (it may straddle two pieces).
        if THINK_CLOSE in text[-(len(piece) + len(THINK_CLOSE)) :]:
            self.seconds = now - self.started

    def end(self, text: str) -> None:
        cut_off = text.lstrip().startswith(THINK_OPEN)  # stopped while thinking
        if self.seconds is None and self.started is not None and cut_off:
            self.seconds = time.perf_counter() - self.started


def stream_answer(
    backend: Backend,
    conversation: Conversation,
    settings: GenerationSettings,
    *,
    model: str | None = None,
    chat: str | None = None,
    on_start: Callable[[TextStream], None] = lambda stream: None,
    on_notice: Callable[[str], object] = lambda notice: None,
    concurrency_limit: int = 1,
    check_media: bool = False,
) -> Iterator[AnswerStep]:
    """Yield (answer so far, None, thinking seconds) while streaming, then (answer, stats,
    thinking seconds) once at the end; ("", None, None) while the answer is being prepared.

    `model` and `chat` go to `backend.stream` (the session's model, the conversation's id).
    `check_media`: check every turn's images and video first (API requests; the UI checks a
    turn when it is added). Closing this generator (Stop, a cancelled API job, a closed page)
    stops the model, or the preparation.
    """

    def start() -> TextStream:
        if check_media:
            for turn in conversation.turns:
                check_turn(turn)
        return backend.stream(conversation, settings, model=model, chat=chat)

    stream = None
    with contextlib.closing(prepared_stream(backend, start, concurrency_limit)) as preparing:
        for stream in preparing:
            if stream is None:
                yield AnswerStep("", None, None)
    on_start(stream)
    for notice in stream.notices:
        on_notice(notice)
    text, shown_at = "", 0.0
    clock = ThinkingClock()
    try:
        for piece in stream:
            text += piece
            clock.add(text, piece)
            now = time.perf_counter()
            # A keep-alive ("") is always passed on (it lets Stop in); text at most every
            # UPDATE_INTERVAL_S, so a fast model does not flood the browser with updates.
            if not piece or now - shown_at >= UPDATE_INTERVAL_S:
                shown_at = now
                yield AnswerStep(text, None, clock.seconds)
    finally:
        stream.close()
    clock.end(text)
    yield AnswerStep(text, stream.stats, clock.seconds)


def asked_to_think(backend: Backend, model: str | None, reasoning: bool) -> bool:
    """A question asked with the reasoning switch on a model with a thinking mode: its reply
    is thinking until `</think>` (model_backend.thinking), the tag opening it or not."""
    return bool(reasoning) and backend.describe(model).thinking_mode


def user_message(error: Exception) -> str:
    """What to tell the user about a failed request."""
    if isinstance(error, InputError | GenerationError):
        return str(error)
    return f"Generation failed ({type(error).__name__}: {error}). The conversation is kept."
