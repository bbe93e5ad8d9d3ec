"""Self-checks of the original-format checkpoint fixtures (tests/original_format.py)."""

from __future__ import annotations

import json

import pytest
import sentencepiece as spm
import torch
from safetensors import safe_open

from tests.original_format import (
    INTERNLM2_CHAT_TOKENS,
    INTERNLM2_RAW_CHAT_PIECES,
    INTERNVL_TOKENS,
    KINDS,
    TOKENIZER_CORPUS,
    TOKENS_PER_TILE,
    UNSEEN_CHARACTERS,
    _training_corpus,
    added_tokens,
    image_context_token_id,
    load_original_state_dict,
    reference_logits,
    reference_token_ids,
    write_original_checkpoint,
)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("original-format")
    return {kind: write_original_checkpoint(root / "-".join(kind), *kind) for kind in KINDS}


def _pixels(tiles: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(tiles, 3, 448, 448, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind", KINDS, ids="-".join)
def test_config_is_the_original_layout(checkpoints, kind):
    directory = checkpoints[kind]
    config = json.loads((directory / "config.json").read_text())
    assert config["model_type"] == "internvl_chat"
    assert config["architectures"] == ["InternVLChatModel"]
    assert (config["ps_version"], config["select_layer"], config["downsample_ratio"]) == (
        "v2",
        -1,
        0.5,
    )
    vision = config["vision_config"]
    if kind[1] == "6b":  # the real InternViT-6B configs omit norm_type (original default rms_norm)
        assert "norm_type" not in vision
        assert (vision["qk_normalization"], vision["qkv_bias"]) == (True, False)
    else:
        assert (vision["norm_type"], vision["qk_normalization"], vision["qkv_bias"]) == (
            "layer_norm",
            False,
            True,
        )
    tokens = added_tokens(directory)
    llm = config["llm_config"]
    assert llm["vocab_size"] == max(tokens.values()) + 1
    first = tokens["<img>"]
    assert [tokens[t] for t in INTERNVL_TOKENS] == list(range(first, first + len(INTERNVL_TOKENS)))
    assert not (directory / "preprocessor_config.json").exists()
    if kind[0] == "internlm2":
        sp = spm.SentencePieceProcessor(model_file=str(directory / "tokenizer.model"))
        assert first == sp.get_piece_size()  # InternVL's tokens come right after the sp vocabulary
        # The chat tokens are the last six sp pieces, raw-named as in the real tokenizer.model.
        chat_ids = [tokens[t] for t in INTERNLM2_CHAT_TOKENS]
        assert chat_ids == list(range(first - 6, first))
        assert [sp.id_to_piece(i) for i in chat_ids] == INTERNLM2_RAW_CHAT_PIECES
        assert (llm["bias"], llm["num_key_value_heads"]) == (False, 2)
    else:
        assert first == len(json.loads((directory / "vocab.json").read_text())) + 3
        assert llm["eos_token_id"] == tokens["<|im_end|>"]


@pytest.mark.parametrize("shards", [1, 3])
def test_index_covers_every_tensor(tmp_path, shards):
    directory = write_original_checkpoint(tmp_path, "internlm2", "6b", shards=shards)
    files = sorted(p.name for p in directory.glob("model*.safetensors"))
    if shards == 1:
        assert files == ["model.safetensors"]
        assert not (directory / "model.safetensors.index.json").exists()
        return
    assert files == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    index = json.loads((directory / "model.safetensors.index.json").read_text())
    stored, total = {}, 0
    for name in files:
        with safe_open(str(directory / name), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                stored[key] = name
                tensor = f.get_tensor(key)
                total += tensor.numel() * tensor.element_size()
    assert stored == index["weight_map"]
    assert index["metadata"]["total_size"] == total
    keys = set(stored)
    assert "language_model.model.layers.1.attention.wqkv.weight" in keys
    assert "vision_model.encoder.layers.0.attn.q_norm.weight" in keys
    assert "vision_model.encoder.layers.0.attn.qkv.bias" not in keys  # qkv_bias false
    assert "vision_model.encoder.layers.0.norm1.bias" not in keys  # rms_norm has no bias
    weights = load_original_state_dict(directory)
    assert not torch.equal(
        weights["language_model.output.weight"],
        weights["language_model.model.tok_embeddings.weight"],
    )


@pytest.mark.parametrize("kind", [("internlm2", "6b"), ("qwen2", "300m")], ids="-".join)
def test_reference_logits(checkpoints, kind):
    directory = checkpoints[kind]
    image = image_context_token_id(directory)
    prefix = [1, 5, 6]
    input_ids = torch.tensor([[*prefix, *[image] * (2 * TOKENS_PER_TILE), 7, 8, 9]])
    vocab = json.loads((directory / "config.json").read_text())["llm_config"]["vocab_size"]
    pixels = _pixels(2)
    logits = reference_logits(directory, input_ids, pixels)
    assert logits.shape == (1, input_ids.shape[1], vocab)
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
    assert logits.std() > 0.5  # the random weights are scaled so that logits vary
    assert torch.equal(logits, reference_logits(directory, input_ids, pixels))

    changed = pixels.clone()
    changed[1] = _pixels(1, seed=7)[0]  # change the second tile only
    other = reference_logits(directory, input_ids, changed)
    second_tile = len(prefix) + TOKENS_PER_TILE
    # Causal: nothing before the second tile's tokens moves; everything from there on does.
    assert torch.equal(other[:, :second_tile], logits[:, :second_tile])
    assert (other[0, second_tile:] - logits[0, second_tile:]).abs().amax(-1).min() > 1e-3

    with pytest.raises(ValueError, match="IMG_CONTEXT"):
        reference_logits(directory, input_ids, _pixels(1))


def test_reference_token_ids(checkpoints):
    directory = checkpoints[("internlm2", "300m")]
    sp = spm.SentencePieceProcessor(model_file=str(directory / "tokenizer.model"))
    tokens = added_tokens(directory)
    corpus = "".join(_training_corpus())
    assert not any(char in corpus for char in UNSEEN_CHARACTERS)

    assert reference_token_ids(directory, "") == [1]
    ids = reference_token_ids(directory, "Ω")
    assert ids[0] == 1
    assert [sp.id_to_piece(i) for i in ids[1:]] == ["<0xCE>", "<0xA9>"]  # byte fallback
    ids = reference_token_ids(directory, "<|im_start|>user\n<img><IMG_CONTEXT></img>")
    assert ids[:2] == [1, tokens["<|im_start|>"]]
    assert ids[-3:] == [tokens["<img>"], tokens["<IMG_CONTEXT>"], tokens["</img>"]]
    # No dummy prefix and no whitespace collapsing (as in the real InternLM2 tokenizer.model).
    assert sp.decode(reference_token_ids(directory, "a  b")[1:]) == "a  b"
    assert not sp.id_to_piece(reference_token_ids(directory, "hello")[1]).startswith("\u2581")
    for text in TOKENIZER_CORPUS:
        ids = reference_token_ids(directory, text)
        assert ids[0] == 1 and all(0 <= i < max(tokens.values()) + 1 for i in ids)
