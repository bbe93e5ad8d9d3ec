"""Model text -> what the chat shows. Pure functions, no Gradio objects."""

from __future__ import annotations

import bisect
import re
import string

from model_backend.grounding import grounding_spans

# Inline and display maths, as InternVL writes them ($...$, $$...$$, \(...\), \[...\]).
LATEX_DELIMITERS = [
    {"left": "$$", "right": "$$", "display": True},
    {"left": "$", "right": "$", "display": False},
    {"left": "\\(", "right": "\\)", "display": False},
    {"left": "\\[", "right": "\\]", "display": True},
]


def format_box(box: tuple[float, float, float, float]) -> str:
    return "[" + ", ".join(f"{round(v)}" for v in box) + "]"


def render_answer(text: str) -> str:
    """Markdown for an answer: grounding markup shown as a bold label with its boxes, and
    everything else through `safe_markdown` (the model's text is untrusted).

    `<ref>cat</ref><box>[[1, 2, 3, 4]]</box>` becomes **cat** `[1, 2, 3, 4]` (0-1000 units),
    so no raw tags reach the chat (Gradio 6 would otherwise render them as HTML tags). An
    unfinished tag at the end of a streaming answer is hidden until it closes; stray tags that
    never close are dropped.
    """
    out: list[str] = []
    position = 0
    for span in grounding_spans(text):
        out.append(strip_stray_tags(text[position : span.start]))
        label = f"**{span.label}**" if span.label else ""
        boxes = " ".join(f"`{format_box(box)}`" for box in span.boxes)
        out.append(" ".join(part for part in (label, boxes) if part))
        position = span.end
    out.append(strip_stray_tags(cut_unfinished_tag(text[position:])))
    return safe_markdown("".join(out))


GROUNDING_OPENERS = ("<ref>", "<box>", "<quad>")
GROUNDING_TAGS = (*GROUNDING_OPENERS, "</ref>", "</box>", "</quad>")


def cut_unfinished_tag(tail: str) -> str:
    """Cut a trailing grounding tag that has not closed yet, or was cut mid-name ("<re")."""
    cut = max(tail.rfind(opener) for opener in GROUNDING_OPENERS)
    if cut != -1:
        tail = tail[:cut]
    for opener in GROUNDING_OPENERS:
        for length in range(len(opener) - 1, 0, -1):
            if tail.endswith(opener[:length]):
                return tail[:-length]
    return tail


def strip_stray_tags(text: str) -> str:
    for tag in GROUNDING_TAGS:
        text = text.replace(tag, "")
    return text


# ---------------------------------------------------------------------------------------------
# The allow-list: markdown text, emphasis, lists, tables, links, code and maths, and nothing
# that makes the browser load something. A URL the model writes must never be fetched by every
# viewer's browser (a prompt hidden in an image could make it carry the conversation away).
# So raw HTML is shown as text, markdown images become links, and mermaid diagrams stay code.
# Code is exempt, so it shows exactly; to make sure the chat's own markdown parser sees the same
# code as this module, every code block is written out again with an unambiguous fence.

FENCE_OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}(?=[^`]*$)|~{3,})(?P<info>.*)$")
FENCE_CLOSE = re.compile(r"^[ \t]*(?P<fence>`{3,}|~{3,})[ \t]*$")
BACKTICKS = re.compile(r"`+")
# `<` that could open a tag, a comment or a declaration, and `![` that opens an image; neither
# when a backslash (an odd number of them) already makes the character plain text.
NOT_ESCAPED = r"(?<!\\)((?:\\\\)*)"
HTML_START = re.compile(NOT_ESCAPED + r"<(?=[A-Za-z/!?])")
IMAGE_START = re.compile(NOT_ESCAPED + r"!\[")
# The chat draws a "```mermaid" block as a diagram (which can show images) wherever it starts a
# block: in a list or a quote too, where the fences below are not recognised.
MERMAID = re.compile(r"`(?=`{2,}\s*mermaid)", re.IGNORECASE)


def safe_markdown(text: str) -> str:
    """The model's markdown, keeping only what the allow-list above lets through."""
    out: list[str] = []
    prose: list[str] = []
    lines = markdown_lines(text)
    index = 0
    while index < len(lines):
        opening = FENCE_OPEN.match(lines[index].rstrip("\n"))
        if not opening:
            prose.append(lines[index])
            index += 1
            continue
        out.append(safe_prose("".join(prose)))
        prose = []
        body, index = fenced_body(lines, index + 1, opening)
        out.append(code_block(opening["info"], body))
    out.append(safe_prose("".join(prose)))
    return "".join(out)


def markdown_lines(text: str) -> list[str]:
    """Lines as markdown sees them: split at \\n, \\r\\n or \\r only (not at the other
    characters Python's splitlines breaks at), each with its "\\n"."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return [line + "\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])


def fenced_body(lines: list[str], start: int, opening: re.Match) -> tuple[list[str], int]:
    """The lines of a fenced block up to its closing fence (or the end, while streaming),
    without the opening fence's indentation; and the index of the line after it."""
    fence, indent = opening["fence"], len(opening["indent"])
    body = []
    for index in range(start, len(lines)):
        closing = FENCE_CLOSE.match(lines[index].rstrip("\n"))
        if closing and closing["fence"][0] == fence[0] and len(closing["fence"]) >= len(fence):
            return body, index + 1
        line = lines[index]
        body.append(line[min(indent, len(line) - len(line.lstrip(" \t"))) :])
    return body, len(lines)


def code_block(info: str, body: list[str]) -> str:
    """A fenced block no parser can read differently: at the start of a line, and fenced with
    more backticks than any run inside it. At least four, so that it is never a mermaid
    diagram (the chat draws "```mermaid" blocks, with whatever the diagram links to)."""
    code = "".join(body)
    if code and not code.endswith("\n"):
        code += "\n"
    longest = max((len(run) for run in BACKTICKS.findall(code)), default=0)
    fence = "`" * max(4, longest + 1)
    language = re.sub(r"[^\w+#.-]", "", (info.split() or [""])[0])
    return f"{fence}{language}\n{code}{fence}\n"


def safe_prose(text: str) -> str:
    """Text outside fenced blocks: inline code kept, raw HTML and images made text."""
    out = []
    text = MERMAID.sub("&#96;", text)
    for is_code, part in split_code_spans(text):
        out.append(safe_code_span(part) if is_code else safe_text(part))
    return "".join(out)


def split_code_spans(text: str) -> list[tuple[bool, str]]:
    """(is_code, part) pieces: a run of n backticks opens a code span that the next run of
    exactly n closes (CommonMark); a run with no partner is plain text."""
    runs = [match.span() for match in BACKTICKS.finditer(text)]
    by_length: dict[int, list[int]] = {}  # run length -> indexes of such runs, in order
    for index, (start, end) in enumerate(runs):
        by_length.setdefault(end - start, []).append(index)
    parts: list[tuple[bool, str]] = []
    position = index = 0
    while index < len(runs):
        start, end = runs[index]
        if is_escaped(text, start):  # \` is a plain backtick; the rest of the run may open
            start += 1
        same = by_length.get(end - start, [])
        later = bisect.bisect_right(same, index)
        if start == end or later == len(same):
            index += 1
            continue
        closing = same[later]
        parts += [(False, text[position:start]), (True, text[start : runs[closing][1]])]
        position = runs[closing][1]
        index = closing + 1
    parts.append((False, text[position:]))
    return parts


def is_escaped(text: str, position: int) -> bool:
    """An odd number of backslashes stands before `position`."""
    count = 0
    while position - count > 0 and text[position - count - 1] == "\\":
        count += 1
    return count % 2 == 1


def safe_code_span(span: str) -> str:
    """An inline code span, as is when it holds nothing risky. Otherwise it is written as a
    <code> element with every character that means something in HTML or markdown given as an
    entity: it shows the same and stays text, whichever way a parser splits the line."""
    if not (HTML_START.search(span) or IMAGE_START.search(span)):
        return span
    ticks = len(span) - len(span.lstrip("`"))
    content = span[ticks:-ticks].replace("\n", " ")
    if content.startswith(" ") and content.endswith(" ") and content.strip():
        content = content[1:-1]
    encoded = "".join(f"&#{ord(c)};" if c in string.punctuation else c for c in content)
    return f"<code>{encoded}</code>"


def safe_text(text: str) -> str:
    """Markdown text: tags shown as text, images as links (their `!` shown as text). (Maths
    is text too: KaTeX reads the page's text, where `&lt;` is `<` again.)"""
    text = HTML_START.sub(r"\1&lt;", text)
    # The `!` is escaped, not dropped: dropping it could join another `!` to the `[` ("!![").
    return IMAGE_START.sub(r"\1\\![", text)


def stats_line(summary: str) -> str:
    """The small line under an answer: tokens, time to first token, tokens/s. (Made safe
    like an answer: a restored conversation's figures come from the browser.)"""
    return f"\n\n<sub>{safe_prose(summary)}</sub>"
