"""The conversation as the UI keeps it, and its two views: the model's and the chatbot's.

A gr.State holds a list of turn dicts:
`{"role": "user" | "assistant", "text": str, "images": [paths], "video": dict | None,
  "reasoning": bool, "answer_style": str, "stats": str | None}`, and an answer's "model" (the
session's model may change between answers) and "feedback" ("like", "dislike" or None).

An answer's "text" is the reply as the model wrote it, thinking included (`<think>...</think>`
first, model_backend.thinking); it is split for display, and the prompt builder sends only the
answer back. With it, "thinking_seconds" (how long it thought, None if not or not yet) and
"thinking_mode" (asked with the reasoning switch on a model with a thinking mode: untagged text
is thinking until `</think>`).

After Regenerate an answer turn holds every answer to its question: its own fields are the
answer in use (the only one the model sees in later turns), "alternatives" the others (each
`{"text", "stats", "model", "feedback", "number"}`, by number), and "number" the place of the
answer in use among them (1 for the first answer given). While the new answer is on its way,
the question holds the answer it replaces as "previous_answer".

A conversation restored from the browser's history (interface.history) has every turn marked
"restored", and its questions hold their media's names ("media") and thumbnails, not the files.

The chatbot display is always derived from it (`chat_view`, `to_chatbot`).
"""

from __future__ import annotations

import copy
import os

from interface.grounding_view import annotated_file, answer_boxes
from interface.i18n import request_language, translate
from interface.rendering import render_answer, stats_line
from interface.settings import finite_number
from model_backend.base import Conversation, Turn, VideoClip
from model_backend.errors import InputError
from model_backend.media import BoundedCache
from model_backend.styles import DEFAULT_STYLE, normalize_style, split_final_answer
from model_backend.thinking import Reply, answer_alone, split_thinking


def user_turn(
    text: str,
    images: list[str] | tuple[str, ...] = (),
    video: dict | None = None,
    reasoning: bool = False,
    answer_style: str | None = DEFAULT_STYLE,
) -> dict:
    return {
        "role": "user",
        "text": text,
        "images": list(images),
        "video": video,
        "reasoning": bool(reasoning),
        "answer_style": normalize_style(answer_style),
        "stats": None,
    }


def assistant_turn(
    text: str,
    stats: str | None = None,
    model: str | None = None,
    thinking_seconds: float | None = None,
    thinking_mode: bool = False,
) -> dict:
    return {
        "role": "assistant",
        "text": text,
        "images": [],
        "video": None,
        "stats": stats,
        "model": model,
        "feedback": None,
        "thinking_seconds": thinking_seconds,
        "thinking_mode": bool(thinking_mode),
    }


def finished(answer: dict) -> bool:
    """The answer has ended (its figures come at the end; a restored one has ended)."""
    return answer.get("stats") is not None or bool(answer.get("restored"))


def reply_of(answer: dict) -> Reply:
    """An answer turn's (or an alternative's) thinking and answer."""
    opened = bool(answer.get("thinking_mode"))
    return split_thinking(answer["text"], opened=opened, final=finished(answer))


def thinking_and_answer(text: str, thinking_mode: bool, final: bool) -> tuple[str, str]:
    """A reply's thinking ("" when none) and its answer alone, as the API gives them back."""
    reply = split_thinking(text, opened=thinking_mode, final=final)
    return reply.thinking or "", answer_alone(text, reply)


def answer_text(answer: dict) -> str:
    """An answer turn's answer alone, without its thinking."""
    opened = bool(answer.get("thinking_mode"))
    return thinking_and_answer(answer["text"], opened, finished(answer))[1]


# -- alternatives and feedback ----------------------------------------------------------------

ANSWER_FIELDS = (
    "text", "stats", "model", "feedback", "number", "restored", "thinking_seconds", "thinking_mode"
)  # fmt: skip
FEEDBACK = {True: "like", False: "dislike"}  # gr.LikeData.liked; "" (taken back) is None


def answer_of(turn: dict) -> dict:
    """The answer in use of an answer turn, as an alternative is kept."""
    return {key: turn.get(key) for key in ANSWER_FIELDS} | {"number": turn.get("number") or 1}


def earlier_answers(previous: dict) -> list[dict]:
    """Every answer of `previous` (an answer turn about to be regenerated), by number."""
    return sorted([*previous.get("alternatives", ()), answer_of(previous)], key=number_of)


def number_of(answer: dict) -> int:
    return answer["number"]


def with_earlier_answers(answer: dict, previous: dict | None) -> dict:
    """A new answer turn to a question asked again: the answers of `previous` (the answer
    turn it replaces) become its alternatives, and the pairs already written stay known."""
    if not previous:
        return answer
    earlier = earlier_answers(previous)
    kept = {**answer, "alternatives": earlier, "number": len(earlier) + 1}
    if previous.get("pairs"):
        kept["pairs"] = previous["pairs"]
    return kept


def media_missing(turns: list[dict]) -> bool:
    """Some question was about images or a video the conversation no longer holds (restored
    from the browser's history, which keeps their names only)."""
    return any(turn.get("media") for turn in turns)


def with_feedback(
    turns: list[dict], index: int, alternative: int | None, feedback: str | None
) -> tuple[list[dict], tuple[dict, dict] | None]:
    """The conversation with `feedback` on answer turn `index` (on its alternative number
    `alternative`, an index into its "alternatives", or on the answer in use when None).

    A like on an alternative makes it the answer in use. A like on an answer that has
    alternatives is a preference: it is returned as (chosen, rejected), the rejected answer
    being the one in use before (or, for a like on the answer in use, the newest other one);
    once per pair and turn, so that taking a like back and giving it again is not counted twice.
    """
    turn = {**turns[index], "alternatives": list(turns[index].get("alternatives", ()))}
    others = turn["alternatives"]
    if alternative is None:
        turn["feedback"] = feedback
        chosen = answer_of(turn)
        rejected = max(others, key=number_of) if others else None
    else:
        chosen = {**others[alternative], "feedback": feedback}
        others[alternative] = chosen
        rejected = None
        if feedback == "like":  # the liked alternative takes the place of the answer in use
            rejected = answer_of(turn)
            others[alternative] = rejected
            turn.update(chosen)
            others.sort(key=number_of)
    if not others:
        del turn["alternatives"]
    pair = None
    if feedback == "like" and rejected is not None:
        numbers = [chosen["number"], rejected["number"]]
        if numbers not in turn.get("pairs", []):
            turn["pairs"] = [*turn.get("pairs", []), numbers]
            pair = (chosen, rejected)
    return [*turns[:index], turn, *turns[index + 1 :]], pair


def video_dict(
    path: str, num_frames: int, start: float | None, end: float | None, tiles_per_frame: int
) -> dict:
    """How a turn records its video (plain data, as gr.State keeps it). Numbers that are not
    finite are refused by name (int(inf) would raise OverflowError)."""
    return {
        "path": path,
        "num_frames": int(finite_number("num_frames", num_frames)),
        "start": None if start is None else finite_number("start", start),
        "end": None if end is None else finite_number("end", end),
        "tiles_per_frame": int(finite_number("tiles_per_frame", tiles_per_frame)),
    }


def to_clip(video: dict) -> VideoClip:
    return VideoClip(**video)


def to_turn(turn: dict) -> Turn:
    """The backend's turn. An answer keeps its thinking: the prompt builder leaves it out."""
    video = turn.get("video")
    return Turn(
        turn["role"],
        turn["text"],
        tuple(turn.get("images") or ()),
        video=to_clip(video) if video else None,
        reasoning=bool(turn.get("reasoning")),
        answer_style=turn.get("answer_style") or DEFAULT_STYLE,
        image_labels=tuple(turn.get("image_labels") or ()),  # a document's "Page-3"
    )


def to_conversation(turns: list[dict], system_prompt: str) -> Conversation:
    return Conversation(turns=tuple(to_turn(t) for t in turns), system_prompt=system_prompt)


def answer_messages(
    text: str,
    stats: str | None,
    reasoning: bool,
    *,
    thinking_seconds: float | None = None,
    thinking_mode: bool = False,
    final: bool | None = None,
) -> list[dict]:
    """Chatbot messages for one answer (`final`: it has ended; by default, it has `stats`).

    A reply with thinking: the thinking collapsible (pending while it thinks, with its duration
    once known), then the answer. Otherwise, asked with `reasoning` (InternVL 2.5 MPO's prompt,
    not a thinking mode): the reasoning collapsible, then the final answer in bold."""
    footer = stats_line(stats) if stats else ""
    final = stats is not None if final is None else final
    reply = split_thinking(text, opened=thinking_mode, final=final)
    if reply.thinking is not None:
        return thinking_messages(reply, thinking_seconds, footer, final)
    if not reasoning or thinking_mode:
        answer = answer_alone(text, reply)
        return [{"role": "assistant", "content": (render_answer(answer) or "…") + footer}]
    steps, final_answer = split_final_answer(text)
    thinking = {
        "role": "assistant",
        "content": render_answer(steps) or "…",
        "metadata": {
            "title": translate("Reasoning"),
            "status": "done" if final_answer is not None else "pending",
        },
    }
    if final_answer is None:
        if footer:  # ended (or stopped) without a final answer
            thinking["metadata"]["status"] = "done"
            no_final_answer = translate("(no final answer)")
            return [thinking, {"role": "assistant", "content": no_final_answer + footer}]
        return [thinking]
    bold = f"**{translate('Final answer:')}** {render_answer(final_answer)}"
    return [thinking, {"role": "assistant", "content": bold + footer}]


def thinking_messages(reply: Reply, seconds: float | None, footer: str, final: bool) -> list[dict]:
    """One "Thinking" collapsible above the answer; only the thinking while it thinks."""
    metadata = {
        "title": translate("Thinking"),
        "status": "done" if reply.thinking_done else "pending",
    }
    if reply.thinking_done and seconds is not None:
        metadata["duration"] = round(seconds, 1)
    thinking = {"role": "assistant", "content": render_answer(reply.thinking) or "…"}
    if not reply.thinking_done:
        return [{**thinking, "metadata": metadata}]
    # An empty answer at the end: it was cut off (stopped, or out of tokens) while thinking.
    answer = render_answer(reply.answer) or (translate("(no answer)") if final else "…")
    return [{**thinking, "metadata": metadata}, {"role": "assistant", "content": answer + footer}]


def to_chatbot(turns: list[dict]) -> list[dict]:
    return chat_view(turns)[0]


def chat_view(turns: list[dict]) -> tuple[list[dict], list[tuple[int, int | None] | None]]:
    """Chatbot messages for the conversation: images and videos shown in the user's bubble,
    an answer's other answers (after Regenerate) collapsed above it, and its boxes drawn on
    the latest image before it. With them, whose each message is: None for a question's,
    (turn index, None) for an answer in use's, (turn index, k) for its k-th alternative's.

    The last turn is the one that changes while an answer streams: it is rendered each time.
    The turns before it come from RENDERED, rendered once per version of their content.
    """
    messages: list[dict] = []
    owners: list[tuple[int, int | None] | None] = []
    reasoning = False
    image = None
    for index, turn in enumerate(turns):
        if turn["role"] == "user":
            reasoning = bool(turn.get("reasoning"))
            image = (turn.get("images") or [image])[-1]
        if index == len(turns) - 1:
            shown = turn_messages(turn, reasoning, image)
        else:
            shown = remembered_messages(turn, reasoning, image)
        messages += shown
        # Alternatives come first, one message each (see turn_messages).
        alternatives = len(shown_alternatives(turn))
        if turn["role"] == "user":
            owners += [None] * (len(shown) - alternatives)
        owners += [(index, k) for k in range(alternatives)]
        if turn["role"] == "assistant":
            owners += [(index, None)] * (len(shown) - alternatives)
    return messages, owners


def feedback_marks(turns: list[dict], owners: list) -> list[str | None]:
    """The chatbot's `feedback_value`: each answer message's "Like", "Dislike" or None."""
    marks = []
    for owner in owners:
        if owner is None:
            continue
        index, alternative = owner
        turn = turns[index]
        answer = turn if alternative is None else shown_alternatives(turn)[alternative]
        marks.append({"like": "Like", "dislike": "Dislike"}.get(answer.get("feedback")))
    return marks


def shown_alternatives(turn: dict) -> list[dict]:
    """The other answers shown with a turn: an answer's alternatives, or, on a question being
    answered again, the answers it had."""
    if turn["role"] == "assistant":
        return turn.get("alternatives", [])
    previous = turn.get("previous_answer")
    return earlier_answers(previous) if previous else []


def alternative_message(answer: dict, total: int) -> dict:
    """An answer not in use, collapsed, with its number."""
    footer = stats_line(answer["stats"]) if answer.get("stats") else ""
    return {
        "role": "assistant",
        "content": (render_answer(answer_text(answer)) or "…") + footer,
        "metadata": {
            "title": translate(
                "Other answer ({number} of {total})", number=answer["number"], total=total
            ),
            "log": translate("not used · like it to use it instead"),
            "status": "done",
        },
    }


def turn_messages(turn: dict, reasoning: bool, image: str | None) -> list[dict]:
    """One turn's messages; an answer is read with its question's `reasoning`, and its boxes
    drawn on `image` (the latest image before it). Its other answers come first."""
    others = shown_alternatives(turn)
    total = len(others) + 1
    alternatives = [alternative_message(answer, total) for answer in others]
    if turn["role"] == "user":
        content: list = [{"path": path} for path in turn.get("images") or ()]
        if turn.get("video"):
            content.append({"path": turn["video"]["path"]})
        if turn["text"]:
            content.append(render_answer(turn["text"]))  # a <ref> in a question reads too
        return [{"role": "user", "content": content}, *alternatives]
    messages = answer_messages(
        turn["text"],
        turn.get("stats"),
        reasoning,
        thinking_seconds=turn.get("thinking_seconds"),
        thinking_mode=bool(turn.get("thinking_mode")),
        final=finished(turn),
    )
    drawing = drawn_boxes(image, answer_text(turn))  # boxes in the thinking are not drawn
    if drawing:
        messages.append({"role": "assistant", "content": {"path": drawing}})
    return [*alternatives, *messages]


def rendered_size(messages: list[dict]) -> int:
    """About the bytes of a memo entry: its messages, and as much again for its key's text."""
    return 2 * len(repr(messages))


# Rendered turns by everything their messages depend on. An entry is a copy of the turn's
# text rendered, so a few thousand long answers fit.
RENDERED = BoundedCache(32 * 2**20, rendered_size)


def remembered_messages(turn: dict, reasoning: bool, image: str | None) -> list[dict]:
    """`turn_messages`, rendered once while the turn's content stays the same."""
    # Feedback is not rendered (it is the chatbot's feedback_value); the other answers are.
    others = tuple((a["number"], a["text"], a.get("stats")) for a in shown_alternatives(turn))
    language = request_language()  # the titles around an answer are in the reader's language
    if turn["role"] == "user":
        video = (turn.get("video") or {}).get("path")
        key = ("user", language, turn["text"], tuple(turn.get("images") or ()), video, others)
    else:
        thinking = (turn.get("thinking_seconds"), turn.get("thinking_mode"), finished(turn))
        key = ("assistant", language, turn["text"], turn.get("stats"), thinking, reasoning)
        key += (image, others)
    messages = RENDERED.get_or_make(key, lambda: turn_messages(turn, reasoning, image))
    if turn["role"] == "assistant" and not all(map(os.path.isfile, drawings(messages))):
        # The drawing was deleted as old (grounding_view.keep_newest): drawn again, same file.
        messages = turn_messages(turn, reasoning, image)
    return copy.deepcopy(messages)  # the caller may change what it gets; the memo stays


def drawings(messages: list[dict]) -> list[str]:
    return [m["content"]["path"] for m in messages if isinstance(m["content"], dict)]


def drawn_boxes(image: str | None, answer: str) -> str | None:
    """The file of `image` with the answer's boxes drawn, if the answer has any."""
    if not image or "<box>" not in answer:
        return None
    try:
        boxes = answer_boxes(image, answer)
    except InputError:
        return None
    return annotated_file(image, boxes) if boxes else None


def history_to_turns(history: list | None) -> list[dict]:
    """API history (`[{"role": ..., "content": ...}]`, text content) -> turn dicts.

    Content may also be Gradio's normalised list of blocks; only text blocks are read (files in
    API history are ignored: media come through the endpoint's own parameters). Other keys
    (an engine's "reasoning_content", a "thinking") are ignored, and thinking written inline
    in an answer never reaches the model (the prompt builder sends the answer alone).
    Assistant messages with a metadata title (a gr.Chatbot's "Thinking", "Reasoning" and
    "Other answer" collapsibles, in the history copied from it) are not answers: skipped.
    """
    turns = []
    for message in history or []:
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise InputError(
                'history must be a list of {"role": "user" | "assistant", "content": "..."} '
                "messages."
            )
        if message["role"] == "assistant" and titled_message(message):
            continue
        content = message.get("content", "")
        if isinstance(content, dict):  # one block: a text, or a file (a chatbot's drawing)
            if not is_text_block(content):
                continue  # media come through the endpoint's own parameters
            content = content["text"]
        if isinstance(content, list):
            content = "\n".join(
                block.get("text", "") if isinstance(block, dict) else str(block)
                for block in content
                if isinstance(block, str) or is_text_block(block)
            )
        if message["role"] == "user":
            turns.append(user_turn(str(content)))
        else:
            turns.append(assistant_turn(str(content)))
    return turns


def titled_message(message: dict) -> bool:
    """A chatbot message with a title: a collapsible around an answer, not an answer."""
    metadata = message.get("metadata")
    return isinstance(metadata, dict) and bool(metadata.get("title"))


def is_text_block(block) -> bool:
    """A text block of Gradio's normalised content (not a file, not a "thinking" block)."""
    return isinstance(block, dict) and "text" in block and block.get("type", "text") == "text"


def conversation_paths(turns: list[dict]) -> set[str]:
    """Every image and video file the conversation already holds."""
    paths = {path for turn in turns for path in turn.get("images") or ()}
    return paths | {turn["video"]["path"] for turn in turns if turn.get("video")}
