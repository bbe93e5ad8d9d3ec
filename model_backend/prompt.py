"""Conversation -> InternVL 2.5 prompt. The one prompt builder every tab and backend uses.

The format is the `internvl2_5` ChatML template with the model's own system message:

    <|im_start|>system\\n{system}<|im_end|>\\n
    <|im_start|>user\\n{images}{question}<|im_end|>\\n
    <|im_start|>assistant\\n{answer}<|im_end|>\\n ... <|im_start|>assistant\\n

Checkpoints converted from the original format may use another of the original templates
(their `template` field): InternVL2-8B-MPO's `internlm2-chat` has another system message and no
newline after `<|im_end|>`. `PromptTemplate` holds that difference.

A question asked with "reason step by step" or an answer style is written as the MPO
chain-of-thought prompt / with the MMInstruct instruction (model_backend.styles).

Images: when the whole conversation holds one image it is written `<image>\\n`; with several, each
is `Image-k: <image>\\n`, numbered across the conversation so a question can say "Image-3".
A turn's images may carry labels of their own instead (a document's pages: `Page-3: <image>\\n`).
Tile budgets follow the official demo worker: the images of the latest user turn that carries
images share `max_tiles` (max(1, max_tiles // n) each); images of earlier turns get 1 tile each.
Every `<image>` becomes `<img>` + `<IMG_CONTEXT>` x (tokens per tile x tiles) + `</img>`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from model_backend.styles import style_question
from model_backend.thinking import strip_thinking
from model_backend.types import Conversation, Turn

# The model's own system message (InternVL 2.5 model cards and chat template).
DEFAULT_SYSTEM_PROMPT = (
    "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位"
    "联合开发的多模态大语言模型。"
)
# The system message of the InternVL 2 templates (internlm2-chat, Hermes-2), kept by
# InternVL2-8B-MPO "to avoid changes in benchmark performance".
INTERNVL2_SYSTEM_PROMPT = (
    "你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，英文名叫InternVL, "
    "是一个有用无害的人工智能助手。"
)
IMAGE_PLACEHOLDER = "<image>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
IMG_START, IMG_END, IMG_CONTEXT = "<img>", "</img>", "<IMG_CONTEXT>"

# Tokens that structure the prompt. Text from users (or earlier answers sent back through the API)
# must not smuggle them in: an extra <IMG_CONTEXT> would break the image/token count and an extra
# <|im_end|> would forge a turn. Grounding tags (<ref>, <box>) are legitimate input and stay.
STRUCTURAL_TOKENS = (
    IM_START,
    IM_END,
    "<|endoftext|>",
    IMG_START,
    IMG_END,
    IMG_CONTEXT,
    "<video>",
    IMAGE_PLACEHOLDER,
)


@dataclass(frozen=True)
class PromptTemplate:
    """One of the original conversation templates (the checkpoint's `template` field).

    All that the InternVL 2 / 2.5 family uses are ChatML-like: they differ only in the default
    system message and in what follows `<|im_end|>` (a newline for internvl2_5, nothing for
    the InternVL 2 templates).
    """

    name: str
    system_prompt: str
    separator: str


TEMPLATES = {
    template.name: template
    for template in (
        PromptTemplate("internvl2_5", DEFAULT_SYSTEM_PROMPT, f"{IM_END}\n"),
        PromptTemplate("internlm2-chat", INTERNVL2_SYSTEM_PROMPT, IM_END),
        PromptTemplate("Hermes-2", INTERNVL2_SYSTEM_PROMPT, IM_END),
    )
}
DEFAULT_TEMPLATE = TEMPLATES["internvl2_5"]


# Every structural token ends with one of these characters: only there can a token complete.
_TOKEN_ENDINGS = re.compile(f"([{re.escape(''.join({t[-1] for t in STRUCTURAL_TOKENS}))}])")
_LONGEST_TOKEN = max(len(token) for token in STRUCTURAL_TOKENS)


def clean_text(text: str) -> str:
    """Remove prompt-structure tokens from free text (user questions, earlier answers).

    One left-to-right pass, linear in the text: a token is dropped the moment its last character
    arrives, so the kept text never holds one, not even when the text around a dropped token
    joins into another ("<ima<image>ge>" loses both). Replacing tokens until nothing changes
    gives the same result (tokens cannot overlap) but needs a pass per level of nesting, which
    is quadratic: a 288 KB nested question took a minute.
    """
    kept: list[str] = []
    for index, piece in enumerate(_TOKEN_ENDINGS.split(text)):  # text, ending, text, ...
        kept.extend(piece)
        if index % 2 == 0:  # text without an ending: no token can have completed
            continue
        tail = "".join(kept[-_LONGEST_TOKEN:])
        for token in STRUCTURAL_TOKENS:
            if tail.endswith(token):
                del kept[-len(token) :]
                break
    return "".join(kept)


def image_tile_budgets(conversation: Conversation, max_tiles: int) -> list[int]:
    """The most tiles each image of the conversation may use, in conversation order."""
    image_turns = [turn for turn in conversation.turns if turn.images]
    budgets: list[int] = []
    for turn in image_turns:
        if turn is image_turns[-1]:
            budgets += [max(1, max_tiles // len(turn.images))] * len(turn.images)
        else:
            budgets += [1] * len(turn.images)
    return budgets


def user_text(turn: Turn, first_number: int, numbered: bool) -> str:
    """A user turn's text with its image (or video frame) placeholders in front.

    `first_number` is the conversation-wide number of the turn's first image. A video's frames
    are written `Frame1: <image>\n`, `Frame2: <image>\n`, ... as in the model card; images with
    labels (a document's pages) `Page-3: <image>\n`, ..., even alone in the conversation.
    """
    if turn.video:
        prefix = "".join(
            f"Frame{i + 1}: {IMAGE_PLACEHOLDER}\n" for i in range(turn.video.num_frames)
        )
    elif turn.image_labels:
        labels = zip(turn.image_labels, turn.images, strict=True)
        prefix = "".join(f"{clean_text(label)}: {IMAGE_PLACEHOLDER}\n" for label, _ in labels)
    elif numbered:
        prefix = "".join(
            f"Image-{first_number + i}: {IMAGE_PLACEHOLDER}\n" for i in range(len(turn.images))
        )
    else:
        prefix = f"{IMAGE_PLACEHOLDER}\n" * len(turn.images)
    return prefix + style_question(clean_text(turn.text), turn.reasoning, turn.answer_style)


def chat_messages(conversation: Conversation) -> list[tuple[str, str]]:
    """(role, text) pairs, system first, with `<image>` placeholders where images go.

    This is what every backend sends: the local one expands the placeholders into image tokens;
    a remote engine receives the images as separate parts in the same order.
    Earlier answers go back without their thinking (`<think>...</think>`).
    """
    numbered = conversation.image_count > 1
    system = clean_text(conversation.system_prompt).strip()
    # The reference always sends a system message; a user who empties it gets none at all.
    messages = [("system", system)] if system else []
    next_number = 1
    for turn in conversation.turns:
        if turn.role == "user":
            messages.append(("user", user_text(turn, next_number, numbered)))
            next_number += len(turn.images)
        else:
            # The answer alone: a thinking model's thinking is never shown to it again.
            messages.append(("assistant", clean_text(strip_thinking(turn.text))))
    return messages


def image_tokens(tiles: int, tokens_per_tile: int) -> str:
    """What one `<image>` placeholder becomes in the model's input text."""
    return IMG_START + IMG_CONTEXT * (tokens_per_tile * tiles) + IMG_END


def build_prompt(
    conversation: Conversation,
    tiles_per_image: Sequence[int],
    tokens_per_tile: int = 256,
    template: PromptTemplate = DEFAULT_TEMPLATE,
) -> str:
    """The full model input text, ending with the assistant's opening, images expanded.

    `tiles_per_image` is the actual tile count (thumbnail included) of each image and video
    frame, in conversation order. `template` is the checkpoint's conversation template.
    """
    if len(tiles_per_image) != conversation.visual_count:
        raise ValueError(
            f"{conversation.visual_count} images and frames in the conversation but "
            f"{len(tiles_per_image)} tile counts"
        )
    parts = [
        f"{IM_START}{role}\n{text}{template.separator}"
        for role, text in chat_messages(conversation)
    ]
    text = "".join(parts) + f"{IM_START}assistant\n"
    pieces = text.split(IMAGE_PLACEHOLDER)
    expanded = [pieces[0]]
    for tiles, piece in zip(tiles_per_image, pieces[1:], strict=True):
        expanded += [image_tokens(tiles, tokens_per_tile), piece]
    return "".join(expanded)


def drop_oldest_visual_turn(conversation: Conversation) -> Conversation | None:
    """The conversation without its oldest question that brought images or a video (and that
    question's answer), or None if only the current question is left to drop."""
    turns = conversation.turns
    for index, turn in enumerate(turns[:-1]):
        if turn.role == "user" and turn.visual_count:
            end = index + 1
            if end < len(turns) - 1 and turns[end].role == "assistant":
                end += 1
            return Conversation(turns[:index] + turns[end:], conversation.system_prompt)
    return None
