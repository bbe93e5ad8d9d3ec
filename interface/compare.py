"""The Compare tab: one question about the same images or video, two answers side by side (two
models, or one model with and without reasoning), and a vote between them; its `/compare` and
`/compare_vote` API endpoints.

The two sides are two conversations (two turn lists; the media belong to the first question),
each streamed by interface.streaming.stream_answer. A local backend generates one answer at a
time: the right answer then starts as soon as the left one ends. An engine serving several
requests at once streams both together (one thread per side, their updates merged).

A vote acts on the session's latest comparison (a gr.State, which gradio_client keeps per
Client too); with a PreferenceStore, a vote with a winner becomes a preference pair.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import inspect
import queue
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import gradio as gr

from interface.api import (
    API_SETTINGS,
    COMMON_DOCS,
    check_file_types,
    own_system_prompt,
    take_file_types,
    with_notices,
)
from interface.chat import HIDDEN, INPUT_CONCURRENCY, INPUT_QUEUE, typed
from interface.conversation import (
    assistant_turn,
    thinking_and_answer,
    to_chatbot,
    to_conversation,
    to_turn,
    user_turn,
    video_dict,
)
from interface.failures import failure, refusals
from interface.i18n import english, localized, localized_by, translate
from interface.queueing import (
    MODEL_LOADS,
    MODEL_QUEUE,
    ResultReader,
    check_client_jobs,
    client_limit_validator,
)
from interface.rendering import LATEX_DELIMITERS
from interface.settings import SETTING_NAMES, build_settings, make_settings
from interface.streaming import ACTIVE_STREAMS, AnswerStep, asked_to_think, stream_answer
from interface.video_chat import VIDEO_TYPES
from model_backend.base import (
    MAX_FRAMES,
    MAX_QUESTION_CHARS,
    Backend,
    Conversation,
    GenerationSettings,
    GenerationStats,
    TextStream,
    VideoClip,
    check_length,
)
from model_backend.errors import InputError, ModelLoadError
from model_backend.media import check_turn
from model_backend.styles import DEFAULT_STYLE, normalize_style

if TYPE_CHECKING:
    from interface.preferences import PreferenceStore

SIDES = ("left", "right")
VOTES = {
    "left": "Left is better",
    "right": "Right is better",
    "tie": "Tie",
    "both_bad": "Both are bad",
}
COMPARE_THREAD = "internvl-compare"
# The second answer of a sequential comparison, not started because the first was stopped.
NOT_STARTED = GenerationStats(new_tokens=0, prompt_tokens=0, time_to_first_token_s=None,
                              total_s=0.0, stopped=True)  # fmt: skip


def runs_both_at_once(backend: Backend, concurrency_limit: int) -> bool:
    """A local backend generates one answer at a time (one device), whatever the queue's
    concurrency; an engine serving several requests at once takes both answers together."""
    return backend.info.kind != "local" and concurrency_limit > 1


def tab_note(
    backend: Backend, concurrency_limit: int, feedback: PreferenceStore | None, say=english
) -> str:
    """One line: how the two answers run here, and whether votes are kept (`say`: see
    interface.i18n)."""
    if runs_both_at_once(backend, concurrency_limit):
        order = "Both answers stream at the same time."
    else:
        order = (
            "This backend generates one answer at a time: the right answer starts as soon as "
            "the left one ends."
        )
    if feedback is None:
        kept = "Votes are not kept."
    else:
        kept = (
            "Votes with a winner are kept, with the question and its images or video, as "
            "preference pairs for training."
        )
    return f"{say(order)} {say(kept)}"


# -- the comparison's turns ---------------------------------------------------------------------


def question_turn(question: str | None, images, video: str | None, num_frames) -> dict:
    """A question with its images or its video (not both); media are optional."""
    text = (question or "").strip()
    if not text:
        raise InputError("Please type a question.")
    check_length(text, MAX_QUESTION_CHARS, "question")
    images = list(images or [])
    if images and video:
        raise InputError("Compare on images or on a video, not both: remove one of them.")
    clip = None
    if video:
        clip = video_dict(video, num_frames, None, None, VideoClip.tiles_per_frame)
    return user_turn(text, images, clip)


def side_turn(turn: dict, reasoning: bool, answer_style: str | None) -> dict:
    """One side's copy of the question, with that side's reasoning switch."""
    return {
        **copy.deepcopy(turn),
        "reasoning": bool(reasoning),
        "answer_style": normalize_style(answer_style),
    }


def media_of(turns: list[dict]) -> list[str]:
    """The comparison's media files (its first question's images, or its video)."""
    first = turns[0]
    return [*first["images"], *([first["video"]["path"]] if first.get("video") else [])]


def side_system_prompt(
    backend: Backend, given: str, default_model: str | None, model: str | None
) -> str:
    """A prompt left at the default model's own becomes the side's model's own (their
    templates may differ); one the user wrote stays."""
    if given == own_system_prompt(backend, default_model):
        return own_system_prompt(backend, model)
    return given


# -- streaming both answers ---------------------------------------------------------------------


@dataclass
class SideAnswer:
    """One side's answer as it streams."""

    model: str
    system_prompt: str
    thinking_mode: bool = False  # asked to think (interface.streaming.asked_to_think)
    text: str = ""
    stats: GenerationStats | None = None
    thinking_seconds: float | None = None
    notices: list[str] = field(default_factory=list)

    def turn(self) -> dict:
        figures = self.stats.summary() if self.stats else None
        return assistant_turn(
            self.text, figures, self.model, self.thinking_seconds, self.thinking_mode
        )

    def api_texts(self) -> tuple[str, str]:
        """The answer alone (notices first) and the thinking so far ("" when none)."""
        final = self.stats is not None
        thinking, answer = thinking_and_answer(self.text, self.thinking_mode, final)
        return with_notices(answer, self.notices), thinking

    def figures(self) -> str:
        return self.stats.summary() if self.stats else ""


def one_after_the_other(steps: list[Iterator]) -> Iterator[tuple[int, AnswerStep]]:
    """(side, its answer's step) of the left answer, then of the right one; a right answer
    is not started once the left was stopped (Stop stops both)."""
    for index, side in enumerate(steps):
        step = None
        with contextlib.closing(side):
            for step in side:
                yield index, step
        if index == 0 and step is not None and step.stats is not None and step.stats.stopped:
            steps[1].close()
            yield 1, AnswerStep("", NOT_STARTED, None)
            return


def at_the_same_time(steps: list[Iterator]) -> Iterator[tuple[int, AnswerStep]]:
    """The same, both answers at once: each side is read in a thread of its own, their updates
    merged here. Closing this (or a side's error) ends both sides before it returns."""
    updates: queue.Queue = queue.Queue()
    halt = threading.Event()
    done = object()

    def read(index: int, side: Iterator) -> None:
        outcome = done
        try:
            with contextlib.closing(side):  # closing it stops its model
                for step in side:  # a step at least every KEEPALIVE_S: halt is noticed
                    updates.put((index, step))
                    if halt.is_set():
                        break
        except BaseException as error:  # raised again in the request's thread
            outcome = error
        updates.put((index, outcome))

    threads = [
        threading.Thread(target=read, args=(index, side), name=COMPARE_THREAD, daemon=True)
        for index, side in enumerate(steps)
    ]
    for thread in threads:
        thread.start()
    running = len(threads)
    try:
        while running:
            index, item = updates.get()
            if item is done:
                running -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield index, item
    finally:
        halt.set()
        for thread in threads:
            thread.join()


def stream_both(
    backend: Backend,
    conversations: list[Conversation],
    settings: GenerationSettings,
    answers: list[SideAnswer],
    chats: list[str | None],
    *,
    parallel: bool,
    concurrency_limit: int,
    on_start: Callable[[int, TextStream], None] = lambda index, stream: None,
    check_media: bool = False,
) -> Iterator[int]:
    """Stream both answers into `answers`; yield the index of the side that changed."""
    steps = [
        stream_answer(
            backend,
            conversation,
            settings,
            model=answer.model,
            chat=chat,
            on_start=functools.partial(on_start, index),
            on_notice=answer.notices.append,
            concurrency_limit=concurrency_limit,
            check_media=check_media,
        )
        for index, (conversation, answer, chat) in enumerate(
            zip(conversations, answers, chats, strict=True)
        )
    ]
    merged = (at_the_same_time if parallel else one_after_the_other)(steps)
    with contextlib.closing(merged):
        for index, step in merged:
            answer = answers[index]
            answer.text, answer.stats, answer.thinking_seconds = step
            yield index


def comparison(
    turns: list[list[dict]], answers: list[SideAnswer], settings: GenerationSettings, style: str
) -> dict:
    """The latest comparison, as a vote reads it: its last question and the two answers
    (`turns`: both sides' conversations, each ending with the question and its answer)."""
    questions = [typed(turn) for turn in turns[0] if turn["role"] == "user"]
    kept_settings = {**dataclasses.asdict(settings), "answer_style": style}
    video = turns[0][0].get("video")
    if video:  # the store samples the frames the model saw, as ChatPanel.keep_pair does
        kept_settings |= {key: video[key] for key in ("num_frames", "start", "end")}
    return {
        "id": uuid.uuid4().hex,
        "media": media_of(turns[0]),
        "question": questions[-1],
        "earlier_questions": questions[:-1],
        "answers": [answer.text for answer in answers],
        "models": [answer.model for answer in answers],
        "sides": [
            {"system_prompt": answer.system_prompt, "reasoning": side[-2]["reasoning"]}
            for answer, side in zip(answers, turns, strict=True)
        ],
        "settings": kept_settings,
        "stopped": any(answer.stats is None or answer.stats.stopped for answer in answers),
    }


# -- votes --------------------------------------------------------------------------------------


class VotedComparisons:
    """The comparisons already voted on (the newest `size`): one vote each, even for two
    clicks arriving together."""

    def __init__(self, size: int = 100_000):
        self.size = size
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def claim(self, comparison_id: str) -> bool:
        with self._lock:
            if comparison_id in self._ids:
                return False
            self._ids[comparison_id] = None
            while len(self._ids) > self.size:
                self._ids.popitem(last=False)
            return True

    def release(self, comparison_id: str) -> None:
        with self._lock:
            self._ids.pop(comparison_id, None)


VOTED = VotedComparisons()


def record_vote(choice: str, latest: dict | None, feedback: PreferenceStore | None) -> str:
    """Act on a vote; what to tell the voter. InputError for a vote that cannot count."""
    choice = str(choice or "").strip().lower()
    if choice not in VOTES:
        raise InputError(f"choice must be one of {', '.join(VOTES)}, not {choice!r}.")
    if not latest:
        raise InputError(
            "There is no comparison to vote on yet: ask a question and wait for both answers."
        )
    if latest["stopped"]:
        raise InputError(
            "An answer was stopped before its end: ask again to vote on two whole answers."
        )
    if not VOTED.claim(latest["id"]):
        raise InputError(
            "You already voted on this comparison (one vote each): ask another question to "
            "vote again."
        )
    label = translate(VOTES[choice])
    if choice not in ("left", "right"):
        return translate(
            "Thanks: {label}. A tie or two bad answers make no preference pair: nothing was "
            "written.",
            label=label,
        )
    if feedback is None:
        return translate(
            "Thanks: {label}. This demo keeps no votes: nothing was written.", label=label
        )
    chosen = SIDES.index(choice)
    rejected = 1 - chosen
    settings = {
        **latest["settings"],
        "chosen": latest["sides"][chosen],
        "rejected": latest["sides"][rejected],
    }
    if latest["earlier_questions"]:  # a follow-up: the question alone lacks its context
        settings["earlier_questions"] = latest["earlier_questions"]
    try:
        feedback.add_pair(
            media=latest["media"],
            question=latest["question"],
            chosen=latest["answers"][chosen],
            rejected=latest["answers"][rejected],
            chosen_model=latest["models"][chosen],
            rejected_model=latest["models"][rejected],
            settings=settings,
            source="vote",
        )
    except BaseException:
        VOTED.release(latest["id"])  # not written: the vote may be given again
        raise
    return translate("Thanks: {label}. Kept as a preference pair.", label=label)


def vote(choice: str, latest: dict | None, feedback: PreferenceStore | None) -> str:
    with refusals():
        message = record_vote(choice, latest, feedback)
    gr.Info(message)
    return message


# -- the tab ------------------------------------------------------------------------------------


@dataclass
class Side:
    """One side's components."""

    name: str
    model: gr.Dropdown
    reasoning: gr.Checkbox
    state: gr.State
    chatbot: gr.Chatbot

    def shown(self, turns: list[dict]) -> dict:
        return {self.state: turns, self.chatbot: to_chatbot(turns)}


def build_side(name: str, backend: Backend, reasoning: bool) -> Side:
    choices = backend.models or [backend.info.model]
    with gr.Column(min_width=320):
        with gr.Row():
            model = gr.Dropdown(
                choices,
                value=backend.info.model,
                label=localized(f"{name.capitalize()} model"),
                interactive=len(choices) > 1,
                elem_id=f"compare-{name}-model",
            )
            reasoning = gr.Checkbox(
                reasoning,
                label=localized("Reason step by step"),
                elem_id=f"compare-{name}-reasoning",
            )
        chatbot = gr.Chatbot(
            elem_id=f"compare-{name}-chatbot",
            label=localized(f"{name.capitalize()} answer"),
            height=460,
            latex_delimiters=LATEX_DELIMITERS,
            buttons=["copy"],
            feedback_options=None,
        )
    return Side(name, model, reasoning, gr.State([]), chatbot)


class CompareTab:
    """The tab's components and handlers."""

    def __init__(
        self,
        backend: Backend,
        defaults: GenerationSettings,
        system_prompt: str,
        concurrency_limit: int,
        model: gr.State,
        feedback: PreferenceStore | None,
    ):
        self.backend = backend
        self.concurrency_limit = concurrency_limit
        self.parallel = runs_both_at_once(backend, concurrency_limit)
        self.session_model = model
        self.feedback = feedback
        note = localized_by(lambda say: tab_note(backend, concurrency_limit, feedback, say))
        gr.Markdown(note, elem_id="compare-note")
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=300):
                self.images = gr.File(
                    label=localized("Images"),
                    file_count="multiple",
                    file_types=["image"],
                    elem_id="compare-images",
                )
                self.video = gr.Video(
                    sources=["upload"],
                    label=localized("Or a video"),
                    elem_id="compare-video",
                    height=220,
                )
                self.num_frames = gr.Slider(
                    4,
                    MAX_FRAMES,
                    VideoClip.num_frames,
                    step=1,
                    label=localized("Frames"),
                    elem_id="compare-frames",
                )
                self.settings = build_settings(defaults, system_prompt, prefix="compare")
                self.settings.reasoning.visible = False  # each side has its own switch
            with gr.Column(scale=5, min_width=640):
                with gr.Row(equal_height=False):
                    # Reasoning on the right by default: the MPO prompt against the plain one.
                    self.sides = [
                        build_side("left", backend, reasoning=False),
                        build_side("right", backend, reasoning=True),
                    ]
                self.question = gr.Textbox(
                    placeholder=localized("Ask both sides a question and press Enter"),
                    show_label=False,
                    elem_id="compare-input",
                )
                with gr.Row():
                    self.send_btn = gr.Button(
                        localized("Compare"), variant="primary", elem_id="compare-send"
                    )
                    self.stop_btn = gr.Button(
                        localized("Stop"), variant="stop", visible=False, elem_id="compare-stop"
                    )
                    self.clear_btn = gr.Button(localized("Clear"), elem_id="compare-clear")
                with gr.Row():
                    self.vote_btns = {
                        choice: gr.Button(
                            localized(label), size="sm", elem_id=f"compare-vote-{choice}"
                        )
                        for choice, label in VOTES.items()
                    }
                self.vote_note = gr.Markdown(elem_id="compare-vote-note")
        self.latest = gr.State(None)  # the session's latest comparison (see `comparison`)
        self.followed = gr.State(backend.info.model)  # the session's model the sides follow

    # -- wiring ---------------------------------------------------------------------------------

    @property
    def states(self) -> list:
        return [side.state for side in self.sides]

    @property
    def shown_outputs(self) -> list:
        return [*self.states, *(side.chatbot for side in self.sides)]

    @property
    def busy_outputs(self) -> list:
        return [self.question, self.send_btn, self.stop_btn, self.clear_btn]

    def busy(self, is_busy: bool) -> dict:
        """While the models run only Stop is usable."""
        return {
            self.question: gr.Textbox(interactive=not is_busy),
            self.send_btn: gr.Button(interactive=not is_busy),
            self.stop_btn: gr.Button(visible=is_busy),
            self.clear_btn: gr.Button(interactive=not is_busy),
        }

    def wire(self) -> None:
        checked = {
            "concurrency_id": INPUT_QUEUE,
            "concurrency_limit": INPUT_CONCURRENCY,
            "show_progress": "hidden",
            **HIDDEN,
        }
        left, right = self.sides
        added = gr.on(
            [self.question.submit, self.send_btn.click],
            self.add_question,
            [
                self.question,
                *self.states,
                self.images,
                self.video,
                self.num_frames,
                left.reasoning,
                right.reasoning,
                self.settings.answer_style,
            ],
            [*self.shown_outputs, self.question, self.latest],
            **checked,
        )
        running = added.success(
            lambda: self.busy(True), None, self.busy_outputs, queue=False, **HIDDEN
        )
        models = [left.model, right.model, self.session_model]
        start = running.then
        if len(self.backend.models) > 1:
            # Both sides' models are made ready outside the model queue (see ChatPanel).
            loading = running.then(
                self.load_models,
                [*self.states, *models],
                [*self.shown_outputs, self.question],
                concurrency_id=MODEL_LOADS,
                concurrency_limit=1,
                show_progress="minimal",
                **HIDDEN,
            )
            start = loading.success
        inputs = [*self.states, *models, *self.settings.generation()]
        generation = start(
            self.respond,
            inputs,
            [*self.shown_outputs, self.question, self.latest],
            concurrency_id=MODEL_QUEUE,
            concurrency_limit=self.concurrency_limit,
            show_progress="minimal",
            validator=client_limit_validator(len(inputs)),
            **HIDDEN,
        )
        generation.then(lambda: self.busy(False), None, self.busy_outputs, queue=False, **HIDDEN)

        self.stop_btn.click(self.stop, None, None, queue=False, **HIDDEN)
        gr.on(
            [self.clear_btn.click, *(side.chatbot.clear for side in self.sides)],
            self.clear,
            None,
            [*self.shown_outputs, self.question, self.latest, self.images, self.video],
            queue=False,
            **HIDDEN,
        )
        for choice, button in self.vote_btns.items():
            button.click(
                functools.partial(vote, choice, feedback=self.feedback),
                self.latest,
                self.vote_note,
                **checked,
            )
        self.session_model.change(
            follow_session_model,
            [self.session_model, left.model, right.model, self.followed],
            [left.model, right.model, self.followed],
            queue=False,
            **HIDDEN,
        )

    # -- handlers -------------------------------------------------------------------------------

    def keys(self, request: gr.Request | None) -> list[str]:
        """The two conversations' ids: the browser session and the side."""
        session = getattr(request, "session_hash", None) or "no-session"
        return [f"{session}/compare-{side}" for side in SIDES]

    def shown(self, *turns: list[dict]) -> dict:
        return {key: value for side, t in zip(self.sides, turns, strict=True)
                for key, value in side.shown(t).items()}  # fmt: skip

    def add_question(
        self,
        request: gr.Request,
        question: str,
        left_turns: list[dict],
        right_turns: list[dict],
        images: list[str] | None,
        video: str | None,
        num_frames: float,
        left_reasoning: bool,
        right_reasoning: bool,
        answer_style: str,
    ) -> dict:
        """Add the question (checked) to both sides; a new comparison is not voted on yet."""
        for key in self.keys(request):
            ACTIVE_STREAMS.new_request(key)
        with refusals():
            check_client_jobs(request)
            turn = question_turn(question, images, video, num_frames)
            if left_turns:  # a follow-up: the media belong to the first question
                media = (turn["images"], turn["video"])
                if any(media) and media != (left_turns[0]["images"], left_turns[0]["video"]):
                    raise InputError(
                        "The images and video belong to this comparison's first question: "
                        "press Clear to compare on other media."
                    )
                turn = user_turn(turn["text"])
            check_turn(to_turn(turn))  # a video is decoded once here, and cached
        left = [*left_turns, side_turn(turn, left_reasoning, answer_style)]
        right = [*right_turns, side_turn(turn, right_reasoning, answer_style)]
        return {**self.shown(left, right), self.question: "", self.latest: None}

    def give_back(self, left_turns: list[dict], right_turns: list[dict]) -> dict:
        """Both conversations without their unanswered question, which goes back in the box."""
        question = typed(left_turns[-1])
        return {**self.shown(left_turns[:-1], right_turns[:-1]), self.question: question}

    def load_models(
        self,
        left_turns: list[dict],
        right_turns: list[dict],
        left_model: str,
        right_model: str,
        session_model: str,
    ) -> dict:
        """Make both sides' models ready before the answers queue; if one cannot be loaded,
        say so and give the question back."""
        for model in dict.fromkeys([left_model or session_model, right_model or session_model]):
            try:
                self.backend.ensure_model(model)
            except (InputError, ModelLoadError) as error:
                gr.Warning(str(error))
                if left_turns and left_turns[-1]["role"] == "user":
                    return self.give_back(left_turns, right_turns)
        return {self.states[0]: gr.skip()}

    def respond(
        self,
        request: gr.Request,
        left_turns: list[dict],
        right_turns: list[dict],
        left_model: str,
        right_model: str,
        session_model: str,
        system_prompt: str,
        *values: float,
    ):
        """Stream both answers, each in its chatbot; then keep the comparison for a vote.

        (`values` are the settings in SETTING_NAMES order.)
        """
        if not left_turns or left_turns[-1]["role"] != "user":
            return
        turns = [left_turns, right_turns]
        with refusals():
            settings = make_settings(*values)
            models = [left_model or session_model, right_model or session_model]
            prompts = [
                side_system_prompt(self.backend, system_prompt, session_model, model)
                for model in models
            ]
            thinks = [
                asked_to_think(self.backend, model, side[-1]["reasoning"])
                for model, side in zip(models, turns, strict=True)
            ]
            answers = [SideAnswer(*side) for side in zip(models, prompts, thinks, strict=True)]
        keys = self.keys(request)
        started: list[tuple[str, TextStream]] = []

        def register(index: int, stream: TextStream) -> None:
            started.append((keys[index], stream))
            ACTIVE_STREAMS.add(keys[index], stream)

        warned = [0, 0]
        reader = ResultReader(request)
        try:
            yield self.shown(*(
                [*side, answer.turn()] for side, answer in zip(turns, answers, strict=True)
            ))  # fmt: skip
            conversations = [
                to_conversation(side, answer.system_prompt)
                for side, answer in zip(turns, answers, strict=True)
            ]
            for index in stream_both(
                self.backend,
                conversations,
                settings,
                answers,
                keys,
                parallel=self.parallel,
                concurrency_limit=self.concurrency_limit,
                on_start=register,
            ):
                reader.check()
                answer = answers[index]
                for notice in answer.notices[warned[index] :]:
                    gr.Warning(notice)
                warned[index] = len(answer.notices)
                yield self.sides[index].shown([*turns[index], answer.turn()])
        except Exception as error:
            shown_error = failure(error)  # logs an unexpected one while it is being handled
            yield self.give_back(left_turns, right_turns)
            raise shown_error from None
        finally:
            for key, stream in started:
                ACTIVE_STREAMS.remove(key, stream)
        answered = [[*side, answer.turn()] for side, answer in zip(turns, answers, strict=True)]
        style = left_turns[-1]["answer_style"]
        yield {**self.shown(*answered), self.latest: comparison(answered, answers, settings, style)}

    def stop(self, request: gr.Request) -> None:
        for key in self.keys(request):
            ACTIVE_STREAMS.stop(key)

    def clear(self, request: gr.Request) -> dict:
        """A new comparison: empty sides and media; the backend forgets both conversations."""
        for key in self.keys(request):
            self.backend.clear_cache(chat=key)
        return {
            **self.shown([], []),
            self.question: "",
            self.latest: None,
            self.images: None,
            self.video: None,
        }

    # -- the API --------------------------------------------------------------------------------

    def register_endpoints(self, system_prompt: str) -> None:
        """`/compare` and `/compare_vote`: hidden components, the same handlers' logic."""
        defaults = GenerationSettings()
        with gr.Column(visible=False):
            own = [
                gr.Textbox(label="question"),
                gr.File(label="images", file_count="multiple", file_types=["image"]),
                gr.File(label="video", file_types=VIDEO_TYPES),
                gr.Textbox("", label="left_model"),
                gr.Textbox("", label="right_model"),
                gr.Checkbox(False, label="left_reasoning"),
                gr.Checkbox(False, label="right_reasoning"),
                gr.Number(VideoClip.num_frames, label="num_frames"),
                gr.Textbox(system_prompt, label="system_prompt"),
                gr.Textbox(DEFAULT_STYLE, label="answer_style"),
                *(gr.Number(getattr(defaults, name), label=name) for name in API_SETTINGS),
            ]
            results = [
                gr.Textbox(label="left_answer"),
                gr.Textbox(label="right_answer"),
                gr.Textbox(label="left_figures"),
                gr.Textbox(label="right_figures"),
                gr.Textbox(label="left_thinking"),
                gr.Textbox(label="right_thinking"),
            ]
            choice = gr.Textbox(label="choice")
            message = gr.Textbox(label="message")
            compare_trigger, vote_trigger = gr.Button(), gr.Button()
        names = [component.label for component in own]
        file_types = take_file_types(own)

        def compare(request: gr.Request, *values):
            given = dict(zip(names, values, strict=True))
            yield from self.compare_api(request, given, file_types)

        # gradio_client names the parameters, and tells required from optional, by the
        # signature: the question is required, the rest default to their inputs' values.
        parameters = [
            inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                              annotation=gr.Request)
        ]  # fmt: skip
        for index, (name, component) in enumerate(zip(names, own, strict=True)):
            default = inspect.Parameter.empty if index == 0 else component.value
            parameters.append(
                inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default)
            )
        compare.__signature__ = inspect.Signature(parameters)
        compare.__name__ = "compare"
        models = ", ".join(self.backend.models) or self.backend.info.model
        side_model = f"one of {models} (empty: {self.backend.info.model})"
        compare.__doc__ = (
            "Ask two models (or one model twice, with different settings) the same question "
            "about images, a video or no media, and get both answers side by side: a new "
            "comparison each call (follow-ups: the Compare tab). The session keeps the "
            "comparison for compare_vote.\n"
            "Args:\n"
            "    question: the question both sides answer; refer to several images as Image-1, "
            "Image-2, ...\n"
            "    images: images (each an http(s) URL of the file or a data: URL with it in "
            "base64), or empty.\n"
            "    video: a video (an http(s) URL or a data: URL), or empty; not with images.\n"
            f"    left_model: the left side's model, {side_model}.\n"
            f"    right_model: the right side's model, {side_model}.\n"
            f"    left_reasoning: the left side's reasoning switch: {COMMON_DOCS['reasoning']}\n"
            "    right_reasoning: the same for the right side.\n"
            "    num_frames: with a video, how many frames each side sees.\n"
            f"    system_prompt: {COMMON_DOCS['system_prompt']}\n"
            f"    answer_style: {COMMON_DOCS['answer_style']}\n"
            + "".join(f"    {name}: {COMMON_DOCS[name]}\n" for name in API_SETTINGS)
            + "Returns:\n"
            "    left_answer: the left side's answer alone (its thinking apart).\n"
            "    right_answer: the right side's answer alone.\n"
            "    left_figures: the left side's model and speed (tokens, seconds).\n"
            "    right_figures: the same for the right side.\n"
            "    left_thinking: the left side's thinking before its answer (a thinking model, "
            "e.g. InternVL3.5 with its reasoning switch on); empty when it did not think.\n"
            "    right_thinking: the same for the right side."
        )
        compare_trigger.click(
            compare,
            own,
            [self.latest, *results],
            api_name="compare",
            concurrency_id=MODEL_QUEUE,
            concurrency_limit=self.concurrency_limit,
            validator=client_limit_validator(len(own)),
        )

        def compare_vote(choice: str, latest: dict | None) -> str:
            """Vote on which answer of this session's latest compare is better. One vote per
            comparison; when the demo keeps preference pairs, a vote with a winner is kept as
            one (training data for MPO).

            Args:
                choice: left, right, tie or both_bad.
                latest: (kept by the session, not a parameter)
            Returns:
                what was done (text).
            """
            return vote(choice, latest, self.feedback)

        vote_trigger.click(
            compare_vote,
            [choice, self.latest],
            message,
            api_name="compare_vote",
            concurrency_id=INPUT_QUEUE,
            concurrency_limit=INPUT_CONCURRENCY,
        )

    def compare_api(self, request: gr.Request, given: dict, file_types: dict):
        """Check a `/compare` request and stream its two answers."""
        backend = self.backend
        with refusals():
            try:
                for name, types in file_types.items():
                    check_file_types(given[name], types)
                settings = make_settings(*(given[name] for name in SETTING_NAMES))
                turn = question_turn(
                    given["question"], given["images"], given["video"], given["num_frames"]
                )
                style = normalize_style(given["answer_style"])
                turns = [[side_turn(turn, given[f"{side}_reasoning"], style)] for side in SIDES]
                answers = []
                for side in SIDES:
                    model = backend.check_model(given[f"{side}_model"] or None)
                    prompt = side_system_prompt(backend, given["system_prompt"], None, model)
                    thinks = asked_to_think(backend, model, given[f"{side}_reasoning"])
                    answers.append(SideAnswer(model, prompt, thinks))
                conversations = [
                    to_conversation(side, answer.system_prompt)
                    for side, answer in zip(turns, answers, strict=True)
                ]
                for conversation in conversations:
                    conversation.check()
            except InputError:
                raise
            except (TypeError, ValueError, ArithmeticError) as error:  # e.g. a null number
                raise InputError(f"Invalid parameter: {error}") from None

        def outputs(latest: dict | None) -> tuple:
            (left, left_thinking), (right, right_thinking) = map(SideAnswer.api_texts, answers)
            figures = [answer.figures() for answer in answers]
            return latest, left, right, *figures, left_thinking, right_thinking

        reader = ResultReader(request)
        try:
            yield outputs(None)  # a new comparison: the previous one can no longer be voted on
            for _ in stream_both(
                backend,
                conversations,
                settings,
                answers,
                [None, None],
                parallel=self.parallel,
                concurrency_limit=self.concurrency_limit,
                check_media=True,
            ):
                reader.check()
                yield outputs(None)
        except Exception as error:
            raise failure(error) from None
        answered = [[*side, answer.turn()] for side, answer in zip(turns, answers, strict=True)]
        yield outputs(comparison(answered, answers, settings, style))


def follow_session_model(session_model: str, left: str, right: str, previous: str) -> list:
    """Sides still at the session's previous model follow it to its new one."""
    return [session_model if model == previous else model for model in (left, right)] + [
        session_model
    ]


def build_compare_tab(
    backend: Backend,
    defaults: GenerationSettings,
    system_prompt: str,
    concurrency_limit: int,
    model: gr.State | None = None,
    feedback: PreferenceStore | None = None,
) -> CompareTab:
    """Compare: one question, two answers side by side, a vote; `/compare`, `/compare_vote`.

    `model` holds the session's model (both sides start with it); with `feedback`, a vote with
    a winner is kept as a preference pair.
    """
    model = model if model is not None else gr.State(backend.info.model)
    tab = CompareTab(backend, defaults, system_prompt, concurrency_limit, model, feedback)
    tab.wire()
    tab.register_endpoints(system_prompt)
    return tab
