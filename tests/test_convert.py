"""Original-format checkpoints converted into the native class: numbers, tokens, files, cache.

The four kinds (InternLM2 or Qwen2 language model, InternViT-300M- or 6B-like tower) are written
by tests/original_format.py with the real config fields and tokenizer files; its
`reference_logits` recomputes the original model from the original weights in plain torch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from model_backend import convert
from model_backend.convert import ConversionError, convert_checkpoint, read_original_config
from tests.conftest import EXAMPLES, REPO
from tests.original_format import (
    KINDS,
    TOKENIZER_CORPUS,
    TOKENS_PER_TILE,
    image_context_token_id,
    reference_logits,
    reference_token_ids,
    write_original_checkpoint,
)

TOLERANCE = 1e-4  # float32; the conversion measured about 1e-5 here


@pytest.fixture(scope="session")
def originals(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("original")
    return {
        kind: write_original_checkpoint(root / "-".join(kind), *kind, shards=2) for kind in KINDS
    }


@pytest.fixture(scope="session")
def converted(originals, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("converted")
    return {
        kind: convert_checkpoint(source, root / "-".join(kind), progress=False)
        for kind, source in originals.items()
    }


def image_prompt_ids(tokenizer, tiles: int):
    prompt = (
        "<|im_start|>user\n<img>"
        + "<IMG_CONTEXT>" * (tiles * TOKENS_PER_TILE)
        + "</img>\nWhat is in this picture? 这是什么？ 🐱<|im_end|>\n<|im_start|>assistant\n"
    )
    return tokenizer(prompt, return_tensors="pt").input_ids


def native_logits(folder, input_ids, pixel_values):
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(input_ids=input_ids, pixel_values=pixel_values).logits


def max_difference(source, folder) -> float:
    from transformers import AutoTokenizer

    input_ids = image_prompt_ids(AutoTokenizer.from_pretrained(folder), tiles=2)
    assert (input_ids == image_context_token_id(source)).sum() == 2 * TOKENS_PER_TILE
    pixel_values = torch.randn(2, 3, 448, 448, generator=torch.Generator().manual_seed(1))
    expected = reference_logits(source, input_ids, pixel_values)
    return (native_logits(folder, input_ids, pixel_values) - expected).abs().max().item()


@pytest.mark.parametrize("kind", KINDS, ids=["-".join(k) for k in KINDS])
def test_converted_logits_match_the_original_computation(originals, converted, kind):
    assert max_difference(originals[kind], converted[kind]) < TOLERANCE


def test_a_plain_qkv_split_of_internlm2_would_be_caught(originals, tmp_path, monkeypatch):
    """The test above can fail: split wqkv as [q; k; v] and the logits drift far away."""

    def plain_split(tensor, heads, kv_heads, head_dim):
        return tensor.split([heads * head_dim, kv_heads * head_dim, kv_heads * head_dim])

    monkeypatch.setattr(convert, "split_internlm2_wqkv", plain_split)
    source = originals[("internlm2", "300m")]
    wrong = convert_checkpoint(source, tmp_path / "wrong", progress=False)
    assert max_difference(source, wrong) > 100 * TOLERANCE


def test_the_6b_tower_gets_the_original_norm_default(originals, converted):
    source = originals[("qwen2", "6b")]
    assert "norm_type" not in json.loads((source / "config.json").read_text())["vision_config"]
    native = json.loads((converted[("qwen2", "6b")] / "config.json").read_text())
    assert native["vision_config"]["norm_type"] == "rms_norm"
    assert native["vision_config"]["use_qk_norm"] is True


@pytest.mark.parametrize("kind", KINDS, ids=["-".join(k) for k in KINDS])
def test_converted_folder_is_complete_without_remote_code(originals, converted, kind):
    from safetensors import safe_open
    from transformers import AutoProcessor

    source, folder = originals[kind], converted[kind]
    processor = AutoProcessor.from_pretrained(folder)  # no trust_remote_code anywhere
    tokenizer = processor.tokenizer
    config = json.loads((folder / "config.json").read_text())
    original_ids = json.loads((source / "tokenizer_config.json").read_text())
    by_content = {e["content"]: int(i) for i, e in original_ids["added_tokens_decoder"].items()}
    # Token ids come from the checkpoint's own tokenizer files.
    assert config["image_token_id"] == by_content["<IMG_CONTEXT>"]
    assert tokenizer.context_image_token_id == by_content["<IMG_CONTEXT>"]
    for content, token_id in by_content.items():
        assert tokenizer.convert_tokens_to_ids(content) == token_id
    generation = json.loads((folder / "generation_config.json").read_text())
    assert generation["eos_token_id"] == by_content["<|im_end|>"]
    # The output layer is its own weight, not tied to the embeddings.
    assert config["tie_word_embeddings"] is False
    assert config["text_config"]["tie_word_embeddings"] is False
    # Sharded like the source.
    source_index = json.loads((source / "model.safetensors.index.json").read_text())
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(source_index["weight_map"].values())
    for shard in set(index["weight_map"].values()):
        with safe_open(folder / shard, framework="pt") as reader:
            assert {n for n, s in index["weight_map"].items() if s == shard} == set(reader.keys())
    record = json.loads((folder / convert.CONVERSION_RECORD).read_text())
    assert record["template"] == "internvl2_5"


def test_internlm2_tokenizer_gives_the_original_ids(originals, converted):
    from sentencepiece import SentencePieceProcessor
    from transformers import AutoTokenizer

    source = originals[("internlm2", "300m")]
    tokenizer = AutoTokenizer.from_pretrained(converted[("internlm2", "300m")])
    spm = SentencePieceProcessor(model_file=str(source / "tokenizer.model"))
    assert len(TOKENIZER_CORPUS) > 20
    for text in TOKENIZER_CORPUS:
        ids = tokenizer(text).input_ids
        assert ids == reference_token_ids(source, text), text
        decoded = tokenizer.decode(ids[1:], skip_special_tokens=False)
        # SentencePiece itself reads a literal "▁" as a space; everything else comes back.
        assert decoded == (spm.decode(spm.encode(text)) if "▁" in text else text), text


def test_qwen2_tokenizer_is_kept(originals, converted):
    """The original code loads Qwen2Tokenizer from these files: same ids after conversion."""
    from transformers import AutoTokenizer, Qwen2Tokenizer

    source = originals[("qwen2", "300m")]
    original = Qwen2Tokenizer.from_pretrained(source)
    tokenizer = AutoTokenizer.from_pretrained(converted[("qwen2", "300m")])
    for text in TOKENIZER_CORPUS:
        assert tokenizer(text).input_ids == original(text).input_ids, text
        assert tokenizer.decode(tokenizer(text).input_ids) == text


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"ps_version": "v1"}, "ps_version"),
        ({"select_layer": -4}, "select_layer"),
        ({"template": "phi3-chat"}, "template"),
        ({"llm_config": {"architectures": ["Phi3ForCausalLM"]}}, "llm_config.architectures"),
        ({"vision_config": {"layer_norm_eps": 1e-5}}, "vision_config.layer_norm_eps"),
    ],
)
def test_what_the_native_class_cannot_represent_is_refused_by_name(originals, change, field):
    config = json.loads((originals[("qwen2", "6b")] / "config.json").read_text())
    for key, value in change.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) else value
    with pytest.raises(ConversionError) as error:
        read_original_config(config)
    assert field in str(error.value)


def test_original_ps_version_default_is_v1_and_refused():
    config = {"model_type": "internvl_chat", "llm_config": {"architectures": ["Qwen2ForCausalLM"]}}
    with pytest.raises(ConversionError, match="ps_version"):
        read_original_config(config)


def test_internvl2_8b_mpo_keeps_its_internlm2_chat_template(tmp_path):
    source = write_original_checkpoint(
        tmp_path / "mpo", "internlm2", "300m", shards=1, template="internlm2-chat"
    )
    folder = convert_checkpoint(source, tmp_path / "native", progress=False)
    assert json.loads((folder / convert.CONVERSION_RECORD).read_text())["template"] == (
        "internlm2-chat"
    )
    assert (folder / "model.safetensors").is_file()  # one file in, one file out


def test_command_line_converts_and_refuses_an_existing_folder(originals, tmp_path):
    source = originals[("qwen2", "300m")]
    command = [sys.executable, "-m", "model_backend.convert", str(source)]
    done = subprocess.run(
        [*command, str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "of disk" in done.stderr  # says what it needs before it starts
    assert (tmp_path / "out" / "config.json").is_file()
    again = subprocess.run(
        [*command, str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 2
    assert "not empty" in again.stderr and "Traceback" not in again.stderr


def test_conversion_refuses_when_the_disk_is_too_small(originals, tmp_path, monkeypatch):
    import shutil

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=1000))
    with pytest.raises(ConversionError, match="of disk"):
        convert_checkpoint(originals[("qwen2", "300m")], tmp_path / "out", progress=False)
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------
# The conversion cache behind `python app.py --model ORIGINAL`

KILL_AFTER_FIRST_SHARD = """
import os, signal, sys
from model_backend import convert, loading
real = convert.write_shard
def write_then_die(*args):
    real(*args)
    os.kill(os.getpid(), signal.SIGKILL)
convert.write_shard = write_then_die
loading.native_checkpoint(sys.argv[1], loading.read_model_config(sys.argv[1]), progress=False)
"""


def test_a_killed_conversion_leaves_no_usable_cache(originals, tmp_path, monkeypatch):
    from model_backend import loading

    monkeypatch.setenv("INTERNVL_CONVERTED_DIR", str(tmp_path / "cache"))
    source = str(originals[("qwen2", "300m")])
    killed = subprocess.run(
        [sys.executable, "-c", KILL_AFTER_FIRST_SHARD, source],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        timeout=300,
    )
    assert killed.returncode == -9

    def folders():
        return [p.name for p in (tmp_path / "cache").iterdir() if p.is_dir()]

    left = folders()
    assert left and all(".partial-" in name for name in left)  # nothing under a usable name
    path = loading.native_checkpoint(source, loading.read_model_config(source), progress=False)
    assert folders() == [os.path.basename(path)]  # the unfinished one was removed
    assert (tmp_path / "cache" / os.path.basename(path) / "config.json").is_file()


def test_app_serves_every_tab_on_an_original_checkpoint_and_converts_once(
    originals, tmp_path, monkeypatch, gradio_temp_dir
):
    from gradio_client import Client, handle_file

    from model_backend import loading
    from model_backend.local import LocalBackend
    from model_backend.prompt import INTERNVL2_SYSTEM_PROMPT
    from tests.conftest import launched

    monkeypatch.setenv("INTERNVL_CONVERTED_DIR", str(tmp_path / "cache"))
    source = write_original_checkpoint(
        tmp_path / "InternVL2-8B-MPO-like", "internlm2", "6b", template="internlm2-chat"
    )
    backend = LocalBackend(str(source), device="cpu")
    assert backend.info.model == str(source)
    assert backend.info.system_prompt == INTERNVL2_SYSTEM_PROMPT
    cat, video = str(EXAMPLES / "cat.jpg"), str(EXAMPLES / "bouncing_ball.mp4")
    with launched(backend) as url:
        client = Client(url, verbose=False)
        short = {"max_new_tokens": 6}
        answers = [
            client.predict(handle_file(cat), "What is it?", api_name="/image_chat", **short)[0],
            client.predict(
                [handle_file(cat), handle_file(cat)], "Same?", api_name="/multi_image_chat", **short
            )[0],
            client.predict(
                handle_file(video), "What happens?", num_frames=4, api_name="/video_chat",
                **short,
            )[0],
            client.predict(
                handle_file(cat), "the cat", mode="find", api_name="/grounding", **short
            )[0],
        ]  # fmt: skip
        client.close()
    assert all(isinstance(answer, str) and answer for answer in answers)

    # A second start finds the converted copy and does not convert again.
    def no_second_conversion(*args, **kwargs):
        raise AssertionError("converted twice")

    monkeypatch.setattr(loading, "convert_checkpoint", no_second_conversion)
    again = LocalBackend(str(source), device="cpu")
    assert again.model.config.image_token_id == backend.model.config.image_token_id


def test_internlm2_chat_tokens_stay_special_so_answers_hide_them(converted):
    from model_backend.local import LocalBackend

    backend = LocalBackend(str(converted[("internlm2", "300m")]), device="cpu")
    tokenizer = backend.tokenizer
    for token in ("<|im_end|>", "<|im_start|>", "<IMG_CONTEXT>"):
        assert tokenizer.convert_tokens_to_ids(token) in backend.hidden_ids, token
    assert tokenizer.convert_tokens_to_ids("<ref>") not in backend.hidden_ids  # grounding shows
    assert tokenizer.model_max_length == 8192  # from the original tokenizer_config.json


def test_two_starts_at_once_convert_once(originals, tmp_path, monkeypatch):
    import threading

    from model_backend import loading

    monkeypatch.setenv("INTERNVL_CONVERTED_DIR", str(tmp_path / "cache"))
    source = str(originals[("qwen2", "6b")])
    config = loading.read_model_config(source)
    conversions = []
    real = loading.convert_checkpoint

    def counted(*args, **kwargs):
        conversions.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(loading, "convert_checkpoint", counted)
    paths = []
    starts = [
        threading.Thread(target=lambda: paths.append(loading.native_checkpoint(source, config)))
        for _ in range(2)
    ]
    for start in starts:
        start.start()
    for start in starts:
        start.join()
    assert len(paths) == 2 and paths[0] == paths[1]
    assert len(conversions) == 1
    assert paths[0].endswith(f"-v{convert.CONVERTER_VERSION}")


def test_command_line_says_a_missing_folder_is_missing(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "model_backend.convert", "./no-such-folder", str(tmp_path / "o")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "does not exist" in done.stderr and "Traceback" not in done.stderr
