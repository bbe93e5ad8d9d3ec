"""The chat panel every tab shares: chatbot, question box, Stop that stops, Regenerate, Undo,
Clear, export, and a like or dislike on every answer.

A tab describes itself in one ChatTab (how a new question is collected from its media inputs,
what Clear empties, what is redrawn as an answer streams); everything else lives here once.
Streaming itself (interface.streaming) does not depend on Gradio.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import gradio as gr

from interface.conversation import (
    FEEDBACK,
    assistant_turn,
    chat_view,
    feedback_marks,
    media_missing,
    to_chatbot,
    to_conversation,
    to_turn,
    with_earlier_answers,
    with_feedback,
)
from interface.export import write_exports
from interface.failures import failure, refusals
from interface.i18n import localized, translate
from interface.queueing import (
    MODEL_LOADS,
    MODEL_QUEUE,
    ResultReader,
    check_client_jobs,
    client_limit_validator,
)
from interface.rendering import LATEX_DELIMITERS
from interface.settings import SettingsControls, make_settings, settings_record
from interface.streaming import ACTIVE_STREAMS, asked_to_think, stream_answer
from interface.tab_helpers import ADD_A_DOCUMENT, ADD_A_VIDEO, ADD_AN_IMAGE
from model_backend.base import MAX_QUESTION_CHARS, Backend, TextStream, check_length
from model_backend.errors import InputError, ModelLoadError
from model_backend.media import check_turn
from model_backend.styles import normalize_style

if TYPE_CHECKING:
    from interface.preferences import PreferenceStore

INPUT_QUEUE, INPUT_CONCURRENCY = "input", 4  # checking a new turn's images and video
EXTRAS_INTERVAL_S = 0.25  # extra outputs (grounding drawings) while it streams: 4 a second
HIDDEN = {"api_visibility": "private"}  # the UI's own events are not API endpoints
FEEDBACK_OPTIONS = ("Like", "Dislike")  # Gradio draws these two as thumbs
NOT_A_PAIR = (
    "Your choice is marked, but not kept as a preference pair: this conversation was restored "
    "from the browser's history, so its earlier answers or its images and videos are not the "
    "ones the model had here."
)


def no_extras(turns: list[dict]) -> tuple:
    return ()


@dataclass(frozen=True)
class ChatTab:
    """What a tab tells the shared chat panel about itself.

    `collect_turn(message, turns, *media values)` builds the new user turn dict from the
    question box's value and the values of `media_inputs`, or raises InputError. Clear sets
    the components of `cleared` to their values. `extra_outputs` are set to
    `render_extra(turns)` (one value each) a few times a second while an answer streams and
    once when it ends (the grounding tab's drawn boxes, table and file).
    """

    name: str  # also the prefix of the panel's elem_ids
    collect_turn: Callable[..., dict]
    placeholder: str
    file_types: tuple[str, ...] = ("image",)
    file_count: str = "single"
    media_inputs: tuple = ()
    cleared: Mapping = field(default_factory=dict)
    extra_outputs: tuple = ()
    render_extra: Callable[[list[dict]], tuple] = no_extras


def missing_file(tab: ChatTab) -> str:
    """What the tab says to a new question without its file (tab_helpers.new_images, and
    video_chat.collect_video_turn): the same for Regenerate on a restored question."""
    if "image" in tab.file_types:
        return ADD_AN_IMAGE
    if ".pdf" in tab.file_types:
        return ADD_A_DOCUMENT
    return ADD_A_VIDEO


def typed(turn: dict) -> str:
    """What the user typed for a turn (a tab may have sent a longer prompt built from it)."""
    return turn.get("typed", turn["text"])


def without_previous(question: dict) -> dict:
    """A question without the answer it had before Regenerate."""
    return {key: value for key, value in question.items() if key != "previous_answer"}


class ChatPanel:
    """Chatbot, question box and buttons of one tab, wired to the backend.

    `model` holds the browser session's model (see interface.layout); every answer and export
    of this panel uses it. With `feedback`, a like that prefers one of two answers to the same
    question (see Regenerate) is kept there as a preference pair.
    """

    def __init__(
        self,
        backend: Backend,
        tab: ChatTab,
        model: gr.State | None = None,
        concurrency_limit: int = 1,
        feedback: PreferenceStore | None = None,
    ):
        self.backend = backend
        self.tab = tab
        self.name = tab.name
        self.model = model if model is not None else gr.State(backend.info.model)
        self.concurrency_limit = concurrency_limit
        self.feedback = feedback
        self.state = gr.State([])
        self.chatbot = gr.Chatbot(
            elem_id=f"{tab.name}-chatbot",
            label=localized("Conversation"),
            height=520,
            latex_delimiters=LATEX_DELIMITERS,
            buttons=["copy", "copy_all"],
            placeholder=tab.placeholder,
            feedback_options=FEEDBACK_OPTIONS,
            # Each message a bubble of its own, so that an earlier answer shown above the new
            # one has a like of its own (a bubble has one, whatever it holds).
            group_consecutive_messages=False,
        )
        self.textbox = gr.MultimodalTextbox(
            elem_id=f"{tab.name}-input",
            placeholder=localized("Ask a question and press Enter"),
            label=localized("Question"),
            file_types=list(tab.file_types),
            file_count=tab.file_count,
            sources=["upload"],
            show_label=False,
            submit_btn=True,  # an arrow: Gradio shows a text here untranslated
        )
        with gr.Row():
            self.stop_btn = gr.Button(
                localized("Stop"), variant="stop", visible=False, elem_id=f"{tab.name}-stop"
            )
            self.regenerate_btn = gr.Button(
                localized("Regenerate"), elem_id=f"{tab.name}-regenerate"
            )
            self.undo_btn = gr.Button(localized("Undo"), elem_id=f"{tab.name}-undo")
            self.clear_btn = gr.Button(localized("Clear"), elem_id=f"{tab.name}-clear")
        with gr.Row():
            self.export_btn = gr.Button(
                localized("Export chat"), size="sm", elem_id=f"{tab.name}-export"
            )
            self.export_json = gr.DownloadButton(
                localized("Download chat (JSON)"),
                visible=False,
                size="sm",
                elem_id=f"{tab.name}-export-json",
            )
            self.export_md = gr.DownloadButton(
                localized("Download chat (Markdown)"),
                visible=False,
                size="sm",
                elem_id=f"{tab.name}-export-md",
            )

    # -- updates by name ------------------------------------------------------------------------

    @property
    def busy_outputs(self) -> list:
        return [
            self.textbox,
            self.stop_btn,
            self.regenerate_btn,
            self.undo_btn,
            self.clear_btn,
            self.chatbot,
        ]

    def busy(self, is_busy: bool) -> dict:
        """While the model runs only Stop is usable (no likes either: the answer streaming
        in would overwrite them)."""
        buttons = (self.regenerate_btn, self.undo_btn, self.clear_btn)
        return {
            self.textbox: gr.MultimodalTextbox(interactive=not is_busy),
            self.stop_btn: gr.Button(visible=is_busy),
            **{button: gr.Button(interactive=not is_busy) for button in buttons},
            self.chatbot: gr.Chatbot(feedback_options=() if is_busy else FEEDBACK_OPTIONS),
        }

    @property
    def downloads(self) -> list:
        return [self.export_json, self.export_md]

    def no_downloads(self) -> dict:
        """Hide the download buttons: the conversation has changed since its export."""
        return {button: gr.DownloadButton(visible=False) for button in self.downloads}

    def shown(self, turns: list[dict]) -> dict:
        """The conversation, in the state and in the chatbot, with each answer's like or
        dislike (the chatbot keeps its marks by position: they are sent with every change)."""
        messages, owners = chat_view(turns)
        # An update dict, not a gr.Chatbot(...): building a component takes milliseconds, and
        # this runs on every update of a streaming answer.
        chatbot = gr.update(value=messages, feedback_value=feedback_marks(turns, owners))
        return {self.state: turns, self.chatbot: chatbot}

    def question(self, value: dict | None) -> dict:
        """The question box's new value (None empties it)."""
        return {self.textbox: gr.MultimodalTextbox(value=value)}

    def extras(self, turns: list[dict]) -> dict:
        return dict(zip(self.tab.extra_outputs, self.tab.render_extra(turns), strict=True))

    # -- wiring ---------------------------------------------------------------------------------

    def wire(self, settings: SettingsControls) -> None:
        """Connect the events."""
        # Steps that may refuse the request go through the queue: only there does a gr.Error
        # reach the page as a readable message (outside it, it is a bare HTTP 500).
        # A new turn's media are checked (a video decoded) here: a few at a time, so that a
        # crowd of slow uploads waits in the queue instead of holding server threads.
        checked = {
            "concurrency_id": INPUT_QUEUE,
            "concurrency_limit": INPUT_CONCURRENCY,
            "show_progress": "hidden",
            **HIDDEN,
        }
        conversation = [self.state, self.chatbot]
        submitted = self.textbox.submit(
            self.add_turn,
            [self.textbox, self.state, *settings.style(), *self.tab.media_inputs],
            [*conversation, self.textbox],
            **checked,
        )
        self._generate_after(submitted, settings)

        for trigger in (self.regenerate_btn.click, self.chatbot.retry):
            retried = trigger(
                self.drop_answer, [self.state, *settings.style()], conversation, **checked
            )
            self._generate_after(retried, settings)

        for trigger in (self.undo_btn.click, self.chatbot.undo):
            trigger(
                self.undo,
                [self.state],
                [*conversation, self.textbox, *self.downloads],
                queue=False,
                **HIDDEN,
            )

        for trigger in (self.clear_btn.click, self.chatbot.clear):
            trigger(
                self.clear,
                None,
                [*conversation, self.textbox, *self.downloads, *self.tab.cleared],
                queue=False,
                **HIDDEN,
            )

        self.chatbot.like(
            self.like,
            [self.state, self.model, *settings.generation()],
            [*conversation, *self.downloads, *self.tab.extra_outputs],
            show_progress="hidden",
            **HIDDEN,
        )

        # Written only when asked for: a conversation with large images makes large files.
        self.export_btn.click(
            self.exports,
            [self.state, self.model, *settings.generation()],
            self.downloads,
            **HIDDEN,
        )

        # No `cancels=`: that would drop the handler's last update (the answer so far and its
        # figures); ACTIVE_STREAMS stops the model and the handler finishes normally.
        self.stop_btn.click(self.stop, None, None, queue=False, **HIDDEN)

    def _generate_after(self, event, settings: SettingsControls) -> None:
        running = event.success(
            lambda: {**self.busy(True), **self.no_downloads()},
            None,
            [*self.busy_outputs, *self.downloads],
            queue=False,
            **HIDDEN,
        )
        start = running.then
        if len(self.backend.models) > 1:
            # The session's model may have been unloaded to make room for another session's:
            # it is loaded again here, not in the model queue, where everyone would wait.
            loading = running.then(
                self.load_model,
                [self.state, self.model],
                [self.state, self.chatbot, self.textbox],
                concurrency_id=MODEL_LOADS,
                concurrency_limit=1,
                show_progress="minimal",
                **HIDDEN,
            )
            start = loading.success
        inputs = [self.state, self.model, *settings.generation()]
        generation = start(
            self.respond,
            inputs,
            [self.state, self.chatbot, self.textbox, *self.tab.extra_outputs],
            concurrency_id=MODEL_QUEUE,
            concurrency_limit=self.concurrency_limit,
            show_progress="minimal",
            validator=client_limit_validator(len(inputs)),
            **HIDDEN,
        )
        generation.then(lambda: self.busy(False), None, self.busy_outputs, queue=False, **HIDDEN)
        if self.tab.extra_outputs:  # the final extras, outside the model's concurrency slot
            generation.then(
                self.extras, self.state, list(self.tab.extra_outputs), queue=False, **HIDDEN
            )

    # -- handlers -------------------------------------------------------------------------------

    def key(self, request: gr.Request | None) -> str:
        """The conversation's id: the browser session and the tab."""
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
    ) -> dict:
        """Append the user's turn (checked) and empty the question box.

        (`request` comes first: Gradio cannot pass it after a *args parameter.)
        """
        ACTIVE_STREAMS.new_request(self.key(request))
        message = message or {"text": "", "files": []}
        with refusals():
            check_length(message.get("text") or "", MAX_QUESTION_CHARS, "question")
            check_client_jobs(request)
            turn = self.tab.collect_turn(message, turns, *media_values)
            turn.update(reasoning=bool(reasoning), answer_style=normalize_style(answer_style))
            check_turn(to_turn(turn))  # a video is decoded once here, and cached
        turns = [*turns, turn]
        return {**self.shown(turns), **self.question(None)}

    def drop_answer(
        self, turns: list[dict], reasoning: bool, answer_style: str, request: gr.Request
    ) -> dict:
        """Regenerate: ask the question again with today's style. The last answer is kept
        with the question (shown, not sent) and becomes an alternative to the new one."""
        ACTIVE_STREAMS.new_request(self.key(request))
        if not turns or turns[-1]["role"] != "assistant":
            no_answer = translate("There is no answer to regenerate yet.")
            raise gr.Error(no_answer, print_exception=False)
        with refusals():
            check_client_jobs(request)
        if turns[-2].get("restored") and media_missing(turns):  # the model would not see them
            raise gr.Error(translate(missing_file(self.tab)), print_exception=False)
        question = {**turns[-2], "reasoning": bool(reasoning), "previous_answer": turns[-1]}
        question["answer_style"] = normalize_style(answer_style)
        return self.shown([*turns[:-2], question])

    def give_back(self, turns: list[dict]) -> dict:
        """A question that gets no answer: after Regenerate the answer it had comes back;
        otherwise the question leaves the chat and goes back into the box, to edit."""
        question = turns[-1]
        if question.get("previous_answer"):
            answered = [without_previous(question), question["previous_answer"]]
            return self.shown([*turns[:-1], *answered])
        # (The chatbot keeps its marks: no answer moves when the last question goes.)
        kept = {self.state: turns[:-1], self.chatbot: to_chatbot(turns[:-1])}
        return {**kept, **self.question({"text": typed(question)})}

    def like(
        self, like: gr.LikeData, turns: list[dict], model: str, system_prompt: str, *values
    ) -> dict:
        """A like, a dislike or either taken back (Gradio's toggle) on the answer the message
        belongs to. A like on one of two answers to the same question makes it the answer in
        use, and is kept as a preference pair when the demo keeps them."""
        _, owners = chat_view(turns)
        index = like.index if isinstance(like.index, int) else like.index[0]
        owner = owners[index] if 0 <= index < len(owners) else None
        if owner is None or turns[owner[0]]["role"] != "assistant":
            return self.shown(turns)  # a question, or an answer on its way: nothing to mark
        turns, pair = with_feedback(turns, *owner, FEEDBACK.get(like.liked))
        before = turns[: owner[0]]
        if pair and self.feedback is not None:
            # Text from the browser's storage, or a question whose media are gone: no pair.
            if any(answer.get("restored") for answer in pair) or media_missing(before):
                gr.Info(translate(NOT_A_PAIR))
            else:
                self.keep_pair(before, *pair, model, settings_record(system_prompt, *values))
        return {**self.shown(turns), **self.no_downloads(), **self.extras(turns)}

    def keep_pair(
        self, before: list[dict], chosen: dict, rejected: dict, model: str, settings: dict
    ) -> None:
        """Write one preference pair: the question (the last turn of `before`) with every image
        and the video the model had seen by then, and the questions before it."""
        question = before[-1]
        earlier = [turn["text"] for turn in before[:-1] if turn["role"] == "user"]
        if earlier:  # a follow-up: the question alone lacks its context (as Compare keeps it)
            settings = {**settings, "earlier_questions": earlier}
        media = [path for turn in before for path in turn.get("images") or ()]
        video = next((t["video"] for t in reversed(before) if t.get("video")), None)
        if video:  # sampled as the model saw it
            media.append(video["path"])
            settings = {**settings, **{k: video[k] for k in ("num_frames", "start", "end")}}
        try:
            self.feedback.add_pair(
                media=media,
                question=question["text"],  # the prompt the model answered (grounding builds one)
                chosen=chosen["text"],
                rejected=rejected["text"],
                chosen_model=chosen.get("model") or model,
                rejected_model=rejected.get("model") or model,
                settings=settings,
                source="like",
            )
        except InputError as error:  # e.g. both answers the same: the choice stands
            gr.Warning(translate(str(error)))

    def undo(self, turns: list[dict]) -> dict:
        """Remove the last question and its answer; the question goes back into the box."""
        if turns and turns[-1]["role"] == "assistant":
            turns = turns[:-1]
        if not turns:
            return {**self.shown([]), **self.no_downloads()}
        question = self.question({"text": typed(turns[-1])})
        return {**self.shown(turns[:-1]), **question, **self.no_downloads()}

    def clear(self, request: gr.Request) -> dict:
        """An empty conversation; the backend forgets what it kept for this one."""
        self.backend.clear_cache(chat=self.key(request))
        return {**self.shown([]), **self.question(None), **self.no_downloads(), **self.tab.cleared}

    def stop(self, request: gr.Request) -> None:
        ACTIVE_STREAMS.stop(self.key(request))

    def exports(self, turns: list[dict], model: str, system_prompt: str, *values: float):
        """The download buttons, pointing at the conversation's JSON and Markdown files."""
        settings = settings_record(system_prompt, *values)
        with refusals():
            files = write_exports(turns, model, settings)
        if files is None:
            gr.Info(translate("There is nothing to export yet: ask a question first."))
            return self.no_downloads()
        return {
            button: gr.DownloadButton(value=path, visible=True)
            for button, path in zip(self.downloads, files, strict=True)
        }

    def load_model(self, turns: list[dict], model: str) -> dict:
        """Make the session's model ready before its answer queues; if it cannot be loaded
        any more, say so and give the question back (the conversation is kept)."""
        try:
            self.backend.ensure_model(model)
        except (InputError, ModelLoadError) as error:
            gr.Warning(str(error))
            if turns and turns[-1]["role"] == "user":
                return self.give_back(turns)
        return {self.state: gr.skip()}

    def respond(
        self, request: gr.Request, turns: list[dict], model: str, system_prompt: str, *values
    ):
        """Stream the answer into the chat; on failure keep the conversation and explain.

        (`values` are the settings in SETTING_NAMES order; `request` comes first because Gradio
        cannot pass it after a *args parameter.)
        """
        if not turns or turns[-1]["role"] != "user":
            return
        # After Regenerate the question brings the answers it had: kept, never sent.
        previous = turns[-1].get("previous_answer")
        asked = [*turns[:-1], without_previous(turns[-1])]
        key = self.key(request)
        started: list[TextStream] = []

        def register(stream: TextStream) -> None:
            started.append(stream)
            ACTIVE_STREAMS.add(key, stream)

        reader = ResultReader(request)
        try:
            thinking_mode = asked_to_think(self.backend, model, asked[-1].get("reasoning"))
            steps = stream_answer(
                self.backend,
                to_conversation(asked, system_prompt),
                make_settings(*values),
                model=model,
                chat=key,
                on_start=register,
                on_notice=gr.Warning,
                concurrency_limit=self.concurrency_limit,
            )
            extras_at = 0.0
            with contextlib.closing(steps):  # an error below stops the model at once
                for text, stats, seconds in steps:
                    reader.check()
                    figures = stats.summary() if stats else None
                    answer = assistant_turn(text, figures, model, seconds, thinking_mode)
                    shown = [*asked, with_earlier_answers(answer, previous)]
                    updates = self.shown(shown)
                    # Extras (the grounding drawing) a few times a second while the model
                    # holds its slot; the last one is drawn after it (see _generate_after).
                    if time.monotonic() - extras_at >= EXTRAS_INTERVAL_S:
                        updates.update(self.extras(shown))
                        extras_at = time.monotonic()
                    yield updates
        except Exception as error:
            shown_error = failure(error)  # logs an unexpected one while it is being handled
            # Keep everything before the failed question; give the question back to edit.
            given_back = self.give_back(turns)
            yield {**given_back, **self.extras(given_back[self.state])}
            raise shown_error from None
        finally:
            for stream in started:
                ACTIVE_STREAMS.remove(key, stream)
