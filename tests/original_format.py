"""Tiny InternVL 2.5 checkpoints in the ORIGINAL remote-code format, and an independent reference.

Test fixtures for the conversion of original-format checkpoints (`model_type: internvl_chat`,
`trust_remote_code`) into the native transformers format:

- `write_original_checkpoint` writes a tiny random-weight checkpoint laid out like the Hub repos
  OpenGVLab/InternVL2_5-{1B,2B,26B,38B}: `config.json` with the original field names, the original
  tensor names in sharded safetensors, and the tokenizer files those repos ship (a SentencePiece
  `tokenizer.model` for InternLM2, `vocab.json` + `merges.txt` for Qwen2), only tiny.
- `reference_logits` is a plain-torch float32 re-implementation of what the original
  `InternVLChatModel` computes, read straight from those files. It shares no code with transformers'
  model classes, so a converted checkpoint can be checked against it.
- `reference_token_ids` is what the original slow `InternLM2Tokenizer` returns for a text.

Nothing here downloads anything or imports the checkpoint's remote code (the `.py` files written
into the checkpoint are placeholders that raise ImportError).
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import math
import random
import re
from pathlib import Path

import torch
import torch.nn.functional as F

# (language model, vision encoder): 2B-like, 26B-like, 1B-like and 38B-like.
KINDS = [("internlm2", "300m"), ("internlm2", "6b"), ("qwen2", "300m"), ("qwen2", "6b")]

TILE_SIZE = 448  # the real tile size
PATCH_SIZE = 56  # 8x8 patches per tile
TOKENS_PER_TILE = (TILE_SIZE // PATCH_SIZE) ** 2 // 4  # 16 after the 0.5 pixel shuffle

# InternVL's own tokens, appended right after the language model's vocabulary, in this order.
INTERNVL_TOKENS = [
    "<img>",
    "</img>",
    "<IMG_CONTEXT>",
    "<quad>",
    "</quad>",
    "<ref>",
    "</ref>",
    "<box>",
    "</box>",
]
IMG_CONTEXT = "<IMG_CONTEXT>"

# InternLM2's chat tokens, the last six ids of its SentencePiece vocabulary (92538..92543).
INTERNLM2_CHAT_TOKENS = [
    "<|plugin|>",
    "<|interpreter|>",
    "<|action_end|>",
    "<|action_start|>",
    "<|im_end|>",
    "<|im_start|>",
]
# What the real tokenizer.model holds at those ids: raw spare pieces, not the chat names. The names
# exist only in tokenizer_config.json's added_tokens_decoder (llama.cpp's InternLM2 converter
# special-cases pieces starting with "[UNUSED", and InternLM-XComposer2 prompts are written with
# "[UNUSED_TOKEN_146]user\n"). Two more spare pieces come before them, as in the real vocabulary.
INTERNLM2_RAW_CHAT_PIECES = [f"[UNUSED_TOKEN_{n}]" for n in range(141, 147)]
INTERNLM2_SPARE_PIECES = ["[UNUSED_TOKEN_139]", "[UNUSED_TOKEN_140]"]

# Qwen2's added tokens before InternVL's (the real Qwen2.5 has 19 more between these and <img>).
QWEN2_CHAT_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Qwen2's pre-tokenizer split (from its tokenizer.json), used to train the tiny byte-level BPE.
QWEN2_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

LLM_SIZES = {
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,  # GQA on purpose: the packed wqkv layout only matters then
}
VISION_SIZES = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
}

# Characters that never occur in the tokenizer training corpus: they must go through byte fallback.
UNSEEN_CHARACTERS = "ΩЖ한ภ𝄞€ÿ"

# Varied texts to compare tokenizers on (InternVL's and InternLM2's special tokens inside text,
# whitespace runs, unseen characters, ZWJ emoji sequences, the empty string).
TOKENIZER_CORPUS = [
    "",
    "Hello, world!",
    " leading space",
    "trailing space ",
    "   three leading spaces and two trailing  ",
    "a  b   c    d     e",
    "x" + " " * 17 + "y",
    "   ",
    "tab\tseparated\t\tcolumns\t",
    "line one\nline two\n\n\nline five\r\nwindows line\n",
    "\nstarts with a newline",
    "你好，世界！这是一个测试。",
    "书生·万象 InternVL 2.5 是一个多模态大模型。",
    "Mixed 中文 and English, 数字 12345 和 emoji 😀。",
    "3.14159 2024-12-31 1234567890 0x1F 1e-6 -42",
    "def area(r):\n    return 3.14159 * r ** 2  # circle\n",
    "for (int i = 0; i < n; i++) {\n\tsum += a[i];\n}",
    '{"key": [1, 2, 3], "ok": true, "name": "value"}',
    "😀🎉👍 emoji run",
    "family 👨\u200d👩\u200d👧\u200d👦, flag 🏳\ufe0f\u200d🌈, coder 👩🏽\u200d💻",
    "Ωμέγα Жизнь 한국어 ภาษาไทย 𝄞 € ÿ",
    "non\u00a0breaking and ideographic\u3000space",
    "under\u2581score",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>system\n你是书生·万象，英文名是InternVL。<|im_end|>\n",
    "<img><IMG_CONTEXT><IMG_CONTEXT><IMG_CONTEXT></img>\nDescribe the image.",
    "Image-1: <img><IMG_CONTEXT></img>\nImage-2: <img><IMG_CONTEXT></img>\ncompare",
    "<ref>the red cup</ref><box>[[10, 20, 300, 400]]</box> and <quad>(1,2),(3,4)</quad>",
    "Please find <ref>a cat</ref>",
    "<s>a bos inside</s> and an <unk> too",
    "<|plugin|><|interpreter|><|action_start|>call()<|action_end|>",
    "near misses: <im_start> <|im_start| <IMG_CONTEXT > <box </box",
    "<|im_end|><|im_end|>  <|im_start|>   spaced specials",
]


# ----------------------------------------------------------------------------------------------
# Tokenizers
# ----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _training_corpus() -> tuple[str, ...]:
    """A small, varied, deterministic corpus: English, Chinese, digits, code, emoji, whitespace."""
    rng = random.Random(1234)
    english = [
        "The quick brown fox jumps over the lazy dog.",
        "Please describe this image in detail.",
        "What is the color of the car on the left?",
        "There are three people standing near the window.",
        "The chart shows the revenue for each quarter of the year.",
        "Answer the question with a single word or phrase.",
        "A small cat is sleeping on a wooden table.",
        "Find the red cup and draw a box around it.",
        "Compare the first image with the second one.",
        "This receipt lists bread, milk, coffee and tea.",
    ]
    chinese = [
        "你好，请描述这张图片。",
        "这是一只猫在桌子上睡觉。",
        "书生·万象是一个多模态大模型。",
        "图中有三个人站在窗户旁边。",
        "请用一个词回答问题。",
        "左边的汽车是什么颜色？",
        "这个图表显示了每个季度的收入。",
    ]
    code = [
        "def area(r):\n    return 3.14159 * r ** 2\n",
        "for (int i = 0; i < n; i++) {\n\tsum += a[i];\n}\n",
        "import torch\nx = torch.zeros(2, 3)\nprint(x.shape)\n",
        '{"key": [1, 2, 3], "ok": true}',
        "if x > 0:\n        y = x\n    else:\n        y = -x\n",
        "SELECT name, count(*) FROM items GROUP BY name;",
        '<div class="box">[[10, 20, 30, 40]]</div>',
    ]
    emoji = ["😀", "🎉", "👍", "🐱", "🚀", "❤", "✨"]
    spaces = [" ", "  ", "   ", "    ", "\t", "\n", "\n\n", " \n", "\t\t", "        "]
    lines = []
    for _ in range(1200):
        parts = []
        for _ in range(rng.randint(1, 4)):
            pick = rng.random()
            if pick < 0.35:
                parts.append(rng.choice(english))
            elif pick < 0.6:
                parts.append(rng.choice(chinese))
            elif pick < 0.75:
                parts.append(rng.choice(code))
            elif pick < 0.9:
                parts.append(f"{rng.randint(0, 10 ** rng.randint(1, 8))}.{rng.randint(0, 99)}")
            else:
                parts.append("".join(rng.choice(emoji) for _ in range(rng.randint(1, 3))))
            parts.append(rng.choice(spaces))
        line = "".join(parts)
        if rng.random() < 0.2:
            line = rng.choice(spaces) + line
        lines.append(line)
    return tuple(lines)


@functools.lru_cache(maxsize=2)
def _sentencepiece_model(named_chat_pieces: bool) -> bytes:
    """The tiny InternLM2-like tokenizer.model (serialized ModelProto).

    Trainer and normalizer settings mirror the real InternLM2 tokenizer.model:
    - BPE with byte_fallback and split_digits; unk 0 `<unk>`, bos 1 `<s>`, eos 2 `</s>`, no pad.
    - add_dummy_prefix=False: no "▁" is put before a text. Evidence: transformers' InternVL
      conversion script (src/transformers/models/internvl/convert_internvl_weights_to_hf.py)
      built the native InternLM2 tokenizer with `pre_tokenizer.prepend_scheme = "never"` to match
      the original; and ids from the original slow tokenizer in xtuner's InternVL training
      samples, `[1, 92543, 1008, 364, -200, 364, 6901, ...]` for "<|im_start|>user\n<image>\n
      Render ...", where the chunk after <image> (encoded on its own) starts with the same "\n"
      id 364 as the "\n" inside "user\n": with a dummy prefix it would start with "▁".
    - remove_extra_whitespaces=False, normalization rule "identity", allow_whitespace_only_pieces:
      whitespace runs and characters are kept as they are (InternLM2 is also a code model, and
      its vocabulary was built from a byte-level one). Inferred, not read from the real file: no
      public dump of its normalizer_spec was found.
    - The six chat tokens are USER_DEFINED pieces at the very end of the vocabulary; in the real
      file they are named "[UNUSED_TOKEN_141]".."[UNUSED_TOKEN_146]" (see INTERNLM2_RAW_CHAT_PIECES)
      and only tokenizer_config.json calls them <|plugin|>..<|im_start|>. `named_chat_pieces=True`
      names the pieces after the chat tokens instead.
    """
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as sp_pb2

    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_training_corpus()),
        model_writer=buffer,
        model_type="bpe",
        vocab_size=640,
        hard_vocab_limit=False,
        character_coverage=1.0,
        byte_fallback=True,
        split_digits=True,
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        allow_whitespace_only_pieces=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        unk_piece="<unk>",
        bos_piece="<s>",
        eos_piece="</s>",
        num_threads=1,
        minloglevel=2,
    )
    proto = sp_pb2.ModelProto()
    proto.ParseFromString(buffer.getvalue())
    chat = INTERNLM2_CHAT_TOKENS if named_chat_pieces else INTERNLM2_RAW_CHAT_PIECES
    for name in INTERNLM2_SPARE_PIECES + chat:
        piece = proto.pieces.add()
        piece.piece = name
        piece.score = 0.0
        piece.type = sp_pb2.ModelProto.SentencePiece.USER_DEFINED
    return proto.SerializeToString()


@functools.lru_cache(maxsize=1)
def _byte_level_bpe() -> tuple[str, str]:
    """The tiny Qwen2-like byte-level BPE: (vocab.json text, merges.txt text)."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=420,
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_training_corpus(), trainer)
    model = json.loads(tokenizer.to_str())["model"]
    vocab = dict(sorted(model["vocab"].items(), key=lambda item: item[1]))
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    vocab_text = json.dumps(vocab, ensure_ascii=False, indent=2) + "\n"
    merges_text = "#version: 0.2\n" + "".join(f"{merge}\n" for merge in merges)
    return vocab_text, merges_text


def _added_token(content: str, special: bool = True) -> dict:
    return {
        "content": content,
        "lstrip": False,
        "normalized": False,
        "rstrip": False,
        "single_word": False,
        "special": special,
    }


def _token_map_entry(content: str) -> dict:
    entry = _added_token(content)
    del entry["special"]
    return entry


_REMOTE_CODE_PLACEHOLDER = (
    'raise ImportError("placeholder for the original remote code; nothing may import it")\n'
)


def _write_internlm2_tokenizer(directory: Path, named_chat_pieces: bool) -> dict[str, int]:
    """tokenizer.model + tokenizer_config.json + special_tokens_map.json; returns token ids."""
    import sentencepiece as spm

    model = _sentencepiece_model(named_chat_pieces)
    (directory / "tokenizer.model").write_bytes(model)
    sp_size = spm.SentencePieceProcessor(model_proto=model).get_piece_size()
    ids = {"<unk>": 0, "<s>": 1, "</s>": 2}
    ids.update({tok: sp_size - 6 + i for i, tok in enumerate(INTERNLM2_CHAT_TOKENS)})
    ids.update({tok: sp_size + i for i, tok in enumerate(INTERNVL_TOKENS)})
    additional = [*reversed(INTERNLM2_CHAT_TOKENS), *INTERNVL_TOKENS]
    config = {
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": {str(i): _added_token(tok) for tok, i in ids.items()},
        "additional_special_tokens": additional,
        "auto_map": {"AutoTokenizer": ["tokenization_internlm2.InternLM2Tokenizer", None]},
        "bos_token": "<s>",
        "clean_up_tokenization_spaces": False,
        "decode_with_prefix_space": False,
        "eos_token": "</s>",
        "model_max_length": 8192,
        "pad_token": "</s>",
        "sp_model_kwargs": None,
        "tokenizer_class": "InternLM2Tokenizer",
        "unk_token": "<unk>",
    }
    special_map = {
        "additional_special_tokens": additional,
        "bos_token": _token_map_entry("<s>"),
        "eos_token": _token_map_entry("</s>"),
        "pad_token": _token_map_entry("</s>"),
        "unk_token": _token_map_entry("<unk>"),
    }
    _write_json(directory / "tokenizer_config.json", config)
    _write_json(directory / "special_tokens_map.json", special_map)
    (directory / "tokenization_internlm2.py").write_text(_REMOTE_CODE_PLACEHOLDER)
    ids["__size__"] = sp_size + len(INTERNVL_TOKENS)
    return ids


def _write_qwen2_tokenizer(directory: Path) -> dict[str, int]:
    """vocab.json + merges.txt + tokenizer_config.json + special_tokens_map.json; returns ids."""
    vocab_text, merges_text = _byte_level_bpe()
    (directory / "vocab.json").write_text(vocab_text, encoding="utf-8")
    (directory / "merges.txt").write_text(merges_text, encoding="utf-8")
    bpe_size = len(json.loads(vocab_text))
    added = QWEN2_CHAT_TOKENS + INTERNVL_TOKENS
    ids = {tok: bpe_size + i for i, tok in enumerate(added)}
    additional = [*QWEN2_CHAT_TOKENS[1:], *INTERNVL_TOKENS]
    config = {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": {str(i): _added_token(tok) for tok, i in ids.items()},
        "additional_special_tokens": additional,
        "bos_token": None,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 8192,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    special_map = {
        "additional_special_tokens": additional,
        "eos_token": _token_map_entry("<|im_end|>"),
        "pad_token": _token_map_entry("<|endoftext|>"),
    }
    _write_json(directory / "tokenizer_config.json", config)
    _write_json(directory / "special_tokens_map.json", special_map)
    ids["__size__"] = bpe_size + len(added)
    return ids


# ----------------------------------------------------------------------------------------------
# Config and weights
# ----------------------------------------------------------------------------------------------


def _llm_config(llm: str, ids: dict[str, int]) -> dict:
    if llm == "internlm2":
        return {
            "architectures": ["InternLM2ForCausalLM"],
            "attn_implementation": "eager",
            "auto_map": {
                "AutoConfig": "configuration_internlm2.InternLM2Config",
                "AutoModel": "modeling_internlm2.InternLM2ForCausalLM",
                "AutoModelForCausalLM": "modeling_internlm2.InternLM2ForCausalLM",
            },
            "bias": False,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "hidden_act": "silu",
            **LLM_SIZES,
            "initializer_range": 0.02,
            "max_position_embeddings": 32768,
            "model_type": "internlm2",
            "pad_token_id": 2,
            "rms_norm_eps": 1e-05,
            "rope_scaling": {"factor": 2.0, "type": "dynamic"},
            "rope_theta": 1000000,
            "tie_word_embeddings": False,
            "torch_dtype": "float32",
            "use_cache": True,
            "vocab_size": ids["__size__"],
        }
    if llm == "qwen2":
        return {
            "architectures": ["Qwen2ForCausalLM"],
            "attention_dropout": 0.0,
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "hidden_act": "silu",
            **LLM_SIZES,
            "initializer_range": 0.02,
            "max_position_embeddings": 32768,
            "max_window_layers": LLM_SIZES["num_hidden_layers"],
            "model_type": "qwen2",
            "rms_norm_eps": 1e-06,
            "rope_theta": 1000000.0,
            "sliding_window": 32768,
            "tie_word_embeddings": False,
            "torch_dtype": "float32",
            "use_cache": True,
            "use_sliding_window": False,
            "vocab_size": ids["__size__"],
        }
    raise ValueError(f"unknown language model kind {llm!r} (expected internlm2 or qwen2)")


def _vision_config(vision: str) -> dict:
    common = {
        "architectures": ["InternVisionModel"],
        "attention_dropout": 0.0,
        "drop_path_rate": 0.0,
        "dropout": 0.0,
        "hidden_act": "gelu",
        **VISION_SIZES,
        "image_size": TILE_SIZE,
        "initializer_factor": 0.1,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-06,
        "model_type": "intern_vit_6b",
        "num_channels": 3,
        "patch_size": PATCH_SIZE,
        "torch_dtype": "float32",
        "use_flash_attn": False,
    }
    if vision == "300m":  # like InternViT-300M-448px-V2_5
        return {**common, "norm_type": "layer_norm", "qk_normalization": False, "qkv_bias": True}
    if vision == "6b":  # like InternViT-6B-448px-V2_5: NO norm_type key (original default rms_norm)
        return {**common, "qk_normalization": True, "qkv_bias": False}
    raise ValueError(f"unknown vision kind {vision!r} (expected 300m or 6b)")


def _chat_config(llm_config: dict, vision_config: dict, template: str) -> dict:
    return {
        "architectures": ["InternVLChatModel"],
        "auto_map": {
            "AutoConfig": "configuration_internvl_chat.InternVLChatConfig",
            "AutoModel": "modeling_internvl_chat.InternVLChatModel",
            "AutoModelForCausalLM": "modeling_internvl_chat.InternVLChatModel",
        },
        "downsample_ratio": 0.5,
        "dynamic_image_size": True,
        "force_image_size": TILE_SIZE,
        "llm_config": llm_config,
        "max_dynamic_patch": 12,
        "min_dynamic_patch": 1,
        "model_type": "internvl_chat",
        "ps_version": "v2",
        "select_layer": -1,
        "template": template,
        "torch_dtype": "float32",
        "transformers_version": "4.37.2",
        "use_backbone_lora": 0,
        "use_llm_lora": 0,
        "use_thumbnail": True,
        "vision_config": vision_config,
    }


class _Random:
    """Seeded random tensors with scales that keep activations O(1) and make logits vary."""

    def __init__(self, seed: int):
        self.generator = torch.Generator().manual_seed(seed)

    def normal(self, *shape: int, std: float = 1.0, mean: float = 0.0) -> torch.Tensor:
        return torch.randn(*shape, generator=self.generator) * std + mean

    def linear(self, out_features: int, in_features: int, gain: float = 1.0) -> torch.Tensor:
        return self.normal(out_features, in_features, std=gain / math.sqrt(in_features))

    def bias(self, size: int) -> torch.Tensor:
        return self.normal(size, std=0.1)

    def norm_weight(self, size: int) -> torch.Tensor:
        return self.normal(size, std=0.1, mean=1.0)


def _vision_state_dict(cfg: dict, rng: _Random) -> dict[str, torch.Tensor]:
    dim, ffn = cfg["hidden_size"], cfg["intermediate_size"]
    patch, channels = cfg["patch_size"], cfg["num_channels"]
    grid = cfg["image_size"] // patch
    layer_norm = cfg.get("norm_type", "rms_norm") == "layer_norm"
    out = {
        "vision_model.embeddings.class_embedding": rng.normal(1, 1, dim, std=0.5),
        "vision_model.embeddings.patch_embedding.weight": rng.normal(
            dim, channels, patch, patch, std=1.0 / math.sqrt(channels * patch * patch)
        ),
        "vision_model.embeddings.patch_embedding.bias": rng.bias(dim),
        "vision_model.embeddings.position_embedding": rng.normal(1, grid * grid + 1, dim, std=0.2),
    }
    for n in range(cfg["num_hidden_layers"]):
        p = f"vision_model.encoder.layers.{n}."
        out[p + "ls1"] = rng.normal(dim, std=0.1, mean=0.5)
        out[p + "ls2"] = rng.normal(dim, std=0.1, mean=0.5)
        out[p + "attn.qkv.weight"] = rng.linear(3 * dim, dim)
        if cfg.get("qkv_bias", False):
            out[p + "attn.qkv.bias"] = rng.bias(3 * dim)
        out[p + "attn.proj.weight"] = rng.linear(dim, dim)
        out[p + "attn.proj.bias"] = rng.bias(dim)
        if cfg.get("qk_normalization", True):
            out[p + "attn.q_norm.weight"] = rng.norm_weight(dim)
            out[p + "attn.k_norm.weight"] = rng.norm_weight(dim)
        out[p + "mlp.fc1.weight"] = rng.linear(ffn, dim)
        out[p + "mlp.fc1.bias"] = rng.bias(ffn)
        out[p + "mlp.fc2.weight"] = rng.linear(dim, ffn)
        out[p + "mlp.fc2.bias"] = rng.bias(dim)
        for norm in ("norm1", "norm2"):
            out[p + norm + ".weight"] = rng.norm_weight(dim)
            if layer_norm:
                out[p + norm + ".bias"] = rng.bias(dim)
    return out


def _llm_state_dict(llm: str, cfg: dict, rng: _Random) -> dict[str, torch.Tensor]:
    hidden, ffn, vocab = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    heads, kv_heads = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    head_dim = hidden // heads
    out: dict[str, torch.Tensor] = {}
    if llm == "internlm2":
        out["language_model.model.tok_embeddings.weight"] = rng.normal(vocab, hidden)
        for n in range(cfg["num_hidden_layers"]):
            p = f"language_model.model.layers.{n}."
            out[p + "attention.wqkv.weight"] = rng.linear((heads + 2 * kv_heads) * head_dim, hidden)
            if cfg.get("bias", True):
                out[p + "attention.wqkv.bias"] = rng.bias((heads + 2 * kv_heads) * head_dim)
            out[p + "attention.wo.weight"] = rng.linear(hidden, heads * head_dim)
            if cfg.get("bias", True):
                out[p + "attention.wo.bias"] = rng.bias(hidden)
            out[p + "feed_forward.w1.weight"] = rng.linear(ffn, hidden)
            out[p + "feed_forward.w3.weight"] = rng.linear(ffn, hidden)
            out[p + "feed_forward.w2.weight"] = rng.linear(hidden, ffn)
            out[p + "attention_norm.weight"] = rng.norm_weight(hidden)
            out[p + "ffn_norm.weight"] = rng.norm_weight(hidden)
        out["language_model.model.norm.weight"] = rng.norm_weight(hidden)
        out["language_model.output.weight"] = rng.linear(vocab, hidden, gain=2.0)
        return out
    out["language_model.model.embed_tokens.weight"] = rng.normal(vocab, hidden)
    for n in range(cfg["num_hidden_layers"]):
        p = f"language_model.model.layers.{n}."
        for name, rows in (("q", heads), ("k", kv_heads), ("v", kv_heads)):
            out[p + f"self_attn.{name}_proj.weight"] = rng.linear(rows * head_dim, hidden)
            out[p + f"self_attn.{name}_proj.bias"] = rng.bias(rows * head_dim)
        out[p + "self_attn.o_proj.weight"] = rng.linear(hidden, heads * head_dim)
        out[p + "mlp.gate_proj.weight"] = rng.linear(ffn, hidden)
        out[p + "mlp.up_proj.weight"] = rng.linear(ffn, hidden)
        out[p + "mlp.down_proj.weight"] = rng.linear(hidden, ffn)
        out[p + "input_layernorm.weight"] = rng.norm_weight(hidden)
        out[p + "post_attention_layernorm.weight"] = rng.norm_weight(hidden)
    out["language_model.model.norm.weight"] = rng.norm_weight(hidden)
    out["language_model.lm_head.weight"] = rng.linear(vocab, hidden, gain=2.0)
    return out


def _projector_state_dict(vision_dim: int, llm_dim: int, rng: _Random) -> dict[str, torch.Tensor]:
    wide = vision_dim * 4
    return {
        "mlp1.0.weight": rng.norm_weight(wide),
        "mlp1.0.bias": rng.bias(wide),
        "mlp1.1.weight": rng.linear(llm_dim, wide),
        "mlp1.1.bias": rng.bias(llm_dim),
        "mlp1.3.weight": rng.linear(llm_dim, llm_dim),
        "mlp1.3.bias": rng.bias(llm_dim),
    }


def _write_weights(directory: Path, tensors: dict[str, torch.Tensor], shards: int) -> None:
    """Sharded safetensors + index as `save_pretrained` writes them (single file if shards == 1)."""
    from safetensors.torch import save_file

    names = list(tensors)
    if not 1 <= shards <= len(names):
        raise ValueError(f"shards must be between 1 and {len(names)}, got {shards}")
    metadata = {"format": "pt"}
    if shards == 1:
        save_file(tensors, str(directory / "model.safetensors"), metadata=metadata)
        return
    # Contiguous shards in module order (vision_model, language_model, mlp1), equal tensor counts:
    # every shard holds several tensors, and a vision layer or an LLM layer may straddle two.
    groups = [
        names[i * len(names) // shards : (i + 1) * len(names) // shards] for i in range(shards)
    ]
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    weight_map = {}
    for i, group in enumerate(groups, start=1):
        filename = f"model-{i:05d}-of-{shards:05d}.safetensors"
        save_file(
            {name: tensors[name] for name in group}, str(directory / filename), metadata=metadata
        )
        weight_map.update(dict.fromkeys(group, filename))
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    _write_json(directory / "model.safetensors.index.json", index)


def _write_json(path: Path, content: dict) -> None:
    path.write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_original_checkpoint(
    directory: str | Path,
    llm: str,
    vision: str,
    *,
    shards: int = 2,
    seed: int = 0,
    template: str = "internvl2_5",
    named_chat_pieces: bool = False,
) -> Path:
    """Write a tiny random-weight ORIGINAL-format InternVL 2.5 checkpoint into `directory`.

    `llm` is "internlm2" or "qwen2", `vision` "300m" or "6b" (see KINDS). The layout is the Hub
    repos' (config.json, sharded safetensors with the original tensor names, the tokenizer files,
    placeholder remote-code modules); there is no native file (no preprocessor_config.json).
    `named_chat_pieces` (InternLM2 only) names the last six SentencePiece pieces <|plugin|>..
    <|im_start|> instead of the real "[UNUSED_TOKEN_141]".."[UNUSED_TOKEN_146]".
    """
    if (llm, vision) not in KINDS:
        raise ValueError(f"unknown kind {(llm, vision)!r}; expected one of {KINDS}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in [
        *directory.glob("model*.safetensors"),
        directory / "model.safetensors.index.json",
    ]:
        stale.unlink(missing_ok=True)

    if llm == "internlm2":
        ids = _write_internlm2_tokenizer(directory, named_chat_pieces)
    else:
        ids = _write_qwen2_tokenizer(directory)
    llm_config = _llm_config(llm, ids)
    vision_config = _vision_config(vision)
    _write_json(directory / "config.json", _chat_config(llm_config, vision_config, template))
    _write_json(
        directory / "generation_config.json",
        {"_from_model_config": True, "transformers_version": "4.37.2"},
    )

    rng = _Random(seed)
    tensors = _vision_state_dict(vision_config, rng)
    tensors.update(_llm_state_dict(llm, llm_config, rng))
    tensors.update(
        _projector_state_dict(vision_config["hidden_size"], llm_config["hidden_size"], rng)
    )
    _write_weights(directory, tensors, shards)

    remote_code = [
        "configuration_intern_vit.py",
        "configuration_internvl_chat.py",
        "conversation.py",
        "modeling_intern_vit.py",
        "modeling_internvl_chat.py",
    ]
    if llm == "internlm2":
        remote_code += ["configuration_internlm2.py", "modeling_internlm2.py"]
    for name in remote_code:
        (directory / name).write_text(_REMOTE_CODE_PLACEHOLDER)
    return directory


# ----------------------------------------------------------------------------------------------
# Reading the checkpoint back
# ----------------------------------------------------------------------------------------------


def read_config(directory: str | Path) -> dict:
    return json.loads((Path(directory) / "config.json").read_text(encoding="utf-8"))


def load_original_state_dict(directory: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint, through the shard index when there is one."""
    from safetensors.torch import load_file

    directory = Path(directory)
    index_path = directory / "model.safetensors.index.json"
    if not index_path.exists():
        return load_file(str(directory / "model.safetensors"))
    weight_map = json.loads(index_path.read_text())["weight_map"]
    tensors: dict[str, torch.Tensor] = {}
    for filename in sorted(set(weight_map.values())):
        shard = load_file(str(directory / filename))
        for name, tensor in shard.items():
            if weight_map.get(name) != filename:
                raise ValueError(
                    f"{name} is in {filename} but the index says {weight_map.get(name)}"
                )
            tensors[name] = tensor
    missing = set(weight_map) - set(tensors)
    if missing:
        raise ValueError(f"tensors in the index but in no shard: {sorted(missing)}")
    return tensors


def added_tokens(directory: str | Path) -> dict[str, int]:
    """Token string -> id for every entry of tokenizer_config.json's added_tokens_decoder."""
    config = json.loads((Path(directory) / "tokenizer_config.json").read_text(encoding="utf-8"))
    return {entry["content"]: int(i) for i, entry in config["added_tokens_decoder"].items()}


def image_context_token_id(directory: str | Path) -> int:
    """The <IMG_CONTEXT> id, read from the tokenizer files."""
    return added_tokens(directory)[IMG_CONTEXT]


def reference_token_ids(directory: str | Path, text: str) -> list[int]:
    """What the original slow InternLM2Tokenizer returns for `tokenizer(text).input_ids`.

    The text is split on the added tokens (longest match, left to right, as transformers' slow
    tokenizers do), each other chunk is encoded by SentencePiece itself, and BOS (1) is prepended.
    """
    import sentencepiece as spm

    directory = Path(directory)
    model_file = directory / "tokenizer.model"
    if not model_file.exists():
        raise ValueError(f"{directory} has no tokenizer.model: not an InternLM2 checkpoint")
    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    specials = added_tokens(directory)
    pattern = re.compile("|".join(re.escape(t) for t in sorted(specials, key=len, reverse=True)))
    ids = [1]
    position = 0
    for match in pattern.finditer(text):
        if match.start() > position:
            ids += sp.encode(text[position : match.start()])
        ids.append(specials[match.group()])
        position = match.end()
    if position < len(text):
        ids += sp.encode(text[position:])
    return ids


# ----------------------------------------------------------------------------------------------
# The reference forward pass (plain torch, float32), following the original remote code
# ----------------------------------------------------------------------------------------------


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    x = x.float()
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def _vision_tower(
    cfg: dict, w: dict[str, torch.Tensor], pixel_values: torch.Tensor
) -> list[torch.Tensor]:
    """InternVisionModel: the hidden states (embeddings, then each layer's output; CLS first)."""
    dim = cfg.get("hidden_size", 3200)
    heads = cfg.get("num_attention_heads", 25)
    head_dim = dim // heads
    eps = cfg.get("layer_norm_eps", 1e-6)
    norm_type = cfg.get("norm_type", "rms_norm")  # the original InternVisionConfig defaults
    qk_normalization = cfg.get("qk_normalization", True)
    if cfg.get("hidden_act", "gelu") != "gelu":
        raise NotImplementedError(f"vision hidden_act {cfg['hidden_act']!r}")

    def norm(x: torch.Tensor, prefix: str) -> torch.Tensor:
        if norm_type == "layer_norm":
            return F.layer_norm(x, (dim,), w[prefix + ".weight"], w[prefix + ".bias"], eps)
        if norm_type == "rms_norm":
            return _rms_norm(x, w[prefix + ".weight"], eps)
        raise ValueError(f"unknown norm_type {norm_type!r}")

    e = "vision_model.embeddings."
    x = F.conv2d(
        pixel_values.float(),
        w[e + "patch_embedding.weight"],
        w[e + "patch_embedding.bias"],
        stride=w[e + "patch_embedding.weight"].shape[-1],
    )
    batch, _, height, width = x.shape
    x = x.flatten(2).transpose(1, 2)
    cls = w[e + "class_embedding"].expand(batch, 1, dim)
    x = torch.cat([cls, x], dim=1)
    position = w[e + "position_embedding"]
    grid = math.isqrt(position.shape[1] - 1)
    patch_position = position[:, 1:]
    if (grid, grid) != (height, width):
        patch_position = patch_position.reshape(1, grid, grid, dim).permute(0, 3, 1, 2).float()
        patch_position = F.interpolate(
            patch_position, size=(height, width), mode="bicubic", align_corners=False
        )
        patch_position = patch_position.reshape(1, dim, height * width).permute(0, 2, 1)
    x = x + torch.cat([position[:, :1], patch_position], dim=1)

    hidden_states = [x]
    layer = 0
    while f"vision_model.encoder.layers.{layer}.attn.qkv.weight" in w:
        p = f"vision_model.encoder.layers.{layer}."
        h = norm(x, p + "norm1")
        tokens = h.shape[1]
        qkv = F.linear(h, w[p + "attn.qkv.weight"], w.get(p + "attn.qkv.bias"))
        q, k, v = qkv.reshape(batch, tokens, 3, dim).unbind(2)  # each [B, N, D], heads together
        if qk_normalization:  # RMS over the full embedding (all heads), eps layer_norm_eps
            q = _rms_norm(q, w[p + "attn.q_norm.weight"], eps)
            k = _rms_norm(k, w[p + "attn.k_norm.weight"], eps)
        q, k, v = (t.reshape(batch, tokens, heads, head_dim).transpose(1, 2) for t in (q, k, v))
        scores = (q * head_dim**-0.5) @ k.transpose(-2, -1)
        attended = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(batch, tokens, dim)
        attended = F.linear(attended, w[p + "attn.proj.weight"], w[p + "attn.proj.bias"])
        x = x + w[p + "ls1"] * attended
        h = norm(x, p + "norm2")
        h = F.linear(h, w[p + "mlp.fc1.weight"], w[p + "mlp.fc1.bias"])
        h = F.linear(F.gelu(h), w[p + "mlp.fc2.weight"], w[p + "mlp.fc2.bias"])
        x = x + w[p + "ls2"] * h
        hidden_states.append(x)
        layer += 1
    return hidden_states


def _pixel_shuffle(x: torch.Tensor, scale: float, ps_version: str) -> torch.Tensor:
    n, w, h, c = x.shape
    x = x.reshape(n, w, int(h * scale), int(c / scale))
    x = x.permute(0, 2, 1, 3).contiguous()
    x = x.reshape(n, int(h * scale), int(w * scale), int(c / (scale * scale)))
    if ps_version != "v1":
        x = x.permute(0, 2, 1, 3).contiguous()
    return x


def _image_features(config: dict, w: dict[str, torch.Tensor], pixel_values: torch.Tensor):
    """InternVLChatModel.extract_feature: ViT, drop CLS, pixel shuffle, mlp1."""
    hidden = _vision_tower(config["vision_config"], w, pixel_values)[config.get("select_layer", -1)]
    hidden = hidden[:, 1:, :]
    side = int(hidden.shape[1] ** 0.5)
    hidden = hidden.reshape(hidden.shape[0], side, side, -1)
    hidden = _pixel_shuffle(
        hidden, config.get("downsample_ratio", 0.5), config.get("ps_version", "v1")
    )
    hidden = hidden.reshape(hidden.shape[0], -1, hidden.shape[-1])
    hidden = F.layer_norm(hidden, hidden.shape[-1:], w["mlp1.0.weight"], w["mlp1.0.bias"], 1e-5)
    hidden = F.gelu(F.linear(hidden, w["mlp1.1.weight"], w["mlp1.1.bias"]))
    return F.linear(hidden, w["mlp1.3.weight"], w["mlp1.3.bias"])


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat([-second, first], dim=-1)


def _rope_cos_sin(cfg: dict, default_theta: float, length: int, head_dim: int):
    base = float(cfg.get("rope_theta", default_theta))
    positions = torch.arange(length, dtype=torch.float32)
    scaling = cfg.get("rope_scaling")
    max_positions = cfg.get("max_position_embeddings", 2048)
    if scaling:
        kind, factor = scaling.get("type", scaling.get("rope_type")), float(scaling["factor"])
        if kind == "linear":
            positions = positions / factor
        elif kind == "dynamic":  # NTK: only changes anything beyond max_position_embeddings
            if length > max_positions:
                ratio = factor * length / max_positions - (factor - 1)
                base = base * ratio ** (head_dim / (head_dim - 2))
        else:
            raise NotImplementedError(f"rope_scaling {scaling!r}")
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    freqs = torch.outer(positions, inv_freq)
    angles = torch.cat([freqs, freqs], dim=-1)
    return angles.cos(), angles.sin()


def _attention(q, k, v, cos, sin, groups: int) -> torch.Tensor:
    """Causal GQA attention; q [B, H, T, d], k/v [B, KV, T, d]; kv head j serves j*g..j*g+g-1."""
    q = q * cos + _rotate_half(q) * sin
    k = k * cos + _rotate_half(k) * sin
    k = k.repeat_interleave(groups, dim=1)
    v = v.repeat_interleave(groups, dim=1)
    length = q.shape[-2]
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    causal = torch.ones(length, length, dtype=torch.bool).triu(1)
    scores = scores.masked_fill(causal, float("-inf"))
    return scores.softmax(dim=-1) @ v


def _language_model(
    llm_config: dict, w: dict[str, torch.Tensor], embeds: torch.Tensor
) -> torch.Tensor:
    architecture = llm_config["architectures"][0]
    hidden = llm_config["hidden_size"]
    heads = llm_config["num_attention_heads"]
    kv_heads = llm_config.get("num_key_value_heads") or heads
    head_dim = hidden // heads
    groups = heads // kv_heads
    batch, length, _ = embeds.shape
    if llm_config.get("hidden_act", "silu") != "silu":
        raise NotImplementedError(f"hidden_act {llm_config['hidden_act']!r}")
    x = embeds
    if architecture == "InternLM2ForCausalLM":  # the original configuration_internlm2 defaults
        eps = llm_config.get("rms_norm_eps", 1e-6)
        cos, sin = _rope_cos_sin(llm_config, 10000.0, length, head_dim)
        for n in range(llm_config["num_hidden_layers"]):
            p = f"language_model.model.layers.{n}."
            h = _rms_norm(x, w[p + "attention_norm.weight"], eps)
            qkv = F.linear(h, w[p + "attention.wqkv.weight"], w.get(p + "attention.wqkv.bias"))
            qkv = qkv.reshape(batch, length, kv_heads, groups + 2, head_dim)
            q = qkv[:, :, :, :groups].reshape(batch, length, heads, head_dim).transpose(1, 2)
            k = qkv[:, :, :, groups].transpose(1, 2)
            v = qkv[:, :, :, groups + 1].transpose(1, 2)
            attended = _attention(q, k, v, cos, sin, groups)
            attended = attended.transpose(1, 2).reshape(batch, length, heads * head_dim)
            x = x + F.linear(attended, w[p + "attention.wo.weight"], w.get(p + "attention.wo.bias"))
            h = _rms_norm(x, w[p + "ffn_norm.weight"], eps)
            gate = F.silu(F.linear(h, w[p + "feed_forward.w1.weight"]))
            up = F.linear(h, w[p + "feed_forward.w3.weight"])
            x = x + F.linear(gate * up, w[p + "feed_forward.w2.weight"])
        x = _rms_norm(x, w["language_model.model.norm.weight"], eps)
        return F.linear(x, w["language_model.output.weight"])
    if architecture == "Qwen2ForCausalLM":
        if llm_config.get("use_sliding_window"):
            raise NotImplementedError("sliding-window attention")
        eps = llm_config.get("rms_norm_eps", 1e-6)
        cos, sin = _rope_cos_sin(llm_config, 10000.0, length, head_dim)
        for n in range(llm_config["num_hidden_layers"]):
            p = f"language_model.model.layers.{n}."
            h = _rms_norm(x, w[p + "input_layernorm.weight"], eps)

            def project(name, count, h=h, p=p):
                out = F.linear(
                    h, w[p + f"self_attn.{name}_proj.weight"], w[p + f"self_attn.{name}_proj.bias"]
                )
                return out.reshape(batch, length, count, head_dim).transpose(1, 2)

            attended = _attention(
                project("q", heads),
                project("k", kv_heads),
                project("v", kv_heads),
                cos,
                sin,
                groups,
            )
            attended = attended.transpose(1, 2).reshape(batch, length, heads * head_dim)
            x = x + F.linear(attended, w[p + "self_attn.o_proj.weight"])
            h = _rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
            gate = F.silu(F.linear(h, w[p + "mlp.gate_proj.weight"]))
            up = F.linear(h, w[p + "mlp.up_proj.weight"])
            x = x + F.linear(gate * up, w[p + "mlp.down_proj.weight"])
        x = _rms_norm(x, w["language_model.model.norm.weight"], eps)
        return F.linear(x, w["language_model.lm_head.weight"])
    raise NotImplementedError(f"language model {architecture!r}")


@contextlib.contextmanager
def _one_thread():
    """Run torch on one thread: on tensors this small, intra-op threads only add overhead (40x
    slower on a loaded 2-core machine). The previous setting is restored afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@torch.no_grad()
@_one_thread()
def reference_logits(
    directory: str | Path,
    input_ids: torch.LongTensor,
    pixel_values: torch.FloatTensor | None,
) -> torch.Tensor:
    """Logits [B, T, vocab] of the original InternVLChatModel forward, in float32.

    `input_ids` [B, T] holds one <IMG_CONTEXT> id per image token (TOKENS_PER_TILE per tile, the
    tiles in order); `pixel_values` is [tiles, 3, 448, 448] (None for text only).
    """
    config = read_config(directory)
    w = {name: t.float() for name, t in load_original_state_dict(directory).items()}
    llm_config = config["llm_config"]
    table = w.get("language_model.model.tok_embeddings.weight")  # InternLM2
    if table is None:
        table = w["language_model.model.embed_tokens.weight"]  # Qwen2
    input_ids = torch.as_tensor(input_ids)
    embeds = F.embedding(input_ids, table).clone()
    selected = input_ids == image_context_token_id(directory)
    if pixel_values is not None:
        features = _image_features(config, w, pixel_values)
        features = features.reshape(-1, embeds.shape[-1])
        if int(selected.sum()) != features.shape[0]:
            raise ValueError(
                f"{int(selected.sum())} <IMG_CONTEXT> tokens for {features.shape[0]} image features"
            )
        embeds[selected] = features
    elif bool(selected.any()):
        raise ValueError("input_ids hold <IMG_CONTEXT> tokens but pixel_values is None")
    return _language_model(llm_config, w, embeds)
