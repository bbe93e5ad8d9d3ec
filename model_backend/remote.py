"""Backend for an OpenAI-compatible engine: vLLM, LMDeploy, SGLang, `transformers serve`.

For the models too big for one GPU (InternVL2.5-26B/38B/78B with tensor parallelism), the
engine runs the model and this demo sends it the conversation, through the official `openai`
client, streaming. The demo still decides what the model sees where the client can: the system
prompt, image numbering, the reasoning/answer-style wording (model_backend.prompt), and for video
the frames (sampled here exactly as for the local backend, sent as images after `FrameK:`
prefixes, which every engine accepts, InternLM2-based models included). The engine does the
tiling; the tile limit is passed the way each engine takes it.

Engines that parse a thinking model's reply send the thinking apart (`reasoning_content`, or
vLLM's newer `reasoning`); it is put back inline as `<think>...</think>` before the answer, so
that every consumer reads one format (model_backend.thinking).
"""

from __future__ import annotations

import base64
import io
import logging
import queue
import threading
import time
from pathlib import Path

import openai
from PIL import Image

from model_backend.base import (
    END,
    Backend,
    BackendInfo,
    Conversation,
    GenerationSettings,
    GenerationStats,
    TextStream,
    drain,
)
from model_backend.errors import GenerationError, InputError, ModelLoadError
from model_backend.images import load_image
from model_backend.media import BoundedCache, content_key, file_key, sample_video
from model_backend.prompt import (
    DEFAULT_SYSTEM_PROMPT,
    IMAGE_PLACEHOLDER,
    chat_messages,
    image_tile_budgets,
)
from model_backend.thinking import (
    THINK_CLOSE,
    THINK_OPEN,
    apply_thinking_mode,
    has_thinking_mode,
)

log = logging.getLogger(__name__)

ENGINES = ("vllm", "lmdeploy", "sglang", "generic")
# Engines resize to at most 12-40 tiles of 448 pixels anyway; sending more only costs bandwidth.
MAX_SENT_SIDE = 4096
ENCODED_CACHE = BoundedCache(
    256 * 1024**2, lambda value: sum(map(len, value)) if isinstance(value, list) else len(value)
)


# ---------------------------------------------------------------------------------------------
# Conversation -> OpenAI messages


def data_url(image: Image.Image, lossless: bool = False) -> str:
    """An RGB image as a base64 data URL (PNG when lossless, else JPEG at quality 95)."""
    if max(image.size) > MAX_SENT_SIDE:
        image = image.copy()
        image.thumbnail((MAX_SENT_SIDE, MAX_SENT_SIDE), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    if lossless:
        image.save(buffer, format="PNG")
        mime = "image/png"
    else:
        image.save(buffer, format="JPEG", quality=95)
        mime = "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode()}"


def image_file_url(path: str) -> str:
    """An uploaded image, upright (EXIF applied), as a data URL; encoded once per file."""
    lossless = Path(path).suffix.lower() in (".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
    return ENCODED_CACHE.get_or_make(
        ("image", content_key(path)), lambda: data_url(load_image(path), lossless)
    )


def visual_parts(conversation: Conversation, settings: GenerationSettings, engine: str):
    """For each user turn, its image parts in order (images, or a video's frames)."""
    budgets = iter(image_tile_budgets(conversation, settings.max_tiles))
    per_turn = []
    for turn in conversation.turns:
        parts = []
        for path in turn.images:
            parts.append(image_part(image_file_url(path), next(budgets), engine))
        if turn.video:
            frames, _ = sample_video(turn.video)
            key = ("frames", file_key(turn.video.path), turn.video)
            urls = ENCODED_CACHE.get_or_make(key, lambda f=frames: [data_url(x) for x in f])
            parts += [image_part(url, turn.video.tiles_per_frame, engine) for url in urls]
        per_turn.append(parts)
    return per_turn


def image_part(url: str, max_tiles: int, engine: str) -> dict:
    image_url: dict = {"url": url}
    if engine == "lmdeploy":  # LMDeploy reads a tile limit per image
        image_url["max_dynamic_patch"] = max_tiles
    return {"type": "image_url", "image_url": image_url}


# Where an engine wants the images: interleaved content parts (the OpenAI convention), or all
# image parts first and a placeholder in the text at each image's place. vLLM (by default) and
# LMDeploy do not keep interleaved parts in order for InternVL; both honour a placeholder that
# is already in the text.
PLACEHOLDERS = {"vllm": "<image>", "sglang": "<image>", "lmdeploy": "<IMAGE_TOKEN>"}


def user_content(text: str, images: list[dict], engine: str) -> list[dict]:
    """One user message's content: `text` holds an IMAGE_PLACEHOLDER at each image's place."""
    placeholder = PLACEHOLDERS.get(engine)
    if placeholder is not None:
        return [*images, {"type": "text", "text": text.replace(IMAGE_PLACEHOLDER, placeholder)}]
    content: list[dict] = []
    pieces = text.split(IMAGE_PLACEHOLDER)
    for piece, image in zip(pieces, images, strict=False):
        if piece:
            content.append({"type": "text", "text": piece})
        content.append(image)
    if pieces[-1]:
        content.append({"type": "text", "text": pieces[-1]})
    return content


def openai_messages(
    conversation: Conversation, settings: GenerationSettings, engine: str = "generic"
) -> list[dict]:
    """The conversation in the chat-completions format, with the images where the prompt
    builder puts `<image>`, so numbering and `FrameK:` prefixes stay with their images."""
    messages = chat_messages(conversation)
    offset = len(messages) - len(conversation.turns)  # the system message, if any
    parts_by_turn = visual_parts(conversation, settings, engine)
    out = [{"role": role, "content": text} for role, text in messages[:offset]]
    for (role, text), images in zip(messages[offset:], parts_by_turn, strict=True):
        content = user_content(text, images, engine) if images else text
        out.append({"role": role, "content": content})
    return out


def engine_options(conversation: Conversation, settings: GenerationSettings, engine: str) -> dict:
    """Request-body fields beyond the OpenAI standard, as each engine names them."""
    extra: dict = {}
    if engine in ("vllm", "lmdeploy", "sglang"):
        extra["repetition_penalty"] = settings.repetition_penalty
        if settings.top_k > 0:
            extra["top_k"] = settings.top_k
    if engine == "vllm":
        # One limit per request: the largest budget of the conversation's images.
        budgets = image_tile_budgets(conversation, settings.max_tiles) or [settings.max_tiles]
        frames = [t.video.tiles_per_frame for t in conversation.turns if t.video]
        extra["mm_processor_kwargs"] = {"max_dynamic_patch": max([*budgets, *frames])}
    return extra


def reasoning_text(delta) -> str | None:
    """The thinking a chunk's delta carries apart from its content, if any: `reasoning_content`
    (vLLM, LMDeploy, SGLang) or `reasoning` (vLLM's newer name; one of them when both come)."""
    for name in ("reasoning_content", "reasoning"):
        value = getattr(delta, name, None)  # extra fields of the client's delta model
        if isinstance(value, str) and value:
            return value
    return None


# ---------------------------------------------------------------------------------------------
# The backend


class OpenAIBackend(Backend):
    """Streams answers from an OpenAI-compatible server; many at once (the engine batches).
    Every model the engine serves can be asked for, request by request."""

    def __init__(
        self,
        endpoint: str,
        api_key: str | None = None,
        served_model: str | None = None,
        engine: str = "generic",
        timeout_s: float = 600.0,
    ):
        if engine not in ENGINES:
            raise ModelLoadError(f"--engine must be one of {', '.join(ENGINES)}, not {engine}.")
        self.endpoint = endpoint
        self.engine = engine
        self.timeout_s = timeout_s
        self.client = openai.OpenAI(
            base_url=endpoint, api_key=api_key or "EMPTY", timeout=timeout_s, max_retries=0
        )
        try:
            self.models = self.served_models()
        except GenerationError as error:
            if not served_model:
                raise ModelLoadError(
                    f"{error} Start the engine first, or name its model with --served-model."
                ) from error
            log.warning("%s Using --served-model %s.", error, served_model)
            self.models = [served_model]
        if served_model and served_model not in self.models:
            self.models.insert(0, served_model)
        self.info = self.describe_served(served_model or self.models[0])

    def served_models(self) -> list[str]:
        """What the engine serves (`/v1/models`)."""
        try:  # a short wait: this runs at start-up, and a healthy engine answers at once
            return [model.id for model in self.client.with_options(timeout=15).models.list()]
        except openai.APIError as error:
            # At start-up there is no conversation yet to keep.
            raise self.explain(error, conversation=False) from error

    def check_model(self, model: str | None) -> str:
        if model is None:
            return self.info.model
        if model not in self.models:
            raise InputError(f"The engine does not serve '{model}': {', '.join(self.models)}.")
        return model

    def describe(self, model: str | None = None) -> BackendInfo:
        return self.describe_served(self.check_model(model))

    def describe_served(self, model: str) -> BackendInfo:
        return BackendInfo(
            model=model,
            kind="openai",
            device=f"{self.engine} at {self.endpoint}",
            thinking_mode=has_thinking_mode(model),  # known by the served name alone
        )

    def explain(
        self, error: Exception, conversation: bool = True, model: str | None = None
    ) -> GenerationError:
        """A message a user can act on, for everything the client can raise (`conversation`:
        whether a conversation is waiting for the answer; `model`: the model it asked for)."""
        if isinstance(error, openai.APITimeoutError):
            return GenerationError(f"The engine at {self.endpoint} did not answer in time.")
        if isinstance(error, openai.APIConnectionError):
            kept = " The conversation is kept; send again once the engine is back."
            return GenerationError(
                f"Cannot reach the engine at {self.endpoint}: is it running?"
                + (kept if conversation else "")
            )
        if isinstance(error, openai.NotFoundError):
            return GenerationError(
                f"The engine at {self.endpoint} does not serve the model "
                f"'{model or self.info.model}' (pick another in the model list, or restart the "
                f"demo with --served-model)."
            )
        if isinstance(error, openai.APIStatusError):
            detail = error.message or str(error)
            return GenerationError(
                f"The engine refused the request ({error.status_code}): {detail}"
            )
        return GenerationError(f"The engine failed: {error}")

    def stream(
        self,
        conversation: Conversation,
        settings: GenerationSettings,
        *,
        model: str | None = None,
        chat: str | None = None,  # the engine keeps its own prefix cache
    ) -> TextStream:
        conversation.check()
        settings.check()
        name = self.check_model(model)
        if self.describe_served(name).thinking_mode:
            conversation = apply_thinking_mode(conversation, DEFAULT_SYSTEM_PROMPT)
        messages = openai_messages(conversation, settings, self.engine)
        request = RemoteRequest(
            self,
            {
                "model": name,
                "messages": messages,
                "stream": True,
                "max_tokens": settings.max_new_tokens,
                "temperature": settings.temperature,
                "top_p": settings.top_p,
                "extra_body": engine_options(conversation, settings, self.engine),
            },
        )
        return TextStream.of(request.pieces, request.cancel)


class RemoteRequest:
    """One streaming chat-completions request: a worker thread reads the HTTP stream into a
    queue; the consumer reads the queue. Closing the HTTP stream is how the engine learns that
    the client left, and so stops generating."""

    def __init__(self, backend: OpenAIBackend, body: dict):
        self.backend, self.body = backend, body
        self.queue: queue.Queue = queue.Queue()
        self.stop_requested = threading.Event()  # the user pressed Stop
        self.closing = threading.Event()  # the HTTP stream is being closed (Stop, or left)
        self.opened = threading.Event()  # the engine has answered (its headers arrived)
        self.response = None
        self.failure: Exception | None = None
        self.chunks = 0
        self.thinking = False  # a <think> was put in the text and is not closed yet
        self.first_at: float | None = None
        self.started = time.perf_counter()
        self.worker = threading.Thread(target=self.read, name="internvl-remote", daemon=True)

    def cancel(self) -> None:
        self.stop_requested.set()
        self.close_http()

    def close_http(self) -> None:
        self.closing.set()
        if self.response is not None:
            self.response.close()  # the engine sees the client go and stops generating

    def read(self) -> None:
        """Worker: open the stream and pass its text on until it ends or is closed."""
        try:
            self.response = self.backend.client.chat.completions.create(**self.body)
            self.opened.set()
            if self.closing.is_set():  # stopped while the engine had not answered yet
                self.response.close()
            for chunk in self.response:
                if chunk.choices:
                    self.take(chunk.choices[0].delta)
        except Exception as error:
            if not self.closing.is_set():  # reading a stream we closed fails: that is no error
                self.failure = error
        finally:
            if self.thinking:  # ended (or stopped) while thinking
                self.queue.put(THINK_CLOSE)
            self.queue.put(END)

    def take(self, delta) -> None:
        """Pass one delta's text on: thinking sent apart goes inline, between <think> (at its
        first piece) and </think> (at the first piece of the answer after it)."""
        reasoning, text = reasoning_text(delta), delta.content
        if reasoning or text:
            self.chunks += 1
            self.first_at = self.first_at or time.perf_counter()
        if reasoning:
            if not self.thinking:
                self.queue.put(THINK_OPEN)
                self.thinking = True
            self.queue.put(reasoning)
        if text:
            if self.thinking:
                self.queue.put(THINK_CLOSE)
                self.thinking = False
            self.queue.put(text)

    def pieces(self, finish):
        """The answer's text increments; `finish(stats)` when it ends, however it ends."""
        self.worker.start()
        try:
            for piece in drain(self.queue):
                if self.closing.is_set() and not self.opened.is_set():
                    break  # stopped before the engine answered: no need to wait for it
                yield piece
        finally:
            self.close_http()
            # Once the engine has answered, closing the stream ends the reader at once. Before
            # that, a blocked request cannot be interrupted from here: the reader closes it
            # itself the moment the engine answers, and Stop does not wait for that.
            if self.opened.is_set():
                self.worker.join()
            first = self.first_at
            # Engines stream about one token per chunk; the count is of chunks.
            finish(
                GenerationStats(
                    new_tokens=self.chunks,
                    prompt_tokens=0,
                    time_to_first_token_s=None if first is None else first - self.started,
                    total_s=time.perf_counter() - self.started,
                    stopped=self.stop_requested.is_set(),
                )
            )
        if self.failure is not None:
            raise self.backend.explain(self.failure, model=self.body["model"])
