"""Generation on the model's device: the one function that needs the GPU.

`generate_on_gpu` runs `generate` in a worker thread that feeds a TokenStreamer, yields the
text increments as they come, then one final Step with the figures. It takes plain, picklable
data: on ZeroGPU it runs in a worker process (a forked copy of this one), and finds its backend
there by id in the registry.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from transformers import StoppingCriteriaList

from model_backend.errors import GenerationError
from model_backend.streamer import StopOnEvent, TokenStreamer
from model_backend.types import END, GenerationSettings, GenerationStats, drain
from model_backend.zerogpu import gpu_function

if TYPE_CHECKING:
    from model_backend.local import LocalBackend

log = logging.getLogger(__name__)

# The LocalBackends of this process by id (the GPU function receives an id, not the backend).
# Weak: a backend that was replaced, or closed, is not held here.
BACKENDS: weakref.WeakValueDictionary[int, LocalBackend] = weakref.WeakValueDictionary()


@dataclass(frozen=True)
class GenerationJob:
    """One answer to generate: the prepared input and where it comes from."""

    input_ids: torch.Tensor
    pixel_values: torch.Tensor | None
    pixels_key: str  # names the images/frames behind pixel_values (LocalBackend.visual_tiles)
    settings: GenerationSettings
    request: int  # finds the request's stop event
    model: str
    chat: str | None = None  # whose prefix cache entry the answer's cache becomes


@dataclass(frozen=True)
class Step:
    """What generate_on_gpu yields: a text increment ("" while busy), or, last, the figures."""

    text: str = ""
    stats: GenerationStats | None = None


def gpu_seconds(backend_id: int, job: GenerationJob) -> int:
    """GPU time to reserve on ZeroGPU for one answer: prefill of the image tiles and decoding
    at a conservative 20 tokens/s, within ZeroGPU's limits."""
    tiles = 0 if job.pixel_values is None else job.pixel_values.shape[0]
    return int(min(180, max(20, 10 + tiles * 0.5 + job.settings.max_new_tokens / 20)))


@gpu_function(duration=gpu_seconds)
def generate_on_gpu(backend_id: int, job: GenerationJob):
    """Generate on the model's device: yields Step(text) increments, then Step(stats=...)."""
    backend = BACKENDS[backend_id]
    slot = backend.pool.get(job.model)  # held by the request's lease
    if slot is None or slot.loaded is None:  # unloaded by force (the backend was closed)
        raise GenerationError(f"{job.model} was unloaded before it could answer; ask again.")
    stop = backend._stop_events.get(job.request) or threading.Event()
    streamer = TokenStreamer(slot.tokenizer, slot.hidden_ids)
    prefix = backend.prefix_cache
    since = prefix.mark()
    cache, reused = prefix.take(
        job.model, job.pixels_key, job.input_ids[0].numpy(), job.chat, slot.image_token_id
    )
    input_ids = job.input_ids.to(slot.device)
    prompt_tokens = input_ids.shape[1]
    kwargs = {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "cache": cache,
        "return_dict_in_generate": True,
        "streamer": streamer,
        "stopping_criteria": StoppingCriteriaList([StopOnEvent(stop)]),
        **backend.generation_kwargs(job.settings, slot.context_length - prompt_tokens),
        "eos_token_id": slot.stop_ids,
        "pad_token_id": slot.tokenizer.pad_token_id,
    }
    # With a reused cache the images are already in it (take makes sure). The key is left out
    # rather than set to None: generate would still try to encode "the images".
    if job.pixel_values is not None and cache is None:
        kwargs["pixel_values"] = job.pixel_values.to(slot.device, slot.dtype)
    result: list = []  # [generate's output] or [the exception it raised]
    worker = threading.Thread(
        target=run_generate,
        args=(slot.model, kwargs, streamer, result),
        name="internvl-generate",
    )
    started = time.perf_counter()
    worker.start()
    try:
        for piece in drain(streamer.queue):
            yield Step(piece)
    finally:
        stop.set()
        worker.join()
    if result and isinstance(result[0], BaseException):
        raise result[0]
    output = result[0]
    kept = getattr(output, "cache", None)
    if kept is not None:
        ids = output.sequences[0][: kept.get_seq_length()].cpu().numpy()
        prefix.put(job.model, job.pixels_key, ids, kept, job.chat, since)
    first = streamer.first_token_at
    yield Step(
        stats=GenerationStats(
            new_tokens=streamer.new_tokens,
            prompt_tokens=prompt_tokens,
            time_to_first_token_s=None if first is None else first - started,
            total_s=time.perf_counter() - started,
            reused_tokens=reused,
        )
    )


def run_generate(model, kwargs: dict, streamer: TokenStreamer, result: list) -> None:
    """The worker thread: generate, and hand the output or the error to the consumer."""
    try:
        with torch.inference_mode():
            result.append(model.generate(**kwargs))
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
