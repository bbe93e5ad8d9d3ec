"""Thinking models: the `<think>...</think>` part of a reply, and InternVL3.5's thinking mode.

Every backend hands its consumers one text stream in which the thinking, if any, comes first
between `<think>` and `</think>` (model_backend.remote turns engines' `reasoning_content`
deltas into that form). `split_thinking` separates it from the answer, also on partial,
streaming text; `strip_thinking` gives the answer alone, which is all that goes back to the
model in later turns (model_backend.prompt.chat_messages).

Models with a thinking mode (InternVL3.5) think when asked to by their documented system
prompt; `apply_thinking_mode` does that for a question asked with the reasoning switch on,
instead of the MPO "reason step by step" wrapper that InternVL 2.5 uses. Pure Python.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # model_backend.types measures answers with strip_thinking: no cycle
    from model_backend.types import Conversation

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"

# InternVL3.5's thinking-mode system prompt, exactly as its model card gives it.
THINKING_SYSTEM_PROMPT = (
    "You are an AI assistant that rigorously follows this response protocol:\n"
    "\n"
    "1. First, conduct a detailed analysis of the question. Consider different angles, "
    "potential solutions, and reason through the problem step-by-step. Enclose this entire "
    "thinking process within <think> and </think> tags.\n"
    "\n"
    "2. After the thinking section, provide a clear, concise, and direct answer to the user's "
    "question. Separate the answer from the think section with a newline.\n"
    "\n"
    "Ensure that the thinking process is thorough but remains focused on the query. The final "
    "answer should be standalone and not reference the thinking section."
)
# The model card's sampling advice in thinking mode: shown as a hint, never imposed.
THINKING_TEMPERATURE = 0.6

# InternVL3.5 checkpoints, original or -HF: "InternVL3_5-8B", "InternVL3.5-1B", "internvl3-5".
_THINKING_MODEL_NAME = re.compile(r"internvl3[._-]5", re.IGNORECASE)
# Language models of the InternVL3.5 family (a local checkpoint's text config `model_type`).
_THINKING_TEXT_MODEL_TYPES = frozenset({"qwen3", "qwen3_moe", "gpt_oss"})


@dataclass(frozen=True)
class Reply:
    """A reply (or the part of it streamed so far) split into its thinking and its answer."""

    thinking: str | None  # None: the reply has no thinking
    answer: str  # the rest, stripped
    thinking_done: bool  # the closing tag has arrived (or the reply ended)


def _without_partial_tag(text: str) -> str:
    """`text` less a trailing beginning of a tag (`<thi`, `</th`): the rest may follow."""
    for length in range(min(len(text), len(THINK_CLOSE) - 1), 0, -1):
        tail = text[-length:]
        if any(tag.startswith(tail) and tag != tail for tag in (THINK_OPEN, THINK_CLOSE)):
            return text[:-length]
    return text


def _merge(first: str, second: str) -> str:
    """The thinking of two blocks; a repeat of the first (or the start of one) adds nothing."""
    if not second or first.startswith(second):
        return first
    if not first:
        return second
    return f"{first}\n\n{second}"


def split_thinking(text: str, *, opened: bool = False, final: bool = False) -> Reply:
    """The thinking and the answer of a reply, also of one still streaming.

    - Text starting with `<think>` (leading whitespace ignored) thinks up to the first
      `</think>`; the answer follows it.
    - A `</think>` with no `<think>` before it (an engine whose template opened the thinking):
      everything before it is thinking.
    - `opened=True` (the prompt opened the thinking): text is thinking until `</think>`. A
      final reply with neither tag is all answer: the model did not think.
    - A second `<think>...</think>` block right at the start of the answer (an engine that sends
      its reasoning both apart and inline) joins the thinking, or is dropped if it repeats it.
    - While streaming (`final=False`) a trailing partial tag is held back from both parts.
    - A final reply whose `<think>` never closes was cut off while thinking: answer "".
    - A closed, empty block ("<think>\n\n</think>", a model told not to think) is no thinking.
    """
    return _split(text, opened=opened, final=final, merge_second=True)


def _split(text: str, *, opened: bool, final: bool, merge_second: bool) -> Reply:
    """split_thinking; a second block is merged only when `merge_second` (once: a reply of
    thousands of blocks, sent back through the API, must not recurse thousands of times)."""
    body = (text if final else _without_partial_tag(text)).lstrip()
    if body.startswith(THINK_OPEN):
        body = body[len(THINK_OPEN) :]
    elif THINK_OPEN in body.partition(THINK_CLOSE)[0] and not opened:
        # "<think>" written inside an answer, not a thinking block.
        return Reply(thinking=None, answer=body.strip(), thinking_done=True)
    elif THINK_CLOSE not in body and not (opened and not final):
        return Reply(thinking=None, answer=body.strip(), thinking_done=True)
    thinking, closed, answer = body.partition(THINK_CLOSE)
    if not closed:  # still thinking, or cut off while thinking
        return Reply(thinking=thinking.strip(), answer="", thinking_done=final)
    answer = answer.lstrip()
    if answer.startswith(THINK_CLOSE):  # a stray second closing tag
        answer = answer[len(THINK_CLOSE) :].lstrip()
    thinking, done = thinking.strip(), True
    if merge_second and answer.startswith(THINK_OPEN):
        repeat = _split(answer, opened=False, final=final, merge_second=False)
        thinking = _merge(thinking, repeat.thinking or "")
        answer, done = repeat.answer, repeat.thinking_done
    # An empty block (a model told not to think writes "<think>\n\n</think>") is no thinking.
    return Reply(
        thinking=(thinking or None) if done else thinking, answer=answer.strip(), thinking_done=done
    )


def answer_alone(text: str, reply: Reply) -> str:
    """The answer of `text`, split into `reply`: the text as written when nothing was taken out
    of it, else the reply's answer (also when all that was taken out is a tag: an empty
    thinking block, or the start of a tag still streaming)."""
    return text if reply.thinking is None and reply.answer == text.strip() else reply.answer


def strip_thinking(text: str) -> str:
    """The answer alone: what goes back to the model in later turns. Text without thinking is
    returned as it is. Not to be applied twice: an answer may speak of `</think>` itself."""
    return answer_alone(text, split_thinking(text, final=True))


def has_thinking_mode(model: str, text_model_type: str | None = None) -> bool:
    """Whether the model thinks when asked by THINKING_SYSTEM_PROMPT: InternVL3.5, known by its
    name (any case, -HF or not) or by its language model's `model_type`."""
    return bool(_THINKING_MODEL_NAME.search(model)) or (
        text_model_type in _THINKING_TEXT_MODEL_TYPES
    )


def apply_thinking_mode(conversation: Conversation, own_system_prompt: str) -> Conversation:
    """The conversation as a thinking model sees it: no question in the MPO wrapper (the
    switch asks such a model to think, never to "reason step by step"), and, when its latest
    question was asked with `reasoning=True`, the thinking system prompt. A system prompt the
    user wrote (neither empty nor the model's own `own_system_prompt`) is kept after it,
    separated by a blank line. A conversation with no question asked with the switch is
    returned as is."""
    turns = conversation.turns
    if not any(turn.reasoning for turn in turns):
        return conversation
    # Earlier questions asked with the switch on lose the wrapper too, whatever the latest.
    questions = tuple(replace(turn, reasoning=False) if turn.reasoning else turn for turn in turns)
    if turns[-1].role != "user" or not turns[-1].reasoning:
        return replace(conversation, turns=questions)
    users_prompt = conversation.system_prompt.strip()
    if users_prompt.startswith(THINKING_SYSTEM_PROMPT):  # already applied
        system_prompt = users_prompt
    elif users_prompt and users_prompt != own_system_prompt.strip():
        system_prompt = f"{THINKING_SYSTEM_PROMPT}\n\n{users_prompt}"
    else:
        system_prompt = THINKING_SYSTEM_PROMPT
    return replace(conversation, turns=questions, system_prompt=system_prompt)
