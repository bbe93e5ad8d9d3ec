"""Small versions of the load benchmarks (benchmarks/load.py): 4 clients, 20 turns."""

from __future__ import annotations

from benchmarks.load import concurrency, long_conversation
from tests.conftest import generate_threads, wait_until


def test_four_clients_at_once_on_every_tab_one_stopping(app_url):
    outcomes = concurrency(app_url, clients=4, tokens=128, stop_every=4)
    assert [o.error for o in outcomes] == [None] * 4
    assert {o.endpoint for o in outcomes} == {
        "/image_chat",
        "/multi_image_chat",
        "/video_chat",
        "/grounding",
    }
    assert all(o.partials > 0 for o in outcomes)
    # One generation at a time: the others saw their place in the queue.
    assert any(rank >= 1 for o in outcomes for rank in o.queue_ranks)
    assert wait_until(lambda: not generate_threads(), timeout=30)


def test_a_long_conversation_gives_its_memory_and_threads_back(backend):
    figures = long_conversation(backend, turns=20, tokens=8)
    assert figures["threads after"] <= figures["threads before"]
    # After Clear the process is back near where it started (allocator slack allowed).
    assert figures["after Clear MiB"] - figures["baseline MiB"] < 150
