"""The prefix cache per conversation, on the tiny checkpoint (real transformers caches, CPU):
interleaved users keep their own follow-ups fast, and the answers stay the same."""

from __future__ import annotations

import pytest

from benchmarks.common import printable_answers
from model_backend.base import Conversation, GenerationSettings, Turn
from model_backend.local import LocalBackend
from model_backend.prefix_cache import cache_bytes
from model_backend.prompt import DEFAULT_SYSTEM_PROMPT
from tests.conftest import EXAMPLES

GREEDY = GenerationSettings(max_new_tokens=12, temperature=0, max_tiles=6)
IMAGES = {
    chat: str(EXAMPLES / name)
    for chat, name in zip(
        "ABCD", ["cat.jpg", "rocket.jpg", "bar_chart.png", "receipt.png"], strict=True
    )
}
QUESTIONS = ["Describe the image.", "What colours are there?", "Anything written?"]


@pytest.fixture(scope="module")
def cached(tiny_checkpoint):
    backend = LocalBackend(str(tiny_checkpoint), device="cpu", prefix_cache_gb=1)
    yield printable_answers(backend)
    backend.close()


@pytest.fixture(scope="module")
def uncached(tiny_checkpoint):
    backend = LocalBackend(str(tiny_checkpoint), device="cpu", prefix_cache_gb=0)
    yield printable_answers(backend)
    backend.close()


def first_turn(image: str, question: str = QUESTIONS[0]) -> Conversation:
    return Conversation((Turn("user", question, (image,)),), DEFAULT_SYSTEM_PROMPT)


def follow(conversation: Conversation, answer: str, question: str) -> Conversation:
    turns = (*conversation.turns, Turn("assistant", answer), Turn("user", question))
    return Conversation(turns, conversation.system_prompt)


def answer(backend, conversation, chat=None, settings=GREEDY):
    stream = backend.stream(conversation, settings, chat=chat)
    return "".join(stream), stream.stats


def test_four_interleaved_users_each_reuse_their_own_prefix_with_the_same_answers(cached, uncached):
    cached.clear_cache()
    history, previous = {}, {}
    for round_number, question in enumerate(QUESTIONS):
        for chat, image in IMAGES.items():  # A1 B1 C1 D1 A2 B2 C2 D2 ...
            if round_number == 0:
                conversation = first_turn(image, question)
            else:
                conversation = follow(*history[chat], question)
            text, stats = answer(cached, conversation, chat=f"session/{chat}")
            fresh, fresh_stats = answer(uncached, conversation)
            assert text == fresh and stats.new_tokens == fresh_stats.new_tokens  # same answer
            assert fresh_stats.reused_tokens == 0
            if round_number == 0:
                assert stats.reused_tokens == 0
            else:  # everything but the new question came from the cache
                assert stats.reused_tokens > previous[chat].prompt_tokens  # images included
                fed = stats.prompt_tokens - stats.reused_tokens
                # The question, its turn's markup (the tiny tokenizer has a token per byte:
                # 22 for "<|im_end|>\n<|im_start|>user\n" ... "assistant\n") and the
                # answer's last token, which the model generated but never took as input.
                assert fed <= len(question.encode()) + 22 + 1, (chat, round_number, fed)
                assert f"{stats.reused_tokens:,} prompt tokens reused" in stats.summary()
            history[chat], previous[chat] = (conversation, text), stats
    assert sorted(cached.prefix_cache.chats()) == [f"session/{chat}" for chat in IMAGES]


def test_clear_of_one_chat_leaves_the_others(cached):
    cached.clear_cache()
    history = {}
    for chat in "AB":
        conversation = first_turn(IMAGES[chat])
        history[chat] = (conversation, answer(cached, conversation, chat=chat)[0])
    cached.clear_cache("A")
    assert cached.prefix_cache.chats() == ["B"]
    _, stats = answer(cached, follow(*history["A"], "And?"), chat="A")
    assert stats.reused_tokens == 0
    _, stats = answer(cached, follow(*history["B"], "And?"), chat="B")
    assert stats.reused_tokens > 0


def test_different_images_with_equal_tile_counts_never_share_an_entry(cached, uncached):
    cat, coffee = str(EXAMPLES / "cat.jpg"), str(EXAMPLES / "coffee.jpg")
    cached.clear_cache()
    same_tokens = [cached.prepare(first_turn(i), GREEDY).input_ids for i in (cat, coffee)]
    assert same_tokens[0].tolist() == same_tokens[1].tolist()  # only the pixels differ
    expected = answer(uncached, first_turn(coffee))[0]
    for chat in ("A", "B", None):  # the same chat, another one, an API request
        cached.clear_cache()
        answer(cached, first_turn(cat), chat="A")
        answer(cached, first_turn(cat))  # an API request's entry too
        text, stats = answer(cached, first_turn(coffee), chat=chat)
        assert stats.reused_tokens == 0
        assert text == expected


def test_an_api_client_resending_its_history_reuses_its_prefix(cached):
    cached.clear_cache()
    conversation = first_turn(IMAGES["A"])
    text, _ = answer(cached, conversation)
    _, stats = answer(cached, follow(conversation, text, "And then?"))
    assert stats.reused_tokens > 0


def test_two_chats_with_the_same_start_both_keep_their_follow_ups(cached):
    cached.clear_cache()
    conversation = first_turn(IMAGES["A"])  # the same example clicked in two browsers
    text, _ = answer(cached, conversation, chat="A")
    text_b, stats = answer(cached, conversation, chat="B")
    assert stats.reused_tokens > 0 and text_b == text  # A's entry, copied
    for chat in "AB":
        _, stats = answer(cached, follow(conversation, text, "More?"), chat=chat)
        assert stats.reused_tokens > 0, chat


def test_memory_stays_within_the_budget_and_entries_are_measured(tiny_checkpoint):
    probe = LocalBackend(str(tiny_checkpoint), device="cpu", prefix_cache_gb=1)
    _, stats = answer(probe, first_turn(IMAGES["A"]), chat="probe")
    text = probe.model.config.text_config
    head = text.hidden_size // text.num_attention_heads
    held = stats.prompt_tokens + stats.new_tokens - 1  # the last token is never fed
    expected = 2 * text.num_hidden_layers * text.num_key_value_heads * head * held * 4
    assert probe.prefix_cache.bytes == expected  # float32 keys and values, measured
    probe.close()

    budget = int(expected * 2.5)  # room for two such conversations
    backend = LocalBackend(str(tiny_checkpoint), device="cpu", prefix_cache_gb=budget / 2**30)
    for number in range(12):
        answer(backend, first_turn(IMAGES["A"], f"Question {number}?"), chat=f"user{number}")
        assert 0 < backend.prefix_cache.bytes <= backend.prefix_cache.budget
    assert backend.prefix_cache.chats() == ["user10", "user11"]  # the most recent
    backend.close()

    too_small = LocalBackend(str(tiny_checkpoint), device="cpu", prefix_cache_gb=1000 / 2**30)
    conversation = first_turn(IMAGES["A"])
    text, _ = answer(too_small, conversation, chat="A")
    assert too_small.prefix_cache.bytes == 0  # bigger than the budget: not kept
    assert answer(too_small, follow(conversation, text, "And?"), chat="A")[1].reused_tokens == 0
    too_small.close()


def test_unloading_a_model_drops_its_entries(tiny_checkpoint):
    backend = LocalBackend(str(tiny_checkpoint), device="cpu", prefix_cache_gb=1)
    answer(backend, first_turn(IMAGES["A"]), chat="A")
    answer(backend, first_turn(IMAGES["B"]))
    assert len(backend.prefix_cache) == 2
    backend.unload(str(tiny_checkpoint))
    assert len(backend.prefix_cache) == 0 and backend.prefix_cache.bytes == 0
    backend.close()


def test_cache_bytes_counts_a_cropped_cache_by_what_it_holds():
    torch = pytest.importorskip("torch")
    from transformers import DynamicCache

    cache = DynamicCache()
    cache.update(torch.zeros(1, 2, 10, 4), torch.zeros(1, 2, 10, 4), 0)
    assert cache_bytes(cache) == 2 * 2 * 10 * 4 * 4
    cache.crop(-5)  # a view: the storage is still all there
    assert cache_bytes(cache) == 2 * 2 * 10 * 4 * 4


def test_another_chats_clear_during_an_answer_does_not_cost_this_chat_its_cache(cached):
    cached.clear_cache()
    conversation = first_turn(IMAGES["A"])
    long = GenerationSettings(max_new_tokens=300, temperature=0, max_tiles=6)
    with cached.stream(conversation, long, chat="A") as running:  # still running at the Clear
        text = next(piece for piece in running if piece)  # generating now
        cached.clear_cache("B")  # someone else's Clear
        text += "".join(running)
    assert cached.prefix_cache.chats() == ["A"]
    _, stats = answer(cached, follow(conversation, text, QUESTIONS[1]), chat="A")
    assert stats.reused_tokens > 0


def test_this_chats_clear_during_its_answer_keeps_nothing_of_it(cached):
    cached.clear_cache()
    long = GenerationSettings(max_new_tokens=300, temperature=0, max_tiles=6)
    with cached.stream(first_turn(IMAGES["A"]), long, chat="A") as running:
        next(piece for piece in running if piece)
        cached.clear_cache("A")  # the Clear was meant for this very conversation
        "".join(running)
    assert cached.prefix_cache.chats() == []
