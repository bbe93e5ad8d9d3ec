"""In-process backend on transformers' native InternVL (`InternVLForConditionalGeneration`).

A LocalBackend holds the models of its menu that fit its memory budget (model_backend.model_pool)
and the KV caches of the conversations' last answers (model_backend.prefix_cache). It prepares
each request on the CPU (images -> tiles -> prompt -> token ids) and generates on the device
one answer at a time (model_backend.generation). Stop is real: closing the stream sets an event
that a stopping criterion checks after every decoding step, and the worker thread is joined
before the stream's close returns.
"""

from __future__ import annotations

import itertools
import threading
import time
import weakref
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from model_backend.base import (
    DEFAULT_MODEL,
    Backend,
    BackendInfo,
    Conversation,
    GenerationSettings,
    GenerationStats,
    TextStream,
    raise_if_cancelled,
)
from model_backend.convert import gigabytes
from model_backend.errors import InputError, ModelLoadError
from model_backend.generation import BACKENDS, GenerationJob, generate_on_gpu
from model_backend.loading import (
    device_memory,
    estimate_weight_bytes,
    load_model,
    resolve_device,
)
from model_backend.media import content_key, file_key, frame_pixels, image_pixels
from model_backend.model_pool import Lease, ModelPool, PooledModel, release_memory
from model_backend.prefix_cache import PrefixCache
from model_backend.prompt import (
    DEFAULT_SYSTEM_PROMPT,
    build_prompt,
    drop_oldest_visual_turn,
    image_tile_budgets,
)
from model_backend.thinking import apply_thinking_mode, has_thinking_mode
from model_backend.tiny import RANDOM_WEIGHTS_MARKER
from model_backend.zerogpu import on_zero_gpu

GiB = 2**30


# ---------------------------------------------------------------------------------------------
# Memory budgets


def default_prefix_cache_bytes(device: torch.device) -> int:
    """The prefix cache's budget when none is given: on the CPU min(4 GiB, 10% of the RAM), on
    CUDA min(16 GiB, 20% of the first GPU's memory) (the cache lives beside the model).

    Off on ZeroGPU: generation runs there in a forked worker process, so the entries would live
    in that worker, out of reach of Clear and of this process's budget, and would only be found
    again when the next answer happens to run in the same worker."""
    if on_zero_gpu():
        return 0
    if device.type == "cuda":
        first = torch.cuda.get_device_properties(device.index or 0).total_memory
        return min(16 * GiB, first // 5)
    return min(4 * GiB, device_memory(device) // 10)


def default_pool_bytes(device: torch.device, prefix_cache: int) -> int:
    """The models' budget when none is given: 80% of the device's memory (the RAM, or every
    GPU's) less the prefix cache's budget; the rest is working memory. On ZeroGPU the GPU
    cannot be measured outside the GPU function: 0, that is one model at a time. (The backend
    raises it to the default model's size if that is bigger: the default model always loads.)
    """
    if on_zero_gpu():
        return 0
    return max(0, int(device_memory(device) * 0.8) - prefix_cache)


# ---------------------------------------------------------------------------------------------
# Preparing a request


@dataclass
class PreparedInput:
    input_ids: torch.Tensor
    pixel_values: torch.Tensor | None
    notices: list[str]
    pixels_key: str = ""  # names the images/frames behind pixel_values (see visual_tiles)


def visual_tiles(
    conversation: Conversation, max_tiles: int, tile_size: int
) -> tuple[list[np.ndarray], str]:
    """Tiles of every image and video frame, in prompt order (cached across turns), and a key
    that names exactly those pixels (token ids alone do not: every image token is the same id).
    """
    budgets = iter(image_tile_budgets(conversation, max_tiles))
    tiles: list[np.ndarray] = []
    names: list = []
    for turn in conversation.turns:
        for path in turn.images:
            budget = next(budgets)
            raise_if_cancelled()  # the request may have left while earlier ones decoded
            tiles.append(image_pixels(path, budget, tile_size))
            names.append((content_key(path), budget))
        if turn.video:
            raise_if_cancelled()
            tiles += frame_pixels(turn.video, tile_size)
            names.append((file_key(turn.video.path), turn.video))
    return tiles, repr((tile_size, names))


# ---------------------------------------------------------------------------------------------
# The backend


class LocalBackend(Backend):
    """InternVL on this machine's GPU or CPU: several models as memory allows, one generation
    at a time.

    prefix_cache_gb: memory for the KV caches kept for follow-ups (None: see
    default_prefix_cache_bytes; 0: off). model_pool_gb: memory for the models (None: see
    default_pool_bytes); the least recently used idle model is unloaded to make room.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        device: str = "auto",
        dtype: str = "auto",
        attn: str = "sdpa",
        models: list[str] | None = None,
        quantize: str | None = None,
        max_memory: str | None = None,
        device_map: dict | None = None,
        prefix_cache_gb: float | None = None,
        model_pool_gb: float | None = None,
    ):
        # How to load every model of the menu (model_backend.loading.load_model).
        self.placement = {
            "device": device,
            "dtype": dtype,
            "attn": attn,
            "quantize": quantize,
            "max_memory": max_memory,
            "device_map": device_map,
        }
        target = resolve_device(device)
        self.default_model = model
        self.models = list(models or [model])
        if model not in self.models:
            self.models.insert(0, model)
        self._generating = threading.Lock()  # one generation at a time on the device
        self._request_ids = itertools.count()
        self._stop_events: dict[int, threading.Event] = {}
        self._known: dict[str, BackendInfo] = {}  # every model loaded once, for describe
        cache_bytes = (
            default_prefix_cache_bytes(target)
            if prefix_cache_gb is None
            else int(prefix_cache_gb * GiB)
        )
        self.prefix_cache = PrefixCache(cache_bytes)
        pool_bytes = (
            default_pool_bytes(target, cache_bytes)
            if model_pool_gb is None
            else int(model_pool_gb * GiB)
        )
        self.pool = ModelPool(pool_bytes, self._load, self._estimate, self._unloaded)
        BACKENDS[id(self)] = self
        first = self.pool.acquire(model)  # a model alone always may load (if the device fits it)
        first.release()
        if model_pool_gb is None:  # the default budget always holds the default model
            self.pool.budget = max(pool_bytes, first.slot.bytes)
        # Of the default model, for the UI's estimates (kept when it is unloaded).
        self.tokens_per_tile = first.slot.tokens_per_tile
        self.tile_size = first.slot.tile_size

    def _load(self, model: str) -> PooledModel:
        slot = PooledModel.of(model, load_model(model, **self.placement))
        self._known[model] = slot.info
        return slot

    def _estimate(self, model: str) -> int | None:
        return estimate_weight_bytes(model, **self.placement)

    def _unloaded(self, model: str) -> None:
        self.prefix_cache.drop(model=model)  # its caches are of no use to any other model

    def _lease(self, model: str) -> Lease:
        """A hold on `model`, loaded first if needed; InputError if it does not fit or cannot
        be loaded (the models in memory are not disturbed)."""
        try:
            return self.pool.acquire(model)
        except ModelLoadError as error:
            loaded = ", ".join(self.pool.loaded())
            raise InputError(f"{error} Still answering with {loaded}.") from error

    # -- models -------------------------------------------------------------------------------

    @property
    def info(self) -> BackendInfo:
        return self.describe()

    def describe(self, model: str | None = None) -> BackendInfo:
        name = self.default_model if model is None else self.check_model(model)
        slot = self.pool.get(name)
        if slot is not None:
            return slot.info
        if name in self._known:
            return self._known[name]
        return BackendInfo(
            model=name,
            kind="local",
            random_weights=Path(name, RANDOM_WEIGHTS_MARKER).is_file(),
            thinking_mode=has_thinking_mode(name),  # by its name until it is loaded
        )

    def ensure_model(self, model: str) -> BackendInfo:
        name = self.check_model(model)
        self._lease(name).release()
        return self.describe(name)

    def unload(self, model: str | None = None) -> None:
        """Unload `model` (None: every model) and drop its prefix cache entries."""
        self.pool.unload(model)

    def close(self) -> None:
        """Free everything this backend holds; it cannot answer afterwards."""
        BACKENDS.pop(id(self), None)
        self.pool.unload()
        self.prefix_cache.drop()
        release_memory()

    def clear_cache(self, chat: str | None = None) -> None:
        """Drop the chat's kept KV cache (None: every chat's) and give the memory back."""
        if self.prefix_cache.drop(chat=chat):  # releasing costs a full garbage collection
            release_memory()

    # The default model's, for tests and tools that look inside.
    def _default(self) -> PooledModel:
        slot = self.pool.get(self.default_model)
        if slot is None:
            raise AttributeError(f"{self.default_model} is not loaded")
        return slot

    model = property(lambda self: self._default().model)
    tokenizer = property(lambda self: self._default().tokenizer)
    hidden_ids = property(lambda self: self._default().hidden_ids)
    context_length = property(lambda self: self._default().context_length)
    device = property(lambda self: self._default().device)
    dtype = property(lambda self: self._default().dtype)

    # -- inputs ---------------------------------------------------------------------------------

    def prepare(
        self, conversation: Conversation, settings: GenerationSettings, model: str | None = None
    ) -> PreparedInput:
        """Images -> tiles -> prompt -> token ids (on the CPU) for `model` (None: the default).
        Raises InputError for unusable input. A conversation too long for the model loses its
        oldest image/video turns first."""
        conversation.check()
        settings.check()
        with self._lease(self.check_model(model)) as slot:
            return self._prepare(slot, conversation, settings)

    def _prepare(
        self, slot: PooledModel, conversation: Conversation, settings: GenerationSettings
    ) -> PreparedInput:
        if slot.info.thinking_mode:  # the reasoning switch asks it to think, not the MPO wrapper
            own = slot.info.system_prompt or DEFAULT_SYSTEM_PROMPT
            conversation = apply_thinking_mode(conversation, own)
        dropped = 0
        while True:
            tiles, pixels_key = visual_tiles(conversation, settings.max_tiles, slot.tile_size)
            prompt = build_prompt(
                conversation, [len(t) for t in tiles], slot.tokens_per_tile, slot.template
            )
            raise_if_cancelled()
            input_ids = slot.tokenizer(prompt, return_tensors="pt").input_ids
            if input_ids.shape[1] + settings.max_new_tokens <= slot.context_length:
                break
            shorter = drop_oldest_visual_turn(conversation)
            if shorter is None:
                break
            conversation, dropped = shorter, dropped + 1
        prompt_tokens = input_ids.shape[1]
        if prompt_tokens >= slot.context_length:
            image_tokens = sum(len(t) for t in tiles) * slot.tokens_per_tile
            raise InputError(
                f"This question needs {prompt_tokens} tokens ({image_tokens} of them for images "
                f"and frames) but the model takes at most {slot.context_length}. Lower 'Max "
                f"tiles' or the number of frames, send fewer images, or start a new conversation."
            )
        notices = []
        if dropped:
            notices.append(
                f"The conversation is longer than the model's context ({slot.context_length} "
                f"tokens): its {dropped} oldest question(s) with images or video were left out "
                f"of this answer."
            )
        pixel_values = torch.from_numpy(np.concatenate(tiles)) if tiles else None
        return PreparedInput(input_ids, pixel_values, notices, pixels_key)

    def generation_kwargs(self, settings: GenerationSettings, room: int) -> dict:
        """generate's sampling arguments for `settings`, with `room` tokens left in the model's
        context for the answer."""
        kwargs = {
            "max_new_tokens": min(settings.max_new_tokens, room),
            "repetition_penalty": settings.repetition_penalty,
        }
        if settings.temperature > 0:
            kwargs.update(
                do_sample=True,
                temperature=settings.temperature,
                top_p=settings.top_p,
                top_k=settings.top_k,  # 0 switches top-k off
            )
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return kwargs

    # -- generation -----------------------------------------------------------------------------

    def stream(
        self,
        conversation: Conversation,
        settings: GenerationSettings,
        *,
        model: str | None = None,
        chat: str | None = None,
    ) -> TextStream:
        conversation.check()
        settings.check()
        name = self.check_model(model)
        lease = self._lease(name)  # the model stays loaded until the answer ends
        try:
            inputs = self._prepare(lease.slot, conversation, settings)
        except BaseException:
            lease.release()
            raise
        job = GenerationJob(
            inputs.input_ids,
            inputs.pixel_values,
            inputs.pixels_key,
            settings,
            next(self._request_ids),
            name,
            chat,
        )
        request = LocalRequest(self, job, lease)
        stream = TextStream.of(request.pieces, request.cancel, inputs.notices)
        weakref.finalize(stream, lease.release)  # a stream dropped unread frees its model too
        return stream

    def pool_summary(self) -> str:
        """One line on memory use, for logs and benchmarks."""
        return (
            f"models {gigabytes(self.pool.used)} of {gigabytes(self.pool.budget)} "
            f"({', '.join(self.pool.loaded())}); prefix cache "
            f"{gigabytes(self.prefix_cache.bytes)} of {gigabytes(self.prefix_cache.budget)}"
        )


class LocalRequest:
    """One answer, from the moment it is queued until its stream ends: it holds its model's
    lease (released at the end, or at once if it is cancelled before it starts)."""

    def __init__(self, backend: LocalBackend, job: GenerationJob, lease: Lease):
        self.backend, self.job, self.lease = backend, job, lease
        self.stop = threading.Event()  # checked between decoding steps; also set at the end
        self.stop_requested = threading.Event()  # Stop, or the consumer left
        self.running = False
        self._state = threading.Lock()

    def cancel(self) -> None:
        self.stop_requested.set()
        self.stop.set()
        with self._state:
            if not self.running:  # never started: nothing else will release the model
                self.lease.release()

    def pieces(self, finish):
        """The answer's text increments; `finish(stats)` when it ends, however it ends."""
        with self._state:
            self.running = not self.stop_requested.is_set()
        started = time.perf_counter()
        self.seen, self.stats = 0, None
        try:
            if self.running:
                yield from self._generate()
        finally:
            self.backend._stop_events.pop(self.job.request, None)
            self.lease.release()
            finish(
                self.stats
                or GenerationStats(  # closed before the end
                    new_tokens=self.seen,
                    prompt_tokens=self.job.input_ids.shape[1],
                    time_to_first_token_s=None,
                    total_s=time.perf_counter() - started,
                    stopped=True,
                )
            )

    def _generate(self):
        backend = self.backend
        # Registered for the GPU function only once the answer is read: a stream closed before
        # then (a request cancelled while it waited) leaves nothing behind.
        backend._stop_events[self.job.request] = self.stop
        with backend._generating:
            generation = generate_on_gpu(id(backend), self.job)
            try:
                for step in generation:
                    if self.stop_requested.is_set() and on_zero_gpu():
                        break  # the worker process cannot see the event; closing stops it
                    if step.stats is not None:
                        self.stats = replace(step.stats, stopped=self.stop_requested.is_set())
                    else:
                        self.seen += bool(step.text)
                        yield step.text
            finally:
                generation.close()  # stops and joins the worker if the consumer left early
