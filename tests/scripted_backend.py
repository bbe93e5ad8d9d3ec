"""A Backend that answers with a fixed reply: for UI tests that need a known answer (boxes).

It implements the same interface as the real backends (streaming increments, cancel, figures,
input checks), so the UI around it is exercised exactly as with a model.
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
from model_backend.media import check_image


class ScriptedBackend(Backend):
    def __init__(self, reply: str, piece_size: int = 4, seconds_per_piece: float = 0.01):
        self.reply = reply
        self.piece_size = piece_size
        self.seconds_per_piece = seconds_per_piece
        self.conversations: list[Conversation] = []
        self.info = BackendInfo(model="scripted", kind="test")

    def stream(self, conversation: Conversation, settings: GenerationSettings) -> TextStream:
        conversation.check()
        settings.check()
        for path in conversation.image_paths:
            check_image(path)
        self.conversations.append(conversation)
        stop = threading.Event()
        stream = TextStream(pieces=iter(()), cancel=stop.set)

        def pieces():
            started = time.perf_counter()
            sent = 0
            for start in range(0, len(self.reply), self.piece_size):
                if stop.wait(self.seconds_per_piece):  # the pace of a model, and Stop
                    break
                sent += 1
                yield self.reply[start : start + self.piece_size]
            stream.stats = GenerationStats(
                new_tokens=sent,
                prompt_tokens=0,
                time_to_first_token_s=self.seconds_per_piece,
                total_s=time.perf_counter() - started,
                stopped=stop.is_set(),
            )

        stream.pieces = pieces()
        return stream
