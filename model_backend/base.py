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
    """A model that answers conversations, streaming; several models where `models` says so."""

    info: BackendInfo  # the default model's info (what a new session starts with)
    models: ClassVar[list[str]] = []  # the models a session may choose from (info.model among them)
    tokens_per_tile: int = 256

    @abstractmethod
    def stream(
        self,
        conversation: Conversation,
        settings: GenerationSettings,
        *,
        model: str | None = None,
        chat: str | None = None,
    ) -> TextStream:
        """Start answering; raise InputError for input the model cannot take.

        model: one of `models` (None: info.model); InputError naming the choices otherwise.
        chat: an id for the conversation (the UI passes "<session hash>/<tab>"), under which the
        backend may keep what speeds up its follow-ups; None for API requests."""

    def ensure_model(self, model: str) -> BackendInfo:
        """Make `model` ready (a local backend loads it into its pool, which may take minutes);
        return its info (its own default system prompt included). InputError if it is not one
        of `models` or does not fit in memory (the models already loaded are not disturbed)."""
        return self.describe(self.check_model(model))

    def describe(self, model: str | None = None) -> BackendInfo:
        """Info of `model` (None: the default) without loading anything; for a local model not
        loaded yet, what is known (model name, kind)."""
        name = self.check_model(model)
        return self.info if name == self.info.model else BackendInfo(name, self.info.kind)

    def clear_cache(self, chat: str | None = None) -> None:  # noqa: B027 - most keep nothing
        """Forget what is kept to speed up that chat's follow-ups (Clear); None: everything."""

    def check_model(self, model: str | None) -> str:
        """The model a request names (None: the default); InputError naming the choices for
        one this backend does not offer."""
        if model is None or model == self.info.model:
            return self.info.model
        if model not in self.models:
            choices = ", ".join(self.models or [self.info.model])
            raise InputError(f"'{model}' is not one of this demo's models: {choices}.")
        return model
