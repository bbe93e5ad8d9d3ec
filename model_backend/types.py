"""The types that cross the Backend boundary, and the limits that go with them.

In: a Conversation (turns of text and images, and a system prompt) and GenerationSettings.
Out: a TextStream, an iterator of text increments that can be cancelled and that carries the
figures of the generation (tokens, time to first token, tokens/s) once it ends.

This module imports nothing of the project but errors, styles and thinking (none of which
imports it at run time), so that everything else (media, prompt, the backends, the interface)
can import it without cycles.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from model_backend.errors import InputError
from model_backend.styles import normalize_style
from model_backend.thinking import strip_thinking

DEFAULT_MODEL = "OpenGVLab/InternVL2_5-2B-MPO-hf"
MAX_FRAMES = 64
MAX_TILES_PER_FRAME = 4
MAX_VIDEO_SECONDS = 1_000_000  # start/end beyond this (11 days) are no video's times
# Longest texts taken, checked before anything else is done with them: far beyond any real
# question (the model's whole context is about 32,000 tokens), far below what would slow a
# request down for everyone (a 288 KB question once took a minute to clean).
MAX_QUESTION_CHARS = 30_000
MAX_SYSTEM_PROMPT_CHARS = 10_000
MAX_ANSWER_CHARS = 100_000  # earlier answers sent back through the API history
# The whole conversation: several times what fits the model's context (its oldest image turns
# are left out when it does not fit), so nothing real is refused, but a history of thousands of
# long answers is not cleaned and tokenized while others wait.
MAX_CONVERSATION_CHARS = 500_000


def check_length(text: str, limit: int, what: str) -> None:
    """Raise InputError, naming the limit, if `text` is longer than `limit` characters."""
    if len(text) > limit:
        raise InputError(
            f"The {what} is {len(text):,} characters long; the limit is {limit:,}. "
            f"Please shorten it."
        )


@dataclass(frozen=True)
class VideoClip:
    """A video and how to sample it: `num_frames` segment midpoints over [start, end] seconds."""

    path: str
    num_frames: int = 16
    start: float | None = None
    end: float | None = None
    tiles_per_frame: int = 1

    def check(self) -> None:
        if not 1 <= self.num_frames <= MAX_FRAMES:
            raise InputError(f"num_frames (frames) must be between 1 and {MAX_FRAMES}.")
        if not 1 <= self.tiles_per_frame <= MAX_TILES_PER_FRAME:
            raise InputError(
                f"tiles_per_frame (tiles per frame) must be between 1 and {MAX_TILES_PER_FRAME}."
            )
        for name, seconds in (("start", self.start), ("end", self.end)):
            # Also refuses inf and nan: frame arithmetic on them overflows.
            if seconds is not None and not 0 <= seconds <= MAX_VIDEO_SECONDS:
                raise InputError(
                    f"{name} must be a time in seconds between 0 and {MAX_VIDEO_SECONDS:,}, "
                    f"not {seconds:g}."
                )
        if self.start is not None and self.end is not None and self.start >= self.end:
            raise InputError(
                f"The start ({self.start:g} s) must come before the end ({self.end:g} s)."
            )


@dataclass(frozen=True)
class Turn:
    """One message: a user question (with the images or the video it brings) or an answer."""

    role: Literal["user", "assistant"]
    text: str
    images: tuple[str, ...] = ()  # file paths, in the order they were given
    video: VideoClip | None = None
    # How the question was asked: the MPO "reason step by step" wrapper, an answer style.
    reasoning: bool = False
    answer_style: str = "Default"
    # What the prompt calls each image instead of its number (a document's "Page-3"); empty:
    # numbered across the conversation (model_backend.prompt).
    image_labels: tuple[str, ...] = ()

    @property
    def visual_count(self) -> int:
        """How many `<image>` slots the turn fills: its images, or its video's frames."""
        return len(self.images) + (self.video.num_frames if self.video else 0)


@dataclass(frozen=True)
class Conversation:
    """Everything the model sees: the system prompt and the turns, ending with a user turn."""

    turns: tuple[Turn, ...]
    system_prompt: str = ""

    @property
    def image_count(self) -> int:
        return sum(len(turn.images) for turn in self.turns)

    @property
    def image_paths(self) -> list[str]:
        return [path for turn in self.turns for path in turn.images]

    @property
    def visual_count(self) -> int:
        return sum(turn.visual_count for turn in self.turns)

    def check(self) -> None:
        """Raise InputError unless this is a conversation a model can answer. An answer is
        measured without its thinking, which the model never sees again (a long thinking is
        no answer too long)."""
        sent = [strip_thinking(t.text) if t.role == "assistant" else t.text for t in self.turns]
        total = sum(map(len, sent)) + len(self.system_prompt)
        if total > MAX_CONVERSATION_CHARS:
            raise InputError(
                f"The conversation is {total:,} characters long; the limit is "
                f"{MAX_CONVERSATION_CHARS:,}. Please start a new conversation."
            )
        check_length(self.system_prompt, MAX_SYSTEM_PROMPT_CHARS, "system prompt")
        for turn, text in zip(self.turns, sent, strict=True):
            if turn.role == "user":
                check_length(text, MAX_QUESTION_CHARS, "question")
            else:
                check_length(text, MAX_ANSWER_CHARS, "answer")
        if not self.turns or self.turns[-1].role != "user":
            raise InputError("The conversation must end with a question from the user.")
        if not self.turns[-1].text.strip():
            raise InputError("Please type a question.")
        for turn in self.turns:
            if turn.images and turn.video:
                raise InputError(
                    "One message can carry images or a video, not both: send them separately."
                )
            if turn.video:
                turn.video.check()
            normalize_style(turn.answer_style)


@dataclass(frozen=True)
class SettingLimit:
    """The range a sampling setting may take: checked by GenerationSettings.check, used by the
    UI's sliders and the API's description. `low_open`: `low` itself is not allowed."""

    low: float
    high: float
    step: float
    label: str
    low_open: bool = False

    def allows(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        return above and value <= self.high

    def describe(self, name: str) -> str:
        opening = "(" if self.low_open else "["
        return f"{name} must be in {opening}{self.low:g}, {self.high:g}]"


# One table of limits for the settings (GenerationSettings' fields, in the same order).
SETTING_LIMITS = {
    "temperature": SettingLimit(0, 2, 0.05, "Temperature (0 = greedy)"),
    "top_p": SettingLimit(0, 1, 0.05, "Top-p", low_open=True),
    "top_k": SettingLimit(0, 100, 1, "Top-k (0 = off)"),
    "repetition_penalty": SettingLimit(1, 2, 0.01, "Repetition penalty"),
    "max_new_tokens": SettingLimit(1, 16384, 1, "Max new tokens"),
    "max_tiles": SettingLimit(1, 40, 1, "Max tiles per image"),
}


@dataclass(frozen=True)
class GenerationSettings:
    """Sampling settings. Defaults are the official InternVL demo's."""

    temperature: float = 0.2  # 0 means greedy decoding
    top_p: float = 0.7
    top_k: int = 0  # 0 means no top-k filtering
    repetition_penalty: float = 1.1
    max_new_tokens: int = 1024
    max_tiles: int = 12

    def check(self) -> None:
        """Raise InputError for values outside SETTING_LIMITS."""
        problems = [
            limit.describe(name)
            for name, limit in SETTING_LIMITS.items()
            if not limit.allows(getattr(self, name))
        ]
        if problems:
            raise InputError("Invalid settings: " + "; ".join(problems) + ".")


@dataclass(frozen=True)
class GenerationStats:
    """Figures of one generation, shown under each answer."""

    new_tokens: int
    prompt_tokens: int
    time_to_first_token_s: float | None
    total_s: float
    stopped: bool = False
    reused_tokens: int = 0  # prompt tokens whose KV cache was kept from an earlier answer

    @property
    def tokens_per_s(self) -> float | None:
        """Decoding speed after the first token (prefill excluded)."""
        if self.time_to_first_token_s is None or self.new_tokens < 2:
            return None
        decode_s = self.total_s - self.time_to_first_token_s
        return (self.new_tokens - 1) / decode_s if decode_s > 0 else None

    def summary(self) -> str:
        parts = [f"{self.new_tokens} tokens"]
        if self.reused_tokens > 0:
            parts.append(f"{self.reused_tokens:,} prompt tokens reused")
        if self.time_to_first_token_s is not None:
            parts.append(f"{self.time_to_first_token_s:.2f} s to first token")
        if self.tokens_per_s is not None:
            parts.append(f"{self.tokens_per_s:.1f} tokens/s")
        if self.stopped:
            parts.append("stopped")
        return " · ".join(parts)


@dataclass
class TextStream:
    """Text increments of one generation.

    Iterate it for the increments; an empty increment means "still working" and is sent while
    the model is busy, so the consumer stays in control (and can stop it) even during a long
    prefill. `close()` (also called when iteration is abandoned by a
    `with` block or by the consumer's generator being closed) cancels the generation and waits
    for its worker to end. `stats` is set once the stream is exhausted or closed.

    Backends build one with `TextStream.of(produce, cancel)`.
    """

    pieces: Iterator[str]
    cancel: Callable[[], None]
    stats: GenerationStats | None = None
    started: float = field(default_factory=time.perf_counter)
    # Things the user should know about this answer, e.g. that old turns were left out.
    notices: list[str] = field(default_factory=list)

    @classmethod
    def of(
        cls,
        produce: Callable[[Callable[[GenerationStats], None]], Iterator[str]],
        cancel: Callable[[], None],
        notices: list[str] | tuple[str, ...] = (),
    ) -> TextStream:
        """The stream of `produce(finish)`: a generator of text increments that calls
        `finish(stats)` with the figures when it ends, however it ends (exhausted, stopped,
        closed: from a `finally`). `cancel` stops it from any thread (the Stop button)."""
        stream = cls(pieces=iter(()), cancel=cancel, notices=list(notices))
        stream.pieces = produce(stream._finish)
        return stream

    def _finish(self, stats: GenerationStats) -> None:
        self.stats = stats

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        return next(self.pieces)

    def close(self) -> None:
        self.cancel()
        close = getattr(self.pieces, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> TextStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


END = object()  # closes a queue of text increments
# While the model is busy (a long prefill), streams yield "" this often, so that whoever iterates
# them regains control and can close them (Gradio cannot close a generator mid-step).
KEEPALIVE_S = 0.25


def drain(pieces: queue.Queue) -> Iterator[str]:
    """Text increments from a worker's queue until END, with "" while the worker is quiet."""
    while True:
        try:
            piece = pieces.get(timeout=KEEPALIVE_S)
        except queue.Empty:
            yield ""
            continue
        if piece is END:
            return
        yield piece


@dataclass(frozen=True)
class BackendInfo:
    """What the UI shows about the model behind the backend."""

    model: str
    kind: str  # "local" or "openai"
    device: str = ""
    random_weights: bool = False
    context_length: int | None = None
    system_prompt: str | None = None  # the checkpoint's own default, where it has one
    # InternVL3.5's: its documented system prompt makes it think in <think>...</think>
    # (model_backend.thinking); the reasoning switch turns that on instead of the MPO wrapper.
    thinking_mode: bool = False
