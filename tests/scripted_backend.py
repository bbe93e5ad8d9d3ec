"""A Backend that answers with a fixed reply: for UI tests that need a known answer (boxes).

It implements the same interface as the real backends (streaming increments, cancel, figures,
input checks, a model per request), so the UI around it is exercised exactly as with a model.
"""

from __future__ import annotations

import threading
import time

from model_backend.base import (
    Backend,
    BackendInfo,
    Conversation,
    GenerationSettings,
    GenerationStats,
    TextStream,
)
from model_backend.errors import InputError
from model_backend.media import check_image


class ScriptedBackend(Backend):
    """Answers `reply` with any of `models` (the first is the default), each with its own
    default system prompt (`prompts`, optional). Records every request: `conversations`, and
    `requests` as (model, chat) pairs; `cleared` records the chats whose cache was cleared.
    A model in `too_large` cannot be loaded, as one that does not fit in memory. While `hold`
    is an unset Event, a reply waits before its first piece (a test sees it streaming, then
    lets it go on)."""

    def __init__(
        self,
        reply: str,
        piece_size: int = 4,
        seconds_per_piece: float = 0.01,
        models: list[str] | None = None,
        prompts: dict[str, str] | None = None,
    ):
        self.reply = reply
        self.piece_size = piece_size
        self.seconds_per_piece = seconds_per_piece
        self.models = list(models or ["scripted"])
        self.prompts = dict(prompts or {})
        self.loaded = {self.models[0]}
        self.too_large: set[str] = set()
        self.conversations: list[Conversation] = []
        self.requests: list[tuple[str, str | None]] = []
        self.cleared: list[str | None] = []
        self.hold: threading.Event | None = None
        first = self.models[0]
        self.info = BackendInfo(model=first, kind="test", system_prompt=self.prompts.get(first))

    def describe(self, model: str | None = None) -> BackendInfo:
        model = self.check_model(model)
        return BackendInfo(model=model, kind="test", system_prompt=self.prompts.get(model))

    def ensure_model(self, model: str) -> BackendInfo:
        if self.check_model(model) in self.too_large:
            raise InputError(f"{model} does not fit in memory beside the models loaded.")
        self.loaded.add(model)
        return self.describe(model)

    def clear_cache(self, chat: str | None = None) -> None:
        self.cleared.append(chat)

    def stream(
        self,
        conversation: Conversation,
        settings: GenerationSettings,
        *,
        model: str | None = None,
        chat: str | None = None,
    ) -> TextStream:
        model = self.check_model(model)
        conversation.check()
        settings.check()
        for path in conversation.image_paths:
            check_image(path)
        self.conversations.append(conversation)
        self.requests.append((model, chat))
        stop = threading.Event()
        hold = self.hold

        def pieces(finish):
            started = time.perf_counter()
            sent = 0
            try:
                while hold is not None and not hold.is_set():
                    if stop.wait(0.02):  # poll: held until the test lets it go on, or Stop
                        break
                for start in range(0, len(self.reply), self.piece_size):
                    if stop.wait(self.seconds_per_piece):  # the pace of a model, and Stop
                        break
                    sent += 1
                    yield self.reply[start : start + self.piece_size]
            finally:
                finish(
                    GenerationStats(
                        new_tokens=sent,
                        prompt_tokens=0,
                        time_to_first_token_s=self.seconds_per_piece,
                        total_s=time.perf_counter() - started,
                        stopped=stop.is_set(),
                    )
                )

        return TextStream.of(pieces, stop.set)
