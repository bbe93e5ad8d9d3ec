"""Chat controls shared by every tab: the chat panel, streaming, and a Stop that stops.

A tab supplies how a new user turn is collected from its media inputs; everything else, from
the chatbot to Regenerate/Undo/Clear and the Stop that really stops the model, lives here once.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator

import gradio as gr

from interface.conversation import assistant_turn, to_chatbot, to_clip, to_conversation
from interface.export import write_exports
from interface.queueing import (
    MODEL_QUEUE,
    ResultReader,
    check_client_jobs,
    client_limit_validator,
)
from interface.rendering import LATEX_DELIMITERS
from interface.settings import SettingsControls, make_settings, settings_record
from model_backend.base import (
    KEEPALIVE_S,
    MAX_QUESTION_CHARS,
    Backend,
    Conversation,
    GenerationSettings,
    GenerationStats,
    TextStream,
    cancellable,
    check_length,
)
from model_backend.errors import GenerationError, InputError
from model_backend.media import check_image, sample_video
from model_backend.styles import normalize_style

log = logging.getLogger(__name__)

INPUT_QUEUE, INPUT_CONCURRENCY = "input", 4  # checking a new turn's images and video
UPDATE_INTERVAL_S = 0.05  # at most 20 screen updates a second while an answer streams
EXTRAS_INTERVAL_S = 0.25  # extra outputs (grounding drawings) while it streams: 4 a second
PREPARE_THREAD = "internvl-prepare"


class ActiveStreams:
    """The running generation of each browser session and tab, so Stop can end it.

    Stop tells the model to stop (the stream then ends by itself and the answer keeps what was
    written, marked "stopped"). A Stop that arrives while the request still waits in the queue
    is remembered and applied the moment its generation starts.
    """

    def __init__(self) -> None:
        self._streams: dict[str, TextStream] = {}
        self._stop_requested: set[str] = set()
        self._lock = threading.Lock()

    def add(self, key: str, stream: TextStream) -> None:
        with self._lock:
            self._streams[key] = stream
            stop_now = key in self._stop_requested
            self._stop_requested.discard(key)
        if stop_now:
            stream.cancel()

    def remove(self, key: str, stream: TextStream) -> None:
        with self._lock:
            if self._streams.get(key) is stream:
                del self._streams[key]

    def new_request(self, key: str) -> None:
        """Forget a Stop that came too late for the previous request."""
        with self._lock:
            self._stop_requested.discard(key)

    def stop(self, key: str) -> None:
        with self._lock:
            stream = self._streams.get(key)
            if stream is None:
                self._stop_requested.add(key)
        if stream is not None:
            stream.cancel()


ACTIVE_STREAMS = ActiveStreams()


# ---------------------------------------------------------------------------------------------
# Preparing an answer (images decoded and tiled, prompt built) off the request's own thread


_PREPARING: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_PREPARING_LOCK = threading.Lock()


def preparing_slots(backend: Backend, limit: int) -> threading.BoundedSemaphore:
    """How many answers the backend may be preparing at once (the model queue's concurrency).

    Gradio frees a cancelled job's place in the queue at once, while the step it was running
    carries on in its thread; a slot stays taken until that thread has really ended, so
    cancelled requests cannot pile up working threads.
    """
    with _PREPARING_LOCK:
        if backend not in _PREPARING:
            _PREPARING[backend] = threading.BoundedSemaphore(limit)
        return _PREPARING[backend]


class Preparation:
    """`start()` (which returns the answer's stream) run in a worker thread holding a slot.

    `cancel()` asks the worker to stop (see model_backend.base.raise_if_cancelled) and closes
    the stream if it has been made, or as soon as it is.
    """

    def __init__(self, start: Callable[[], TextStream], slots: threading.BoundedSemaphore):
        self._start = start
        self._slots = slots
        self._cancelled = threading.Event()
        self._lock = threading.Lock()  # hands the outcome over to exactly one owner
        self._outcome: TextStream | BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=PREPARE_THREAD, daemon=True)

    def _run(self) -> None:
        try:
            with cancellable(self._cancelled):
                outcome = self._start()
        except BaseException as error:  # re-raised in the request's thread
            outcome = error
        finally:
            self._slots.release()
        with self._lock:
            self._outcome = outcome
            if self._cancelled.is_set() and isinstance(outcome, TextStream):
                outcome.close()

    def cancel(self) -> None:
        with self._lock:
            self._cancelled.set()
            if isinstance(self._outcome, TextStream):
                self._outcome.close()

    def stream(self) -> TextStream:
        """The stream once the worker has ended; its error if it failed."""
        if isinstance(self._outcome, BaseException):
            raise self._outcome
        return self._outcome


def prepared_stream(
    backend: Backend, start: Callable[[], TextStream], concurrency_limit: int
) -> Iterator[TextStream | None]:
    """Yield None every KEEPALIVE_S while `start()` runs in a worker thread, then its stream.

    The request's own thread stays free to be closed (a cancelled job, a closed page), and
    closing this generator cancels the preparation.
    """
    # Before any work: Gradio can close a job's generator (when the job is cancelled) only
    # once it has had a first output.
    yield None
    slots = preparing_slots(backend, concurrency_limit)
    while not slots.acquire(timeout=KEEPALIVE_S):
        yield None
    preparation = Preparation(start, slots)
    preparation.thread.start()
    finished = False
    try:
        while preparation.thread.is_alive():
            preparation.thread.join(KEEPALIVE_S)
            if preparation.thread.is_alive():
                yield None
        finished = True
    finally:
        if not finished:
            preparation.cancel()
    yield preparation.stream()


def stream_answer(
    backend: Backend,
    conversation: Conversation,
    settings: GenerationSettings,
    on_start: Callable[[TextStream], None] = lambda stream: None,
    on_notice: Callable[[str], object] = lambda notice: None,
    concurrency_limit: int = 1,
    check_images: bool = False,
) -> Iterator[tuple[str, GenerationStats | None]]:
    """Yield (answer so far, None) while streaming, then (answer, stats) once at the end;
    ("", None) while the answer is being prepared.

    `check_images`: check the conversation's images first (API requests; the UI checks an
    image when it is added). Closing this generator (Stop, a cancelled API job, a closed page)
    stops the model, or the preparation.
    """

    def start() -> TextStream:
        if check_images:
            for path in conversation.image_paths:
                check_image(path)
        return backend.stream(conversation, settings)

    stream = None
    with contextlib.closing(prepared_stream(backend, start, concurrency_limit)) as preparing:
        for stream in preparing:
            if stream is None:
                yield "", None
    on_start(stream)
    for notice in stream.notices:
        on_notice(notice)
    text, shown_at = "", 0.0
    try:
        for piece in stream:
            text += piece
            now = time.perf_counter()
            # A keep-alive ("") is always passed on (it lets Stop in); text at most every
            # UPDATE_INTERVAL_S, so a fast model does not flood the browser with updates.
            if not piece or now - shown_at >= UPDATE_INTERVAL_S:
                shown_at = now
                yield text, None
    finally:
        stream.close()
    yield text, stream.stats


def typed(turn: dict) -> str:
    """What the user typed for a turn (a tab may have sent a longer prompt built from it)."""
    return turn.get("typed", turn["text"])


def user_message(error: Exception) -> str:
    """What to tell the user about a failed request."""
    if isinstance(error, InputError | GenerationError):
        return str(error)
    return f"Generation failed ({type(error).__name__}: {error}). The conversation is kept."


# ---------------------------------------------------------------------------------------------
# The chat panel


class ChatPanel:
    """Chatbot, textbox and buttons of one tab, wired to the backend.

    `collect_turn(message, turns, *media_values)` builds the new user turn dict from the
    textbox value and the tab's media inputs, or raises InputError; the panel then records
    how the question is asked (reasoning, answer style) and checks its images.
    """

    def __init__(
        self,
        backend: Backend,
        name: str,
        collect_turn: Callable[..., dict],
        placeholder: str,
        file_types: list[str] | None = None,
        file_count: str = "single",
        concurrency_limit: int = 1,
    ):
        self.backend = backend
        self.name = name
        self.extra_outputs: list = []
        self.render_extra: Callable[[list[dict]], tuple] = lambda turns: ()
        self.collect_turn = collect_turn
        self.concurrency_limit = concurrency_limit
        self.state = gr.State([])
        self.chatbot = gr.Chatbot(
            elem_id=f"{name}-chatbot",
            label="Conversation",
            height=520,
            latex_delimiters=LATEX_DELIMITERS,
            buttons=["copy", "copy_all"],
            placeholder=placeholder,
            feedback_options=None,
        )
        self.textbox = gr.MultimodalTextbox(
            elem_id=f"{name}-input",
            placeholder="Ask a question and press Enter",
            label="Question",
            file_types=file_types or ["image"],
            file_count=file_count,
            sources=["upload"],
            show_label=False,
            submit_btn="Send",
        )
        with gr.Row():
            self.stop_btn = gr.Button("Stop", variant="stop", visible=False, elem_id=f"{name}-stop")
            self.regenerate_btn = gr.Button("Regenerate", elem_id=f"{name}-regenerate")
            self.undo_btn = gr.Button("Undo", elem_id=f"{name}-undo")
            self.clear_btn = gr.Button("Clear", elem_id=f"{name}-clear")
        with gr.Row():
            self.export_btn = gr.Button("Export chat", size="sm", elem_id=f"{name}-export")
            self.export_json = gr.DownloadButton(
                "Download chat (JSON)", visible=False, size="sm", elem_id=f"{name}-export-json"
            )
            self.export_md = gr.DownloadButton(
                "Download chat (Markdown)", visible=False, size="sm", elem_id=f"{name}-export-md"
            )

    # -- wiring ---------------------------------------------------------------------------------

    @property
    def busy_outputs(self) -> list:
        return [self.textbox, self.stop_btn, self.regenerate_btn, self.undo_btn, self.clear_btn]

    @staticmethod
    def busy(is_busy: bool) -> tuple:
        """Updates for busy_outputs: while the model runs only Stop is usable."""
        return (
            gr.MultimodalTextbox(interactive=not is_busy),
            gr.Button(visible=is_busy),
            *(gr.Button(interactive=not is_busy) for _ in range(3)),
        )

    @property
    def downloads(self) -> list:
        return [self.export_json, self.export_md]

    @staticmethod
    def no_downloads() -> tuple:
        """Hide the download buttons: the conversation has changed since its export."""
        return gr.DownloadButton(visible=False), gr.DownloadButton(visible=False)

    def wire(
        self,
        settings: SettingsControls,
        media_inputs: list,
        media_outputs: list,
        clear_media: Callable[[], tuple],
        extra_outputs: list | None = None,
        render_extra: Callable[[list[dict]], tuple] | None = None,
    ) -> None:
        """Connect the events. `media_outputs` get `clear_media()` on Clear.

        `extra_outputs` are refreshed with `render_extra(turns)` a few times a second while an
        answer streams and once when it ends (the grounding tab's drawn boxes, table, file).
        """
        if extra_outputs:
            self.extra_outputs = list(extra_outputs)
            self.render_extra = render_extra
        hidden = {"api_visibility": "private"}
        # Steps that may refuse the request go through the queue: only there does a gr.Error
        # reach the page as a readable message (outside it, it is a bare HTTP 500).
        # A new turn's media are checked (a video decoded) here: a few at a time, so that a
        # crowd of slow uploads waits in the queue instead of holding server threads.
        checked = {
            "concurrency_id": INPUT_QUEUE,
            "concurrency_limit": INPUT_CONCURRENCY,
            "show_progress": "hidden",
            **hidden,
        }
        submitted = self.textbox.submit(
            self.add_turn,
            [self.textbox, self.state, *settings.style(), *media_inputs],
            [self.state, self.chatbot, self.textbox],
            **checked,
        )
        self._generate_after(submitted, settings)

        for trigger in (self.regenerate_btn.click, self.chatbot.retry):
            retried = trigger(
                self.drop_answer,
                [self.state, *settings.style()],
                [self.state, self.chatbot],
                **checked,
            )
            self._generate_after(retried, settings)

        for trigger in (self.undo_btn.click, self.chatbot.undo):
            trigger(
                lambda turns: (*self.undo(turns), *self.no_downloads()),
                [self.state],
                [self.state, self.chatbot, self.textbox, *self.downloads],
                queue=False,
                **hidden,
            )

        def clear():
            self.backend.clear_cache()
            return [], [], None, *self.no_downloads(), *clear_media()

        for trigger in (self.clear_btn.click, self.chatbot.clear):
            trigger(
                clear,
                None,
                [self.state, self.chatbot, self.textbox, *self.downloads, *media_outputs],
                queue=False,
                **hidden,
            )

        # Written only when asked for: a conversation with large images makes large files.
        self.export_btn.click(
            self.exports, [self.state, *settings.generation()], self.downloads, **hidden
        )

        # No `cancels=`: that would drop the handler's last update (the answer so far and its
        # figures); ACTIVE_STREAMS stops the model and the handler finishes normally.
        self.stop_btn.click(self.stop, None, None, queue=False, **hidden)

    def _generate_after(self, event, settings: SettingsControls) -> None:
        hidden = {"api_visibility": "private"}
        running = event.success(
            lambda: (*self.busy(True), *self.no_downloads()),
            None,
            [*self.busy_outputs, *self.downloads],
            queue=False,
            **hidden,
        )
        inputs = [self.state, *settings.generation()]
        generation = running.then(
            self.respond,
            inputs,
            [self.state, self.chatbot, self.textbox, *self.extra_outputs],
            concurrency_id=MODEL_QUEUE,
            concurrency_limit=self.concurrency_limit,
            show_progress="minimal",
            validator=client_limit_validator(len(inputs)),
            **hidden,
        )
        generation.then(lambda: self.busy(False), None, self.busy_outputs, queue=False, **hidden)
        if self.extra_outputs:  # the final extras, outside the model's concurrency slot
            generation.then(
                self.render_extra, self.state, self.extra_outputs, queue=False, **hidden
            )

    def exports(self, turns: list[dict], system_prompt: str, *values: float):
        """The download buttons, pointing at the conversation's JSON and Markdown files."""
        settings = settings_record(system_prompt, *values)
        try:
            files = write_exports(turns, self.backend.info.model, settings)
        except InputError as error:
            raise gr.Error(str(error), print_exception=False) from None
        if files is None:
            gr.Info("There is nothing to export yet: ask a question first.")
            return self.no_downloads()
        return (
            gr.DownloadButton(value=files[0], visible=True),
            gr.DownloadButton(value=files[1], visible=True),
        )

    # -- handlers -------------------------------------------------------------------------------

    def key(self, request: gr.Request | None) -> str:
        session = getattr(request, "session_hash", None) or "no-session"
        return f"{session}/{self.name}"

    def add_turn(
        self,
        request: gr.Request,
        message: dict | None,
        turns: list[dict],
        reasoning: bool,
        answer_style: str,
        *media_values,
    ):
        """Append the user's turn (validated) and clear the textbox.

        (`request` comes first: Gradio cannot pass it after a *args parameter.)
        """
        ACTIVE_STREAMS.new_request(self.key(request))
        message = message or {"text": "", "files": []}
        try:
            check_length(message.get("text") or "", MAX_QUESTION_CHARS, "question")
            check_client_jobs(request)
            turn = self.collect_turn(message, turns, *media_values)
            turn.update(reasoning=bool(reasoning), answer_style=normalize_style(answer_style))
            for path in turn["images"]:
                check_image(path)
            if turn.get("video"):
                sample_video(to_clip(turn["video"]))  # decodes once, cached
        except InputError as error:
            raise gr.Error(str(error), print_exception=False) from None
        turns = [*turns, turn]
        return turns, to_chatbot(turns), gr.MultimodalTextbox(value=None)

    def drop_answer(
        self, turns: list[dict], reasoning: bool, answer_style: str, request: gr.Request
    ):
        """Regenerate: forget the last answer; ask the question again with today's style."""
        ACTIVE_STREAMS.new_request(self.key(request))
        if not turns or turns[-1]["role"] != "assistant":
            raise gr.Error("There is no answer to regenerate yet.", print_exception=False)
        try:
            check_client_jobs(request)
        except InputError as error:
            raise gr.Error(str(error), print_exception=False) from None
        question = {**turns[-2], "reasoning": bool(reasoning)}
        question["answer_style"] = normalize_style(answer_style)
        turns = [*turns[:-2], question]
        return turns, to_chatbot(turns)

    def undo(self, turns: list[dict]):
        """Remove the last question and its answer; the question goes back into the textbox."""
        if turns and turns[-1]["role"] == "assistant":
            turns = turns[:-1]
        if not turns:
            return [], [], gr.MultimodalTextbox()
        question = turns[-1]
        turns = turns[:-1]
        return turns, to_chatbot(turns), gr.MultimodalTextbox(value={"text": typed(question)})

    def stop(self, request: gr.Request) -> None:
        ACTIVE_STREAMS.stop(self.key(request))

    def respond(self, request: gr.Request, turns: list[dict], system_prompt: str, *values: float):
        """Stream the answer into the chat; on failure keep the conversation and explain.

        (`values` are the settings in SETTING_NAMES order; `request` comes first because Gradio
        cannot pass it after a *args parameter.)
        """
        if not turns or turns[-1]["role"] != "user":
            return
        key = self.key(request)
        started: list[TextStream] = []

        def register(stream: TextStream) -> None:
            started.append(stream)
            ACTIVE_STREAMS.add(key, stream)

        reader = ResultReader(request)
        try:
            settings = make_settings(*values)
            conversation = to_conversation(turns, system_prompt)
            steps = stream_answer(
                self.backend,
                conversation,
                settings,
                register,
                on_notice=gr.Warning,
                concurrency_limit=self.concurrency_limit,
            )
            extras_at = 0.0
            with contextlib.closing(steps):  # an error below stops the model at once
                for text, stats in steps:
                    reader.check()
                    answer = assistant_turn(text, stats.summary() if stats else None)
                    shown = [*turns, answer]
                    # Extras (the grounding drawing) a few times a second while the model
                    # holds its slot; the last one is drawn after it (see _generate_after).
                    extras = [gr.skip()] * len(self.extra_outputs)
                    if time.monotonic() - extras_at >= EXTRAS_INTERVAL_S:
                        extras, extras_at = self.render_extra(shown), time.monotonic()
                    yield shown, to_chatbot(shown), gr.skip(), *extras
        except Exception as error:
            if not isinstance(error, InputError | GenerationError):
                log.exception("generation failed")
            # Keep everything before the failed question; give the question back to edit.
            kept, failed = turns[:-1], turns[-1]
            question = gr.MultimodalTextbox(value={"text": typed(failed)})
            yield kept, to_chatbot(kept), question, *self.render_extra(kept)
            raise gr.Error(user_message(error), print_exception=False) from None
        finally:
            for stream in started:
                ACTIVE_STREAMS.remove(key, stream)
