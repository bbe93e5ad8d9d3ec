"""The conversation's turns as the exports write them, with the model of each answer."""

from __future__ import annotations

import json
from pathlib import Path

from interface.conversation import assistant_turn, user_turn
from interface.export import write_exports
from tests.conftest import CAT


def test_an_export_names_the_model_of_each_answer_when_the_session_switched():
    turns = [
        user_turn("What is it?", [CAT]),
        assistant_turn("A cat.", "3 tokens", model="small-model"),
        user_turn("Sure?"),
        assistant_turn("Yes, a cat.", "4 tokens", model="large-model"),
    ]
    json_path, md_path = write_exports(turns, "large-model", {"temperature": 0})
    record = json.loads(Path(json_path).read_text())
    assert record["model"] == "large-model"
    assert [turn.get("model") for turn in record["turns"]] == [
        None,
        "small-model",
        None,
        "large-model",
    ]
    markdown = Path(md_path).read_text()
    assert markdown.startswith("# Conversation with large-model")
    assert markdown.count("## Assistant (small-model)") == 1
    assert markdown.count("## Assistant\n") == 1  # the export's own model is not repeated
