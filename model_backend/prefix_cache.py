"""The KV caches of the conversations' last answers, kept so that follow-ups skip the prefill.

A follow-up question repeats the whole conversation, images included: the KV cache of that
conversation's previous answer already holds it. Each chat (a browser tab) keeps one entry,
replaced by its next answer; an API request (no chat) is kept under its content, so that a
client that resends the history finds it by the longest common prefix. Entries live in a
least-recently-used order bounded by bytes, measured from the cache's tensors.

Token ids alone do not name the images (every image token is the same id): an entry is only
used for a prompt of the same model and the same pixels key (the images' content and tile
budgets, model_backend.local.visual_tiles). Nothing here imports torch.
"""

from __future__ import annotations

import copy
import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

MAX_DROP_MARKS = 4096  # the Clears remembered for answers still running
MIN_REUSED_TOKENS = 16  # below this, reusing a cache saves nothing worth its bookkeeping


def cache_bytes(cache) -> int:
    """Bytes held by a transformers cache's key and value tensors (each storage counted once:
    a cropped tensor still holds its whole storage)."""
    storages: dict[tuple, int] = {}
    for layer in cache.layers:
        for tensor in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if tensor is not None and hasattr(tensor, "untyped_storage"):
                storage = tensor.untyped_storage()
                storages[(str(tensor.device), storage.data_ptr())] = storage.nbytes()
    return sum(storages.values())


def common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if len(differ) else n


@dataclass(eq=False)
class Entry:
    model: str
    pixels_key: str
    ids: np.ndarray  # the token ids whose keys and values the cache holds
    cache: object  # a transformers DynamicCache
    bytes: int
    chat: str | None  # the chat that owns it; None: an API request's


class PrefixCache:
    """Per-conversation KV caches in an LRU bounded by `budget` bytes (0: keep nothing).

    Thread-safe. A cache is taken out while it is generated into (generation extends it in
    place) and put back, as the new answer's, when generation ends.
    """

    def __init__(self, budget: int):
        self.budget = budget
        self._entries: OrderedDict[tuple, Entry] = OrderedDict()  # oldest first
        self._lock = threading.Lock()
        # When entries were last dropped (see `put`), by what was dropped: ("all",),
        # ("chat", chat) or ("model", model), in the order of `_drops`, a running count.
        self._drops = 0
        self._dropped_at: OrderedDict[tuple, int] = OrderedDict()

    @property
    def bytes(self) -> int:
        with self._lock:
            return sum(entry.bytes for entry in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def chats(self) -> list[str]:
        with self._lock:
            return [e.chat for e in self._entries.values() if e.chat is not None]

    def mark(self) -> int:
        """A token for `put`: an answer that began before its chat's Clear (or its model's
        unloading, or a Clear of everything) is not kept after it."""
        with self._lock:
            return self._drops

    def _dropped_since(self, since: int, model: str, chat: str | None) -> bool:
        marks = [("all",), ("model", model)] + ([("chat", chat)] if chat is not None else [])
        return any(self._dropped_at.get(mark, -1) >= since for mark in marks)

    def take(
        self, model: str, pixels_key: str, ids: np.ndarray, chat: str | None, image_token: int
    ) -> tuple[object | None, int]:
        """(cache, reused tokens) to generate `ids` with, cut to the common prefix; (None, 0)
        if nothing kept fits. The chat's own entry first, else the entry of the same model and
        images with the longest common prefix. The prefix must cover every image token
        (generate feeds the images only at the start) and leave one token to feed."""
        if self.budget <= 0:
            return None, 0
        images = np.flatnonzero(ids == image_token)
        last_image = int(images[-1]) if len(images) else -1
        with self._lock:
            best, best_common = None, 0
            own = self._entries.get(("chat", chat)) if chat is not None else None
            candidates = [own] if own is not None else []
            candidates += [e for e in self._entries.values() if e is not own]
            for entry in candidates:
                if entry.model != model or entry.pixels_key != pixels_key:
                    continue
                common = min(common_prefix(entry.ids, ids), len(ids) - 1)
                if common > last_image and common >= MIN_REUSED_TOKENS and common > best_common:
                    best, best_common = entry, common
                    if entry is own:
                        break  # the chat's own entry wins
            if best is None:
                return None, 0
            if best.chat is not None and best.chat != chat:
                # Another conversation's: copied, so that its owner keeps its follow-ups.
                cache = copy.deepcopy(best.cache)
            else:
                self._entries.pop(self._key(best), None)
                cache = best.cache
        cache.crop(best_common - cache.get_seq_length())
        return cache, best_common

    def put(
        self,
        model: str,
        pixels_key: str,
        ids: np.ndarray,
        cache,
        chat: str | None,
        since: int,
    ) -> None:
        """Keep `cache` (holding `ids`) as `chat`'s entry, replacing its earlier one, or as an
        API request's; then drop the least recently used entries beyond the budget. Not kept:
        an entry bigger than the whole budget, or one whose answer began before a Clear
        (`since`, from `mark`: the Clear may have been meant for it)."""
        size = cache_bytes(cache)
        entry = Entry(model, pixels_key, np.asarray(ids), cache, size, chat)
        key = self._key(entry)
        with self._lock:
            self._entries.pop(key, None)
            if self.budget <= 0 or size > self.budget or self._dropped_since(since, model, chat):
                return
            self._entries[key] = entry
            total = sum(e.bytes for e in self._entries.values())
            while total > self.budget:
                _, oldest = self._entries.popitem(last=False)
                total -= oldest.bytes

    def drop(self, chat: str | None = None, model: str | None = None) -> int:
        """Forget one chat's entry, one model's entries, or (neither) everything; return the
        bytes dropped."""
        dropped = 0
        with self._lock:
            marks = [("chat", chat)] if chat is not None else []
            marks += [("model", model)] if model is not None else []
            for mark in marks or [("all",)]:
                self._dropped_at.pop(mark, None)
                self._dropped_at[mark] = self._drops
                if len(self._dropped_at) > MAX_DROP_MARKS:  # only recent drops can matter
                    self._dropped_at.popitem(last=False)
            self._drops += 1
            for key, entry in list(self._entries.items()):
                if (chat is None or entry.chat == chat) and (model is None or entry.model == model):
                    dropped += entry.bytes
                    del self._entries[key]
        return dropped

    @staticmethod
    def _key(entry: Entry) -> tuple:
        if entry.chat is not None:
            return ("chat", entry.chat)
        digest = hashlib.blake2b(entry.ids.astype(np.int64).tobytes(), digest_size=16).digest()
        return ("content", entry.model, entry.pixels_key, digest)
