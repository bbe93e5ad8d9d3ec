"""The local transformers backend on the tiny random-weight checkpoint (real classes, CPU)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from model_backend.base import END, Conversation, GenerationSettings, Turn
from model_backend.errors import GenerationError, InputError, ModelLoadError
from model_backend.local import LocalBackend
from model_backend.prompt import DEFAULT_SYSTEM_PROMPT
from model_backend.streamer import TokenStreamer
from tests.conftest import EXAMPLES, REPO, generate_threads, wait_until

CAT = str(EXAMPLES / "cat.jpg")


def ask(question: str = "What is in the image?", images=(CAT,)) -> Conversation:
    return Conversation((Turn("user", question, tuple(images)),), DEFAULT_SYSTEM_PROMPT)


def test_tiny_checkpoint_loads_through_the_auto_classes(tiny_checkpoint, backend):
    from transformers import AutoProcessor

    assert type(backend.model).__name__ == "InternVLForConditionalGeneration"
    assert type(backend.tokenizer).__name__ == "Qwen2Tokenizer"
    assert backend.info.random_weights
    assert backend.tile_size == 448
    processor = AutoProcessor.from_pretrained(tiny_checkpoint)
    assert type(processor).__name__ == "InternVLProcessor"
    assert processor.image_seq_length == backend.tokens_per_tile


def test_prompt_holds_one_image_token_per_tile_token(backend):
    inputs = backend.prepare(ask(), GenerationSettings(max_tiles=12))
    tiles = inputs.pixel_values.shape[0]
    assert tiles == 7  # cat.jpg is 451x300: a 3x2 grid plus the thumbnail
    image_token = backend.model.config.image_token_id
    assert (inputs.input_ids == image_token).sum().item() == tiles * backend.tokens_per_tile


def test_streams_several_increments_and_reports_figures(backend):
    stream = backend.stream(ask(), GenerationSettings(max_new_tokens=48, temperature=0))
    pieces = [piece for piece in stream if piece]
    assert len(pieces) > 3
    stats = stream.stats
    assert stats.new_tokens == 48
    assert stats.prompt_tokens > 7 * backend.tokens_per_tile
    assert stats.time_to_first_token_s is not None and stats.time_to_first_token_s > 0
    assert stats.tokens_per_s and stats.tokens_per_s > 0
    assert "48 tokens" in stats.summary()
    assert not stats.stopped


def test_greedy_decoding_is_repeatable(backend):
    settings = GenerationSettings(max_new_tokens=24, temperature=0)
    first = "".join(backend.stream(ask(), settings))
    second = "".join(backend.stream(ask(), settings))
    assert first == second and first


def test_settings_reach_generate(backend, monkeypatch):
    seen = {}
    real_generate = backend.model.generate

    def spy(**kwargs):
        seen.update(kwargs)
        return real_generate(**kwargs)

    monkeypatch.setattr(backend.model, "generate", spy)
    backend.clear_cache()  # a fresh prompt: the images go in as pixels
    settings = GenerationSettings(
        temperature=0.7, top_p=0.8, top_k=20, repetition_penalty=1.3, max_new_tokens=9, max_tiles=2
    )
    stream = backend.stream(ask(), settings)
    list(stream)
    assert seen["do_sample"] is True
    assert seen["temperature"] == 0.7 and seen["top_p"] == 0.8 and seen["top_k"] == 20
    assert seen["repetition_penalty"] == 1.3
    assert seen["max_new_tokens"] == 9
    assert seen["pixel_values"].shape[0] == 3  # max_tiles=2 -> a 2x1 grid plus the thumbnail
    assert stream.stats.new_tokens <= 9

    list(backend.stream(ask(), GenerationSettings(temperature=0, max_new_tokens=4)))
    assert seen["do_sample"] is False


def test_stop_ends_the_generate_thread(backend):
    stream = backend.stream(ask(), GenerationSettings(max_new_tokens=5000, temperature=0.5))
    received = 0
    for piece in stream:
        received += bool(piece)
        if received == 3:
            break
    assert generate_threads(), "generation should still be running before Stop"
    stream.close()
    assert not generate_threads(), "close() must join the generate thread"
    assert stream.stats.stopped
    assert stream.stats.new_tokens < 5000


def test_cancel_from_another_thread_stops_within_steps(backend):
    stream = backend.stream(ask(), GenerationSettings(max_new_tokens=5000, temperature=0.5))
    iterator = iter(stream)
    next(iterator)
    stream.cancel()  # what the Stop button does, from another thread
    rest = list(iterator)  # the stream ends by itself
    assert len(rest) < 100
    assert wait_until(lambda: not generate_threads(), timeout=10)
    assert stream.stats.stopped


def stream_tokens(backend, ids) -> list[str]:
    """Feed token ids one by one through the backend's streamer, as generate() does."""
    streamer = TokenStreamer(backend.tokenizer, backend.hidden_ids)
    streamer.put(torch.tensor([[1, 2]]))  # the prompt, which generate() hands over first
    for token in ids:
        streamer.put(token.reshape(1))
    streamer.end()
    streamer.queue.put(END)
    pieces = []
    while (piece := streamer.queue.get()) is not END:
        pieces.append(piece)
    return pieces


def test_grounding_tags_survive_decoding(backend):
    tokenizer = backend.tokenizer
    answer = "The <ref>cat</ref><box>[[10, 20, 300, 400]]</box> sits.<|im_end|>"
    ids = tokenizer(answer, return_tensors="pt").input_ids[0]
    assert tokenizer.convert_tokens_to_ids("<ref>") in ids.tolist()  # a special token
    pieces = stream_tokens(backend, ids)
    assert "".join(pieces) == "The <ref>cat</ref><box>[[10, 20, 300, 400]]</box> sits."
    assert len(pieces) > 1


def test_multibyte_characters_are_not_split(backend):
    tokenizer = backend.tokenizer
    ids = tokenizer("猫 café", return_tensors="pt").input_ids[0]
    pieces = stream_tokens(backend, ids)
    assert "".join(pieces) == "猫 café"
    assert all("\ufffd" not in piece for piece in pieces)


def test_follow_up_does_not_decode_the_image_again(backend, monkeypatch):
    import model_backend.media as media

    calls = []
    real_load = media.load_image
    monkeypatch.setattr(media, "load_image", lambda path: calls.append(path) or real_load(path))
    media.PIXEL_CACHE.clear()
    conversation = ask()
    backend.prepare(conversation, GenerationSettings())
    follow_up = Conversation(
        (*conversation.turns, Turn("assistant", "A cat."), Turn("user", "What colour?")),
        DEFAULT_SYSTEM_PROMPT,
    )
    backend.prepare(follow_up, GenerationSettings())
    assert calls == [CAT]


def test_bad_input_is_refused_with_a_message(backend, tmp_path):
    with pytest.raises(InputError, match="type a question"):
        backend.stream(ask("   "), GenerationSettings())
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("hello")
    with pytest.raises(InputError, match="not an image"):
        backend.stream(ask(images=(str(not_an_image),)), GenerationSettings())
    with pytest.raises(InputError, match="max_tiles"):
        backend.stream(ask(), GenerationSettings(max_tiles=0))


def test_too_long_for_the_context_says_the_numbers(backend, monkeypatch):
    monkeypatch.setattr(backend.pool.get(backend.info.model), "context_length", 100)
    with pytest.raises(
        InputError, match=r"needs \d+ tokens \(112 of them for images and frames\).*at most 100"
    ):
        backend.stream(ask(), GenerationSettings(max_tiles=12))


def test_out_of_memory_becomes_a_clear_error_and_the_backend_keeps_working(backend, monkeypatch):
    def out_of_memory(**kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    with monkeypatch.context() as patch:
        patch.setattr(backend.model, "generate", out_of_memory)
        with pytest.raises(GenerationError, match=r"ran out of memory.*Max tiles"):
            list(backend.stream(ask(), GenerationSettings(max_new_tokens=4)))
    assert "".join(backend.stream(ask(), GenerationSettings(max_new_tokens=4)))


def test_an_original_format_checkpoint_that_cannot_be_converted_says_why(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "internvl_chat"}))
    with pytest.raises(ModelLoadError) as error:
        LocalBackend(str(tmp_path))
    assert "llm_config.architectures" in str(error.value)


def test_a_checkpoint_of_another_family_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llava"}))
    with pytest.raises(ModelLoadError) as error:
        LocalBackend(str(tmp_path))
    assert "not an InternVL checkpoint" in str(error.value)
    assert "converted on load" in str(error.value)


def test_app_exits_2_with_one_paragraph_when_the_model_cannot_be_fetched(tmp_path):
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "app.py", "--model", "OpenGVLab/InternVL2_5-2B-MPO-hf"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    message = result.stderr.strip()
    assert "Traceback" not in message
    assert "--model PATH" in message
    assert "python -m model_backend.tiny" in message
    assert len(message.split("\n\n")) == 1  # one paragraph


def test_each_request_names_its_model_and_a_bad_choice_disturbs_nothing(tiny_checkpoint, tmp_path):
    from model_backend.tiny import write_tiny_checkpoint

    other = str(write_tiny_checkpoint(tmp_path / "other", seed=1))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"model_type": "internvl"}))
    default = str(tiny_checkpoint)
    backend = LocalBackend(default, device="cpu", models=[default, other, str(broken)])
    settings = GenerationSettings(max_new_tokens=8, temperature=0)
    first = "".join(backend.stream(ask(), settings))
    info = backend.ensure_model(other)
    assert info.model == other and info.system_prompt == DEFAULT_SYSTEM_PROMPT
    assert backend.info.model == default  # what new sessions start with
    assert "".join(backend.stream(ask(), settings, model=other)) != first  # other weights
    with pytest.raises(InputError, match=r"could not be loaded.*Still answering with"):
        backend.ensure_model(str(broken))
    assert "".join(backend.stream(ask(), settings)) == first  # still serving, both models
    assert "".join(backend.stream(ask(), settings, model=other))
    with pytest.raises(InputError, match="not one of this demo's models"):
        backend.ensure_model("someone/else")
    backend.close()


def test_a_follow_up_reuses_the_previous_answers_cache_with_the_same_answer(backend):
    """The image tokens of turn 1 are not computed again for turn 2; greedy answers are the
    same as without reuse."""
    settings = GenerationSettings(max_new_tokens=24, temperature=0)
    backend.clear_cache()
    first = backend.stream(ask(), settings)
    answer = "".join(first)
    assert first.stats.reused_tokens == 0
    follow_up = Conversation(
        (*ask().turns, Turn("assistant", answer), Turn("user", "And the colours?")),
        DEFAULT_SYSTEM_PROMPT,
    )
    reused = backend.stream(follow_up, settings)
    with_reuse = "".join(reused)
    images = 7 * backend.tokens_per_tile
    assert reused.stats.reused_tokens > images  # the whole first turn, images included
    backend.clear_cache()
    fresh = backend.stream(follow_up, settings)
    assert "".join(fresh) == with_reuse
    assert fresh.stats.reused_tokens == 0


def test_no_reuse_when_the_images_differ(backend):
    settings = GenerationSettings(max_new_tokens=8, temperature=0)
    backend.clear_cache()
    list(backend.stream(ask(), settings))
    other = backend.stream(ask(images=(str(EXAMPLES / "coffee.jpg"),)), settings)
    assert "".join(other)
    # Same tile count, so the same token ids: only the pixels tell the two images apart.
    assert other.stats.reused_tokens == 0


def test_a_stream_closed_before_it_is_read_leaves_nothing_behind(backend):
    """A request cancelled while it waited for the model closes its stream unread."""
    for _ in range(3):
        backend.stream(ask(), GenerationSettings(max_new_tokens=4)).close()
    assert backend._stop_events == {}
    assert "".join(backend.stream(ask(), GenerationSettings(max_new_tokens=4)))
    assert backend._stop_events == {}
