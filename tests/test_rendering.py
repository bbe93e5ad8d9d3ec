"""How answers look in the chat: grounding markup readable, never raw tags."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from interface import conversation
from interface.conversation import assistant_turn, to_chatbot, user_turn
from interface.rendering import render_answer
from model_backend.thinking import answer_alone, split_thinking
from tests.conftest import COFFEE


@pytest.mark.parametrize(
    ("answer", "shown"),
    [
        ("A plain answer.", "A plain answer."),
        (
            "The <ref>cat</ref><box>[[10, 20, 300, 400]]</box> sleeps.",
            "The **cat** `[10, 20, 300, 400]` sleeps.",
        ),
        (
            "<ref>cups</ref><box>[[1, 2, 3, 4], [5, 6, 7, 8]]</box>",
            "**cups** `[1, 2, 3, 4]` `[5, 6, 7, 8]`",
        ),
        ("Here: <box>[[1, 2, 3, 4]]</box>", "Here: `[1, 2, 3, 4]`"),
        ("Streaming <ref>the ca", "Streaming "),  # unfinished: hidden until it closes
        ("Streaming <ref>cat</ref><box>[[1, 2", "Streaming **cat**"),
        ("Cut in a tag name <re", "Cut in a tag name "),
        ("Stray <ref>open and <quad> junk </box> here", "Stray open and "),
        ("a <ref>b <ref>c</ref> d", "a b **c** d"),
        ("x < y and y > z", "x < y and y > z"),
    ],
)
def test_render_answer(answer, shown):
    assert render_answer(answer) == shown


def test_no_grounding_tag_survives_rendering_of_garbage():
    garbage = "i<ref>\tjunk<quad>more>e<box>`v<box>`x</ref> tail </box>"
    for end in range(len(garbage) + 1):
        rendered = render_answer(garbage[:end])
        for tag in ("<ref>", "</ref>", "<box>", "</box>", "<quad>"):
            assert tag not in rendered


@pytest.mark.parametrize(
    ("answer", "shown"),
    [
        (
            "See ![pixel](http://tracker.example/p.png)",
            "See \\![pixel](http://tracker.example/p.png)",
        ),
        ('<img src="http://tracker.example/p.png">', '&lt;img src="http://tracker.example/p.png">'),
        ("<IMG SRC=x onerror=alert(1)>", "&lt;IMG SRC=x onerror=alert(1)>"),
    ],
)
def test_model_output_cannot_make_the_browser_load_images(answer, shown):
    assert render_answer(answer) == shown


# -- the allow-list: model-written markup never makes the browser load anything --------------

URL = "http://tracker.example"


@pytest.mark.parametrize(
    ("answer", "shown"),
    [
        # Images of every markdown form become links.
        (f"![see [this] here]({URL}/a)", f"\\![see [this] here]({URL}/a)"),
        (f"![ref][r1]\n\n[r1]: {URL}/b", f"\\![ref][r1]\n\n[r1]: {URL}/b"),
        (f"![short]\n\n[short]: {URL}/c", f"\\![short]\n\n[short]: {URL}/c"),
        # Raw HTML is shown as text, whatever the tag.
        (f'<video poster="{URL}/v"></video>', f'&lt;video poster="{URL}/v">&lt;/video>'),
        (f'<svg><image href="{URL}/s"/></svg>', f'&lt;svg>&lt;image href="{URL}/s"/>&lt;/svg>'),
        (f'<p style="background:url({URL}/p)">', f'&lt;p style="background:url({URL}/p)">'),
        ("<!-- c --> <?x?> </b>", "&lt;!-- c --> &lt;?x?> &lt;/b>"),
        # Also in a grounding label.
        (
            f"<ref><img src={URL}/l></ref><box>[[1, 2, 3, 4]]</box>",
            f"**&lt;img src={URL}/l>** `[1, 2, 3, 4]`",
        ),
        # A backslash already makes `<` and `!` plain text; two backslashes do not.
        ("\\<b> \\![a](b)", "\\<b> \\![a](b)"),
        ("\\\\<b> \\\\![a](b)", "\\\\&lt;b> \\\\\\![a](b)"),
    ],
)
def test_markup_that_loads_urls_is_shown_as_text(answer, shown):
    assert render_answer(answer) == shown


@pytest.mark.parametrize(
    ("answer", "shown"),
    [
        # Fenced code shows exactly, re-fenced so that no parser can read it differently.
        ("```html\n<img src=x>\n```\n<b>", "````html\n<img src=x>\n````\n&lt;b>"),
        ("~~~\n```\n<x>\n~~~", "````\n```\n<x>\n````\n"),
        ("```py\nstreaming <x>", "````py\nstreaming <x>\n````\n"),  # not closed yet
        # A fence indented in a list comes out of the list rather than lose its code.
        ("1. a:\n   ```\n   <div>\n   ```\n2. b", "1. a:\n````\n<div>\n````\n2. b"),
        # Inline code is kept; when it holds markup it is written with entities.
        ("`a < b` and `x`", "`a < b` and `x`"),
        ("`<img src=x>`", "<code>&#60;img src&#61;x&#62;</code>"),
        # A mermaid diagram (which can show images) stays code.
        ("```mermaid\ngraph TD\n```", "````mermaid\ngraph TD\n````\n"),
        ("> ```mermaid\n> graph", "> &#96;``mermaid\n> graph"),
        # Line breaks are markdown's, not Python's.
        ("a\r```\r<i>\r```", "a\n````\n<i>\n````\n"),
        ("a\u2028```\n<i>", "a\u2028```\n&lt;i>"),
    ],
)
def test_code_stays_exact_and_nothing_else_escapes_as_code(answer, shown):
    assert render_answer(answer) == shown


HOSTILE = [
    f"![a [b] c]({URL}/1)",
    f"![r][1]\n\n[1]: {URL}/2",
    f'<audio src="{URL}/3">',
    f'<input type="image" src="{URL}/4">',
    "`` ` <img src=x> ` ``",
    "\\`<img src=x>`",
    "[a](x`y) <img src=x> `q`",
    "```\ncode <img>\n```x\n```\n<img src=y>\n```",
    "- item\n  ```\n  code\n<img src=z>",
    "> ```\n> <img src=q>\n",
    "$ <img src=m> $ and $$\n<img src=n>\n$$",
    "<ref>`<img src=r>`</ref><box>[[1,2,3,4]]</box>",
    # Dropping the `!` of `![` once made a new `![` of the `!` before it.
    f"!![x]({URL}/5) look !![x][r] and !!![y]({URL}/6)\n\n[r]: {URL}/7",
]


def loading_tokens(markdown: str) -> list[str]:
    """What a CommonMark parser (markdown-it) makes of `markdown` that could load a URL:
    images, and raw HTML other than the <code> elements the renderer writes itself."""
    from markdown_it import MarkdownIt

    found = []
    stack = MarkdownIt("commonmark").enable("table").parse(markdown)
    while stack:
        token = stack.pop()
        stack += token.children or []
        if token.type == "image" or token.type == "html_block":
            found.append(token.content)
        if token.type == "html_inline" and token.content not in ("<code>", "</code>"):
            found.append(token.content)
    return found


def test_no_prefix_of_a_hostile_answer_renders_anything_that_loads():
    """Every state of a streaming answer, read by an independent markdown parser."""
    pytest.importorskip("markdown_it")
    answer = "\n\n".join(HOSTILE)
    assert loading_tokens(answer)  # raw, the parser does find images and HTML
    for end in range(len(answer) + 1):
        assert loading_tokens(render_answer(answer[:end])) == [], answer[:end]


# -- the chat rendered back: each turn once per version of its content ------------------------


def streamed_conversation(image: str) -> tuple[list[dict], str]:
    """Earlier turns (a picture, a grounded answer, a reasoning answer) and the next reply."""
    earlier = [
        user_turn("Where is the <ref>cup</ref>?", [image]),
        assistant_turn("<ref>the cup</ref><box>[[100, 200, 500, 800]]</box>", "12 tokens"),
        user_turn("Think: how many?", reasoning=True),
        assistant_turn("Step 1: count.\nFinal answer: one", "30 tokens"),
        user_turn("And the spoon?"),
        assistant_turn("Here: <ref>the spoon</ref><box>[[600, 300, 700, 900]]</box>", "9 tokens"),
        user_turn("Describe the table."),
    ]
    reply = "A wooden table with <ref>a cup</ref><box>[[100, 200, 500, 800]]</box> on it."
    return earlier, reply


def test_a_streamed_answer_renders_the_earlier_turns_once(tmp_path, monkeypatch):
    """Each screen update rendered the whole conversation again (markdown, boxes parsed and
    drawings looked up for every turn); now only the answer that grows."""
    image = tmp_path / "coffee.jpg"  # a path of its own: nothing rendered before
    shutil.copy(COFFEE, image)
    earlier, reply = streamed_conversation(str(image))
    rendered, drawn = [], []
    real_render, real_drawn = conversation.render_answer, conversation.drawn_boxes
    monkeypatch.setattr(
        conversation, "render_answer", lambda text: rendered.append(text) or real_render(text)
    )
    monkeypatch.setattr(
        conversation,
        "drawn_boxes",
        lambda image, text: drawn.append(text) or real_drawn(image, text),
    )
    updates = [reply[:end] for end in range(4, len(reply), 4)] + [reply]
    finals = [assistant_turn(text) for text in updates] + [assistant_turn(reply, "17 tokens")]
    shown = [to_chatbot([*earlier, finals[0]])]
    first_rendered, first_drawn = len(rendered), len(drawn)
    shown += [to_chatbot([*earlier, answer]) for answer in finals[1:]]

    for text in ("Where is the <ref>cup</ref>?", "<ref>the cup</ref>", "Step 1: count."):
        assert sum(t.startswith(text) for t in rendered) == 1, text

    # After the first update, each update renders the answer so far and nothing else (while
    # it streams, less a trailing "<" or "</" that may still become a thinking tag).
    def shown_text(answer: dict) -> str:
        text = answer["text"]
        return answer_alone(text, split_thinking(text, final=answer["stats"] is not None))

    assert rendered[first_rendered:] == [shown_text(answer) for answer in finals[1:]]
    assert drawn[first_drawn:] == [shown_text(answer) for answer in finals[1:]]
    assert rendered[-1] == reply  # the whole answer once it has ended

    conversation.RENDERED.clear()  # rendered afresh, every update is the same
    monkeypatch.undo()
    assert shown == [to_chatbot([*earlier, answer]) for answer in finals]
    assert Path(shown[-1][2]["content"]["path"]).is_file()  # the cup drawn on the photo


def test_a_remembered_turn_changes_with_its_content_and_is_not_shared(tmp_path):
    image = tmp_path / "coffee.jpg"
    shutil.copy(COFFEE, image)
    question = user_turn("How many cups?", [str(image)])
    last = user_turn("Thanks.")
    answer = "Step 1: look.\nFinal answer: <ref>one</ref><box>[[1, 2, 300, 400]]</box>"
    plain = to_chatbot([question, assistant_turn(answer, "5 tokens"), last])
    plain[1]["content"] = "changed by the caller"
    assert to_chatbot([question, assistant_turn(answer, "5 tokens"), last]) != plain
    reasoning = to_chatbot([{**question, "reasoning": True}, assistant_turn(answer), last])
    assert reasoning[1]["metadata"]["title"] == "Reasoning"
    assert reasoning[2]["content"].startswith("**Final answer:** **one**")

    drawing = Path(reasoning[3]["content"]["path"])
    drawing.unlink()  # deleted as old, as grounding_view.keep_newest does
    again = to_chatbot([{**question, "reasoning": True}, assistant_turn(answer), last])
    assert again == reasoning and drawing.is_file()
