"""In-process backend on transformers' native InternVL (`InternVLForConditionalGeneration`).

Generation runs in a worker thread that feeds a streamer; the consumer reads text increments.
Stop is real: closing the stream sets an event that a stopping criterion checks after every
decoding step, and the worker thread is joined before the stream's close returns.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import itertools
import logging
import queue
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from model_backend.base import (
    DEFAULT_MODEL,
    END,
    Backend,
    BackendInfo,
    Conversation,
    GenerationSettings,
    GenerationStats,
    TextStream,
    drain,
    raise_if_cancelled,
)
from model_backend.errors import GenerationError, InputError, ModelLoadError
from model_backend.loading import load_model, resolve_device
from model_backend.media import content_key, file_key, frame_pixels, image_pixels
from model_backend.prompt import build_prompt, drop_oldest_visual_turn, image_tile_budgets
from model_backend.tiny import RANDOM_WEIGHTS_MARKER
from model_backend.zerogpu import gpu_function, on_zero_gpu

log = logging.getLogger(__name__)

# Special tokens that are markup the user should see: InternVL's grounding tags.
VISIBLE_SPECIAL_TOKENS = ("<ref>", "</ref>", "<box>", "</box>", "<quad>", "</quad>")


# ---------------------------------------------------------------------------------------------
# Loading


def release_memory() -> None:
    """Return freed memory to the operating system: glibc keeps freed blocks for reuse, so a
    long conversation would otherwise hold on to its peak after Clear."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    with contextlib.suppress(OSError, AttributeError):  # not glibc (macOS, musl): nothing to do
        ctypes.CDLL("libc.so.6").malloc_trim(0)


# ---------------------------------------------------------------------------------------------
# Streaming and stopping


class StopOnEvent(StoppingCriteria):
    """Ends generation at the next decoding step once the event is set (the Stop button)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs):
        stop = self.event.is_set()
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


MAX_HELD_TOKENS = 4
MIN_REUSED_TOKENS = 16  # below this, reusing a cache saves nothing worth its bookkeeping


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


# ---------------------------------------------------------------------------------------------
# The backend


@dataclass
class PreparedInput:
    input_ids: torch.Tensor
    pixel_values: torch.Tensor | None
    notices: list[str]
    pixels_key: str = ""  # names the images/frames behind pixel_values (see visual_tiles)


# Backends of this process by id: the GPU function receives an id, not the backend itself,
# because on ZeroGPU its arguments are pickled to a worker (a forked copy of this process).
_BACKENDS: dict[int, LocalBackend] = {}


def gpu_seconds(
    backend_id: int,
    input_ids: torch.Tensor,
    pixel_values: torch.Tensor | None,
    pixels_key: str,
    settings: GenerationSettings,
    request: int,
) -> int:
    """GPU time to reserve on ZeroGPU for one answer: prefill of the image tiles and decoding
    at a conservative 20 tokens/s, within ZeroGPU's limits."""
    tiles = 0 if pixel_values is None else pixel_values.shape[0]
    return int(min(180, max(20, 10 + tiles * 0.5 + settings.max_new_tokens / 20)))


@gpu_function(duration=gpu_seconds)
def generate_on_gpu(
    backend_id: int,
    input_ids: torch.Tensor,
    pixel_values: torch.Tensor | None,
    pixels_key: str,
    settings: GenerationSettings,
    request: int,
):
    """Generate on the model's device: yields text increments ("" while busy), then the
    figures. The one function that needs the GPU, used by every tab and endpoint; it takes
    plain, picklable data (on ZeroGPU it runs in a worker process)."""
    backend = _BACKENDS[backend_id]
    stop = backend._stop_events.get(request) or threading.Event()
    streamer = TokenStreamer(backend.tokenizer, backend.hidden_ids)
    cache, reused = backend.prefix_cache(input_ids[0].tolist(), pixels_key)
    input_ids = input_ids.to(backend.device)
    kwargs = {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "cache": cache,
        "return_dict_in_generate": True,
        "streamer": streamer,
        "stopping_criteria": StoppingCriteriaList([StopOnEvent(stop)]),
        **backend.generation_kwargs(settings, input_ids.shape[1]),
    }
    # With a reused cache the images are already in it (prefix_cache makes sure). The key is
    # left out rather than set to None: generate would still try to encode "the images".
    if pixel_values is not None and cache is None:
        kwargs["pixel_values"] = pixel_values.to(backend.device, backend.dtype)
    result: list = []  # [generate's output] or [the exception it raised]
    worker = threading.Thread(
        target=backend._generate, args=(kwargs, streamer, result), name="internvl-generate"
    )
    started = time.perf_counter()
    worker.start()
    try:
        yield from drain(streamer.queue)
    finally:
        stop.set()
        worker.join()
    if result and isinstance(result[0], BaseException):
        raise result[0]
    backend.keep_cache(result[0], pixels_key)
    first = streamer.first_token_at
    yield GenerationStats(
        new_tokens=streamer.new_tokens,
        prompt_tokens=input_ids.shape[1],
        time_to_first_token_s=None if first is None else first - started,
        total_s=time.perf_counter() - started,
        reused_tokens=reused,
    )


class LocalBackend(Backend):
    """InternVL on this machine's GPU or CPU, one generation at a time.

    Several checkpoints may be offered (`models`); one is held in memory at a time, and
    `select_model` swaps it (the old one is freed first).
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
        self.device = resolve_device(device)
        self.models = list(models or [model])
        if model not in self.models:
            self.models.insert(0, model)
        self._lock = threading.Lock()  # one generation (or model swap) at a time
        self._request_ids = itertools.count()
        self._stop_events: dict[int, threading.Event] = {}
        self._kv = None  # (token ids, KV cache) of the last answer, for follow-ups
        _BACKENDS[id(self)] = self
        self.load(model)

    def load(self, model: str) -> None:
        """Load a checkpoint (after freeing the current one; original-format checkpoints are
        converted first, once) and describe it."""
        self.unload()
        loaded = load_model(model, **self.placement)
        self.model, self.tokenizer, self.template = loaded.model, loaded.tokenizer, loaded.template
        self.device = loaded.input_device
        self.dtype = self.model.model.vision_tower.dtype  # pixels go in at the tower's dtype
        vision = self.model.config.vision_config
        self.tile_size = int(vision.image_size[0])
        self.tokens_per_tile = int(self.model.config.image_seq_length)
        self.context_length = int(self.model.config.text_config.max_position_embeddings)
        visible = {self.tokenizer.convert_tokens_to_ids(t) for t in VISIBLE_SPECIAL_TOKENS}
        added = self.tokenizer.added_tokens_decoder
        special = set(self.tokenizer.all_special_ids) | {i for i, t in added.items() if t.special}
        self.hidden_ids = special - visible
        self.stop_ids = self._stop_token_ids()
        self.info = BackendInfo(
            model=model,
            kind="local",
            device=loaded.description,
            random_weights=Path(model, RANDOM_WEIGHTS_MARKER).is_file(),
            context_length=self.context_length,
            system_prompt=self.template.system_prompt,
        )

    def unload(self) -> None:
        self._kv = None
        if getattr(self, "model", None) is None:
            return
        self.model = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def select_model(self, model: str) -> None:
        if model not in self.models:
            raise InputError(
                f"'{model}' is not one of this demo's models: {', '.join(self.models)}"
            )
        previous = self.info.model
        if model == previous:
            return
        with self._lock:  # waits for the running answer
            try:
                self.load(model)
            except ModelLoadError as error:
                self.load(previous)  # only one model fits: the old one was freed first
                raise InputError(f"{error} Still answering with {previous}.") from error

    def _stop_token_ids(self) -> list[int]:
        configured = self.model.generation_config.eos_token_id
        ids = configured if isinstance(configured, list) else [configured]
        im_end = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        return sorted({i for i in [*ids, im_end] if i is not None})

    # -- inputs ---------------------------------------------------------------------------------

    def visual_tiles(
        self, conversation: Conversation, max_tiles: int
    ) -> tuple[list[np.ndarray], str]:
        """Tiles of every image and video frame, in prompt order (cached across turns), and a
        key that names exactly those pixels (token ids alone do not: every image token is the
        same id)."""
        budgets = iter(image_tile_budgets(conversation, max_tiles))
        tiles: list[np.ndarray] = []
        names: list = []
        for turn in conversation.turns:
            for path in turn.images:
                budget = next(budgets)
                raise_if_cancelled()  # the request may have left while earlier ones decoded
                tiles.append(image_pixels(path, budget, self.tile_size))
                names.append((content_key(path), budget))
            if turn.video:
                raise_if_cancelled()
                tiles += frame_pixels(turn.video, self.tile_size)
                names.append((file_key(turn.video.path), turn.video))
        return tiles, repr(names)

    def prepare(self, conversation: Conversation, settings: GenerationSettings) -> PreparedInput:
        """Images -> tiles -> prompt -> token ids (on the CPU). Raises InputError for unusable
        input. A conversation too long for the model loses its oldest image/video turns first.
        """
        conversation.check()
        settings.check()
        dropped = 0
        while True:
            tiles, pixels_key = self.visual_tiles(conversation, settings.max_tiles)
            prompt = build_prompt(
                conversation, [len(t) for t in tiles], self.tokens_per_tile, self.template
            )
            raise_if_cancelled()
            input_ids = self.tokenizer(prompt, return_tensors="pt").input_ids
            if input_ids.shape[1] + settings.max_new_tokens <= self.context_length:
                break
            shorter = drop_oldest_visual_turn(conversation)
            if shorter is None:
                break
            conversation, dropped = shorter, dropped + 1
        prompt_tokens = input_ids.shape[1]
        if prompt_tokens >= self.context_length:
            image_tokens = sum(len(t) for t in tiles) * self.tokens_per_tile
            raise InputError(
                f"This question needs {prompt_tokens} tokens ({image_tokens} of them for images "
                f"and frames) but the model takes at most {self.context_length}. Lower 'Max "
                f"tiles' or the number of frames, send fewer images, or start a new conversation."
            )
        notices = []
        if dropped:
            notices.append(
                f"The conversation is longer than the model's context ({self.context_length} "
                f"tokens): its {dropped} oldest question(s) with images or video were left out "
                f"of this answer."
            )
        pixel_values = torch.from_numpy(np.concatenate(tiles)) if tiles else None
        return PreparedInput(input_ids, pixel_values, notices, pixels_key)

    def generation_kwargs(self, settings: GenerationSettings, prompt_tokens: int) -> dict:
        kwargs = {
            "max_new_tokens": min(settings.max_new_tokens, self.context_length - prompt_tokens),
            "repetition_penalty": settings.repetition_penalty,
            "eos_token_id": self.stop_ids,
            "pad_token_id": self.tokenizer.pad_token_id,
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

    def stream(self, conversation: Conversation, settings: GenerationSettings) -> TextStream:
        inputs = self.prepare(conversation, settings)
        request = next(self._request_ids)
        # Registered for the GPU function only once the answer is read: a stream closed before
        # then (a request cancelled while it waited) leaves nothing behind.
        stop = threading.Event()
        stop_requested = threading.Event()  # `stop` is also set at the natural end

        def cancel() -> None:
            stop_requested.set()
            stop.set()

        text_stream = TextStream(pieces=iter(()), cancel=cancel, notices=inputs.notices)

        def pieces():
            started = time.perf_counter()
            seen = 0
            self._stop_events[request] = stop
            with self._lock:
                generation = generate_on_gpu(
                    id(self),
                    inputs.input_ids,
                    inputs.pixel_values,
                    inputs.pixels_key,
                    settings,
                    request,
                )
                try:
                    for item in generation:
                        if stop_requested.is_set() and on_zero_gpu():
                            break  # the worker process cannot see the event; closing stops it
                        if isinstance(item, GenerationStats):
                            text_stream.stats = replace(item, stopped=stop_requested.is_set())
                        else:
                            seen += bool(item)
                            yield item
                finally:
                    generation.close()  # stops and joins the worker if the consumer left early
                    self._stop_events.pop(request, None)
                    if text_stream.stats is None:  # closed before the end
                        text_stream.stats = GenerationStats(
                            new_tokens=seen,
                            prompt_tokens=inputs.input_ids.shape[1],
                            time_to_first_token_s=None,
                            total_s=time.perf_counter() - started,
                            stopped=True,
                        )

        text_stream.pieces = pieces()
        return text_stream

    # -- reusing the previous answer's KV cache ------------------------------------------------

    def prefix_cache(self, ids: list[int], pixels_key: str):
        """(cache, reused tokens) for a prompt that starts like the last one, else (None, 0).

        A follow-up question repeats the whole conversation, images included: the KV cache of
        the previous answer already holds it. The cache is cut to the common prefix; it is only
        used when that prefix covers every image token (generate feeds the images only at the
        start), and it is taken, not copied (generation extends it in place).
        """
        kept, self._kv = self._kv, None
        if kept is None:
            return None, 0
        cached_ids, cached_pixels, cache = kept
        if cached_pixels != pixels_key:  # other images (or sampled differently): start afresh
            return None, 0
        common = 0
        for a, b in zip(cached_ids, ids, strict=False):
            if a != b:
                break
            common += 1
        common = min(common, len(ids) - 1)  # at least one token must go through the model
        image_id = self.model.config.image_token_id
        last_image = max((i for i, t in enumerate(ids) if t == image_id), default=-1)
        if common <= last_image or common < MIN_REUSED_TOKENS:
            return None, 0
        cache.crop(common - cache.get_seq_length())
        return cache, common

    def keep_cache(self, output, pixels_key: str) -> None:
        """Remember the finished answer's cache, the tokens it holds and their images."""
        cache = getattr(output, "cache", None)
        if cache is None:
            return
        held = cache.get_seq_length()
        self._kv = (output.sequences[0][:held].tolist(), pixels_key, cache)

    def clear_cache(self) -> None:
        """Drop the kept KV cache and give the freed memory back to the system."""
        self._kv = None
        release_memory()

    def _generate(self, kwargs: dict, streamer: TokenStreamer, result: list) -> None:
        try:
            with torch.inference_mode():
                result.append(self.model.generate(**kwargs))
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            result.append(
                GenerationError(
                    "The GPU ran out of memory for this request. Lower 'Max tiles' (or the number "
                    "of images or frames), or start a new conversation, and try again."
                )
            )
        except BaseException as error:  # handed to the consumer thread, which re-raises it
            log.exception("generation failed")
            result.append(error)
        finally:
            streamer.queue.put(END)
