"""From generated token ids to text increments, and the Stop button as a stopping criterion."""

from __future__ import annotations

import queue
import threading
import time

import torch
from transformers import StoppingCriteria
from transformers.generation.streamers import BaseStreamer

# Special tokens that are markup the user should see: InternVL's grounding tags, and the
# thinking tags (plain added tokens in InternVL3.5's tokenizer; kept visible should another
# tokenizer mark them special, since the thinking is split from the answer by them).
VISIBLE_SPECIAL_TOKENS = (
    "<ref>",
    "</ref>",
    "<box>",
    "</box>",
    "<quad>",
    "</quad>",
    "<think>",
    "</think>",
)
MAX_HELD_TOKENS = 4


def hidden_token_ids(tokenizer) -> set[int]:
    """The special tokens the streamer leaves out of the text (all but the grounding tags)."""
    vocabulary = tokenizer.get_vocab()
    visible = {vocabulary[t] for t in VISIBLE_SPECIAL_TOKENS if t in vocabulary}
    added = tokenizer.added_tokens_decoder
    special = set(tokenizer.all_special_ids) | {i for i, t in added.items() if t.special}
    return special - visible


class StopOnEvent(StoppingCriteria):
    """Ends generation at the next decoding step once the event is set (the Stop button)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs):
        stop = self.event.is_set()
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


class TokenStreamer(BaseStreamer):
    """Turns generated token ids into text increments on a queue, keeping grounding tags.

    transformers' TextIteratorStreamer can only skip all special tokens or none; InternVL's
    <ref>/<box> tags are special tokens that must survive, while <|im_end|> must not.
    """

    def __init__(self, tokenizer, hidden_ids: set[int]):
        self.tokenizer = tokenizer
        self.hidden_ids = hidden_ids
        self.queue: queue.Queue = queue.Queue()
        self.pending: list[int] = []  # tokens since the last newline
        self.printed = 0  # characters of decode(pending) already sent
        self.prompt_seen = False
        self.held = 0  # increments held back waiting for the rest of a UTF-8 character
        self.new_tokens = 0
        self.first_token_at: float | None = None

    def put(self, value) -> None:
        if not self.prompt_seen:  # generate() first hands over the prompt
            self.prompt_seen = True
            return
        ids = value.reshape(-1).tolist()
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        self.new_tokens += len(ids)
        self.pending += [i for i in ids if i not in self.hidden_ids]
        text = self.tokenizer.decode(self.pending, skip_special_tokens=False)
        # An incomplete UTF-8 character decodes as U+FFFD: wait for its other bytes, but not
        # forever (a character has at most 4 bytes; garbage bytes would otherwise stall the
        # stream until the end).
        if text.endswith("\ufffd") and self.held < MAX_HELD_TOKENS:
            self.held += 1
            return
        self.held = 0
        self._send(text)
        if text.endswith("\n"):
            self.pending, self.printed = [], 0

    def end(self) -> None:
        if self.pending:
            self._send(self.tokenizer.decode(self.pending, skip_special_tokens=False))

    def _send(self, text: str) -> None:
        if len(text) > self.printed:
            self.queue.put(text[self.printed :])
            self.printed = len(text)
