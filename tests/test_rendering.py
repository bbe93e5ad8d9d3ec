"""How answers look in the chat: grounding markup readable, never raw tags."""

from __future__ import annotations

import pytest

from interface.rendering import render_answer


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
        ("See ![pixel](http://tracker.example/p.png)", "See [pixel](http://tracker.example/p.png)"),
        ('<img src="http://tracker.example/p.png">', '&lt;img src="http://tracker.example/p.png">'),
        ("<IMG SRC=x onerror=alert(1)>", "&lt;IMG SRC=x onerror=alert(1)>"),
    ],
)
def test_model_output_cannot_make_the_browser_load_images(answer, shown):
    assert render_answer(answer) == shown
