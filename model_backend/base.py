"""The Backend interface: a model that answers conversations, streaming.

The types that cross it live in model_backend.types (re-exported here for existing imports);
cancelling a request's preparation in model_backend.cancel.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from model_backend.cancel import RequestCancelled, cancellable, raise_if_cancelled
from model_backend.errors import InputError
from model_backend.types import (
    DEFAULT_MODEL,
    END,
    KEEPALIVE_S,
    MAX_ANSWER_CHARS,
    MAX_CONVERSATION_CHARS,
    MAX_FRAMES,
    MAX_QUESTION_CHARS,
    MAX_SYSTEM_PROMPT_CHARS,
    MAX_TILES_PER_FRAME,
    MAX_VIDEO_SECONDS,
    SETTING_LIMITS,
    BackendInfo,
    Conversation,
    GenerationSettings,
    GenerationStats,
    SettingLimit,
    TextStream,
    Turn,
    VideoClip,
    check_length,
    drain,
)

__all__ = [
    "DEFAULT_MODEL",
    "END",
    "KEEPALIVE_S",
    "MAX_ANSWER_CHARS",
    "MAX_CONVERSATION_CHARS",
    "MAX_FRAMES",
    "MAX_QUESTION_CHARS",
    "MAX_SYSTEM_PROMPT_CHARS",
    "MAX_TILES_PER_FRAME",
    "MAX_VIDEO_SECONDS",
    "SETTING_LIMITS",
    "Backend",
    "BackendInfo",
    "Conversation",
    "GenerationSettings",
    "GenerationStats",
    "RequestCancelled",
    "SettingLimit",
    "TextStream",
    "Turn",
    "VideoClip",
    "cancellable",
    "check_length",
    "drain",
    "raise_if_cancelled",
]


class Backend(ABC):
    """A model that answers conversations, streaming."""

    info: BackendInfo
    models: ClassVar[list[str]] = []  # the models a user may choose from (see select_model)

    @abstractmethod
    def stream(self, conversation: Conversation, settings: GenerationSettings) -> TextStream:
        """Start answering; raise InputError for input the model cannot take."""

    tokens_per_tile: int = 256

    def clear_cache(self) -> None:  # noqa: B027 - most backends keep nothing
        """Forget what is kept between answers to speed up follow-ups (on Clear)."""

    def select_model(self, model: str) -> None:
        """Answer with `model` from now on (one of `models`)."""
        if model != self.info.model:
            raise InputError(f"This backend serves only {self.info.model}.")
