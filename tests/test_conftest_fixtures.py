"""The shared fixtures of tests/conftest.py do what other test modules rely on."""

from __future__ import annotations

from pathlib import Path

from model_backend.base import Conversation, GenerationSettings, Turn
from tests.conftest import BOUNCING_BALL, CAT, COFFEE, ROCKET


def test_the_example_files_are_there():
    assert all(Path(path).is_file() for path in (CAT, COFFEE, ROCKET, BOUNCING_BALL))


def test_the_stream_spy_records_the_call_and_the_real_answer_still_streams(backend, stream_spy):
    conversation = Conversation((Turn("user", "What is in the image?", (CAT,)),))
    settings = GenerationSettings(max_new_tokens=4, temperature=0)
    stream = backend.stream(conversation, settings)
    answer = "".join(stream)
    assert answer and stream.stats.new_tokens > 0
    (call,) = stream_spy
    assert call.conversation is conversation and call.settings is settings
    assert call.kwargs == {}
