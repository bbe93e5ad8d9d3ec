"""Original-format InternVL checkpoints (`model_type: internvl_chat`, remote code) -> native.

    python -m model_backend.convert SRC DST

SRC is a local folder or a Hub id (OpenGVLab/InternVL2_5-8B, ...); DST a new folder that
`AutoModelForImageTextToText` and `AutoProcessor` load with no remote code. The app does the same
on its own when `--model` names an original-format checkpoint (model_backend.loading).

What decides whether the numbers come out right (checked against the original modeling code):
- InternLM2 language models become Llama. Their `wqkv` is packed per key/value head: for each
  kv head, `heads/kv_heads` query slots, then its key, then its value (not [q; k; v]).
- Qwen2 language models only change prefix.
- The vision tower's packed `qkv` is [q; k; v]. InternViT-6B configs leave out `norm_type` and
  rely on the original default (RMSNorm): every key a config leaves out gets the ORIGINAL default,
  not the native class's.
- The output layer is not tied to the embeddings (the native config ties them by default).
- Token ids come from the checkpoint's own tokenizer files.

Tensors are streamed shard by shard (peak memory about one shard), into a folder written aside
and renamed when complete, so a conversion that dies leaves nothing that looks usable.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from model_backend.errors import ModelLoadError
from model_backend.native_files import (
    GROUNDING_TOKENS,
    IMAGE_TOKENS,
    chat_template,
    write_processor_configs,
)
from model_backend.prompt import TEMPLATES

# Written into every converted folder: where it came from and which conversation template the
# original checkpoint uses (the native config has no field for it).
CONVERSION_RECORD = "converted_from.json"
CONVERTER_VERSION = 1

# Defaults of the original configuration classes, for keys a config.json leaves out.
ORIGINAL_CHAT_DEFAULTS = {
    "select_layer": -1,
    "ps_version": "v1",
    "downsample_ratio": 0.5,
    "force_image_size": None,
    "template": None,
    "max_dynamic_patch": 6,
}
ORIGINAL_VISION_DEFAULTS = {
    "num_channels": 3,
    "patch_size": 14,
    "image_size": 224,
    "qkv_bias": False,
    "hidden_size": 3200,
    "num_attention_heads": 25,
    "intermediate_size": 12800,
    "qk_normalization": True,
    "num_hidden_layers": 48,
    "hidden_act": "gelu",
    "norm_type": "rms_norm",
    "layer_norm_eps": 1e-6,
}
ORIGINAL_INTERNLM2_DEFAULTS = {
    "vocab_size": 103168,
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": None,  # None: as many as attention heads
    "hidden_act": "silu",
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-6,
    "bias": True,
    "rope_theta": 10000,
    "rope_scaling": None,
}
# Fields of a Qwen2 llm_config that the native Qwen2Config takes as they are (the original
# code built the very same transformers class from them, so its defaults are the original's).
QWEN2_FIELDS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "hidden_act",
    "max_position_embeddings",
    "rms_norm_eps",
    "rope_theta",
    "rope_scaling",
    "use_sliding_window",
    "sliding_window",
    "max_window_layers",
)
LANGUAGE_MODELS = {"InternLM2ForCausalLM": "internlm2", "Qwen2ForCausalLM": "qwen2"}
NATIVE_QK_NORM_EPS = 1e-6  # the native vision attention's q/k RMSNorm has no eps setting
WEIGHT_FILES = ("model.safetensors.index.json", "model.safetensors")
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # org/name


class ConversionError(ModelLoadError):
    """The checkpoint cannot be converted; the message says why and names the field."""


def is_original_format(config: dict) -> bool:
    return config.get("model_type") == "internvl_chat"


# ---------------------------------------------------------------------------------------------
# Config


@dataclass(frozen=True)
class OriginalConfig:
    """An original config.json with the original defaults filled in."""

    chat: dict
    vision: dict
    llm: dict
    language_model: str  # "internlm2" or "qwen2"

    @property
    def heads(self) -> int:
        return self.llm["num_attention_heads"]

    @property
    def kv_heads(self) -> int:
        return self.llm["num_key_value_heads"] or self.heads

    @property
    def head_dim(self) -> int:
        return self.llm.get("head_dim") or self.llm["hidden_size"] // self.heads

    @property
    def image_size(self) -> int:
        return int(self.chat["force_image_size"] or self.vision["image_size"])

    @property
    def image_seq_length(self) -> int:
        patches = (self.image_size // self.vision["patch_size"]) ** 2
        return int(patches * self.chat["downsample_ratio"] ** 2)

    @property
    def template(self) -> str:
        return self.chat["template"]


def read_original_config(config: dict) -> OriginalConfig:
    """Fill in the original defaults and refuse what the native class cannot represent."""
    chat = {**ORIGINAL_CHAT_DEFAULTS, **config}
    vision = {**ORIGINAL_VISION_DEFAULTS, **(config.get("vision_config") or {})}
    llm_config = config.get("llm_config") or {}
    architecture = (llm_config.get("architectures") or ["(none)"])[0]
    language_model = LANGUAGE_MODELS.get(architecture)
    if language_model is None:
        raise ConversionError(
            f"llm_config.architectures is {architecture}: only InternLM2ForCausalLM and "
            f"Qwen2ForCausalLM language models (the whole InternVL 2.5 family) can be converted."
        )
    defaults = ORIGINAL_INTERNLM2_DEFAULTS if language_model == "internlm2" else {}
    llm = {**defaults, **llm_config}
    if chat["ps_version"] != "v2":
        raise ConversionError(
            f"ps_version is {chat['ps_version']!r}: the native InternVL class only has the "
            f"'v2' pixel shuffle."
        )
    if chat["select_layer"] != -1:
        raise ConversionError(
            f"select_layer is {chat['select_layer']}: only -1 (the vision tower's last layer, "
            f"as in every InternVL 2.5 checkpoint) is supported."
        )
    if chat["template"] not in TEMPLATES:
        raise ConversionError(
            f"template is {chat['template']!r}: the demo knows the conversation templates "
            f"{', '.join(TEMPLATES)}."
        )
    if vision["qk_normalization"] and vision["layer_norm_eps"] != NATIVE_QK_NORM_EPS:
        raise ConversionError(
            f"vision_config.layer_norm_eps is {vision['layer_norm_eps']}: the native vision "
            f"tower normalises queries and keys with eps {NATIVE_QK_NORM_EPS} only."
        )
    if vision["norm_type"] not in ("rms_norm", "layer_norm"):
        raise ConversionError(f"vision_config.norm_type {vision['norm_type']!r} is unknown.")
    return OriginalConfig(chat, vision, llm, language_model)


def text_config(original: OriginalConfig, special_ids: dict[str, int | None]) -> dict:
    """The native language model config: Llama for InternLM2, Qwen2 as it was."""
    llm = original.llm
    if original.language_model == "internlm2":
        fields = {
            "model_type": "llama",
            **{key: llm[key] for key in ORIGINAL_INTERNLM2_DEFAULTS if key != "bias"},
            "num_key_value_heads": original.kv_heads,
            "head_dim": original.head_dim,
            "attention_bias": bool(llm["bias"]),  # wqkv and wo carry biases when set
            "mlp_bias": False,
        }
    else:
        fields = {"model_type": "qwen2", **{key: llm[key] for key in QWEN2_FIELDS if key in llm}}
    return {
        **fields,
        "tie_word_embeddings": False,
        "bos_token_id": special_ids["bos"],
        "eos_token_id": special_ids["im_end"],
        "pad_token_id": special_ids["pad"],
    }


def vision_config(original: OriginalConfig) -> dict:
    vision = original.vision
    size, patch = original.image_size, vision["patch_size"]
    return {
        "hidden_size": vision["hidden_size"],
        "intermediate_size": vision["intermediate_size"],
        "num_hidden_layers": vision["num_hidden_layers"],
        "num_attention_heads": vision["num_attention_heads"],
        "num_channels": vision["num_channels"],
        "hidden_act": vision["hidden_act"],
        "image_size": [size, size],
        "patch_size": [patch, patch],
        "attention_bias": bool(vision["qkv_bias"]),
        "use_qk_norm": bool(vision["qk_normalization"]),
        "norm_type": vision["norm_type"],
        "layer_norm_eps": vision["layer_norm_eps"],
        "use_mean_pooling": True,  # no final LayerNorm, as in the original
        "use_absolute_position_embeddings": True,
    }


def native_config(original: OriginalConfig, special_ids: dict[str, int | None]):
    """The InternVLConfig of the converted checkpoint."""
    from transformers import InternVLConfig

    return InternVLConfig(
        text_config=text_config(original, special_ids),
        vision_config=vision_config(original),
        image_token_id=special_ids["image"],
        image_seq_length=original.image_seq_length,
        downsample_ratio=original.chat["downsample_ratio"],
        projector_hidden_act="gelu",
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        tie_word_embeddings=False,
    )


# ---------------------------------------------------------------------------------------------
# Weights

# InternViT names, after "vision_model." and with encoder.layers.N -> encoder.layer.N.
VISION_RENAMES = [
    (r"^embeddings\.class_embedding$", "embeddings.cls_token"),
    (r"^embeddings\.position_embedding$", "embeddings.position_embeddings"),
    (r"^embeddings\.patch_embedding\.", "embeddings.patch_embeddings.projection."),
    (r"^(encoder\.layer\.\d+)\.attn\.proj\.", r"\1.attention.projection_layer."),
    (r"^(encoder\.layer\.\d+)\.attn\.(q_norm|k_norm)\.", r"\1.attention.\2."),
    (r"^(encoder\.layer\.\d+)\.mlp\.", r"\1.mlp."),
    (r"^(encoder\.layer\.\d+)\.norm1\.", r"\1.layernorm_before."),
    (r"^(encoder\.layer\.\d+)\.norm2\.", r"\1.layernorm_after."),
    (r"^(encoder\.layer\.\d+)\.ls(1|2)$", r"\1.lambda_\2"),
]
PROJECTOR_RENAMES = {"mlp1.0.": "layer_norm.", "mlp1.1.": "linear_1.", "mlp1.3.": "linear_2."}
INTERNLM2_RENAMES = [
    (r"^model\.tok_embeddings\.", "embed_tokens."),
    (r"^model\.layers\.(\d+)\.attention\.wo\.", r"layers.\1.self_attn.o_proj."),
    (r"^model\.layers\.(\d+)\.feed_forward\.w1\.", r"layers.\1.mlp.gate_proj."),
    (r"^model\.layers\.(\d+)\.feed_forward\.w3\.", r"layers.\1.mlp.up_proj."),
    (r"^model\.layers\.(\d+)\.feed_forward\.w2\.", r"layers.\1.mlp.down_proj."),
    (r"^model\.layers\.(\d+)\.attention_norm\.", r"layers.\1.input_layernorm."),
    (r"^model\.layers\.(\d+)\.ffn_norm\.", r"layers.\1.post_attention_layernorm."),
    (r"^model\.norm\.", "norm."),
]
VISION_QKV = re.compile(r"^vision_model\.encoder\.layers\.(\d+)\.attn\.qkv\.(weight|bias)$")
INTERNLM2_WQKV = re.compile(r"^model\.layers\.(\d+)\.attention\.wqkv\.(weight|bias)$")


def rename(name: str, renames) -> str | None:
    for pattern, replacement in renames:
        new, count = re.subn(pattern, replacement, name)
        if count:
            return new
    return None


def split_vision_qkv(tensor):
    """InternViT's fused qkv is [q; k; v] along the output dimension."""
    return tensor.chunk(3, dim=0)


def split_internlm2_wqkv(tensor, heads: int, kv_heads: int, head_dim: int):
    """InternLM2's wqkv output, per key/value head j: its g = heads/kv_heads query heads
    (j*g .. j*g+g-1), then key head j, then value head j."""
    groups = heads // kv_heads
    rest = tensor.shape[1:]
    packed = tensor.reshape(kv_heads, groups + 2, head_dim, *rest)
    q = packed[:, :groups].reshape(heads * head_dim, *rest)
    k = packed[:, groups].reshape(kv_heads * head_dim, *rest)
    v = packed[:, groups + 1].reshape(kv_heads * head_dim, *rest)
    return q, k, v


def convert_tensor(name: str, tensor, original: OriginalConfig) -> list[tuple[str, object]]:
    """One original tensor -> its native name(s) and tensor(s)."""
    vision, projector = "model.vision_tower.", "model.multi_modal_projector."
    text = "model.language_model."
    if match := VISION_QKV.match(name):
        layer, kind = match.groups()
        prefix = f"{vision}encoder.layer.{layer}.attention."
        return [
            (f"{prefix}{part}_proj.{kind}", piece.contiguous())
            for part, piece in zip("qkv", split_vision_qkv(tensor), strict=True)
        ]
    if name.startswith("vision_model."):
        inner = re.sub(r"^encoder\.layers\.", "encoder.layer.", name.removeprefix("vision_model."))
        new = rename(inner, VISION_RENAMES)
        return [] if new is None else [(vision + new, tensor)]
    for old, new in PROJECTOR_RENAMES.items():
        if name.startswith(old):
            return [(projector + new + name[len(old) :], tensor)]
    if not name.startswith("language_model."):
        return []
    name = name.removeprefix("language_model.")
    if original.language_model == "qwen2":
        if name.startswith("lm_head."):
            return [(name, tensor)]
        return [(text + name.removeprefix("model."), tensor)] if name.startswith("model.") else []
    if name.startswith("output."):
        return [("lm_head." + name.removeprefix("output."), tensor)]
    if match := INTERNLM2_WQKV.match(name):
        layer, kind = match.groups()
        pieces = split_internlm2_wqkv(tensor, original.heads, original.kv_heads, original.head_dim)
        prefix = f"{text}layers.{layer}.self_attn."
        return [
            (f"{prefix}{part}_proj.{kind}", piece.contiguous())
            for part, piece in zip("qkv", pieces, strict=True)
        ]
    new = rename(name, INTERNLM2_RENAMES)
    return [] if new is None else [(text + new, tensor)]


def weight_shards(folder: Path) -> list[str]:
    """The safetensors files of a checkpoint, in order."""
    index = folder / WEIGHT_FILES[0]
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        missing = [shard for shard in shards if not (folder / shard).is_file()]
        if missing:
            raise ConversionError(
                f"{folder} is incomplete: {', '.join(missing)} named by its index is missing "
                f"(an interrupted download?)."
            )
        return shards
    if (folder / WEIGHT_FILES[1]).is_file():
        return [WEIGHT_FILES[1]]
    found = ", ".join(sorted(p.name for p in folder.iterdir())) or "nothing"
    raise ConversionError(
        f"{folder} has no safetensors weights ({' or '.join(WEIGHT_FILES)}); it holds {found}."
    )


def expected_native_keys(config) -> set[str]:
    """The parameter names the native model has for this config (built on the meta device)."""
    import torch
    from transformers import InternVLForConditionalGeneration

    with torch.device("meta"):
        model = InternVLForConditionalGeneration(config)
    return set(model.state_dict())


def convert_weights(
    source: Path, work: Path, original: OriginalConfig, progress: bool = True
) -> set[str]:
    """Convert shard by shard into `work`, keeping the source's sharding; returns the names."""
    from safetensors import safe_open
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    shards = weight_shards(source)
    total = sum((source / shard).stat().st_size for shard in shards)
    weight_map: dict[str, str] = {}
    size = 0
    with tqdm(
        total=total, unit="B", unit_scale=True, desc="Converting", disable=not progress
    ) as bar:
        for shard in shards:
            converted = {}
            with safe_open(source / shard, framework="pt") as reader:
                for name in reader.keys():  # noqa: SIM118 (safe_open is not a dict)
                    pieces = convert_tensor(name, reader.get_tensor(name), original)
                    if not pieces:
                        raise ConversionError(f"{shard}: the tensor {name} has no native place.")
                    converted.update(pieces)
            write_shard(converted, work / shard, save_file)
            weight_map.update(dict.fromkeys(converted, shard))
            size += sum(t.numel() * t.element_size() for t in converted.values())
            del converted
            bar.update((source / shard).stat().st_size)
    if len(shards) > 1 or shards[0] != WEIGHT_FILES[1]:
        index = {"metadata": {"total_size": size}, "weight_map": dict(sorted(weight_map.items()))}
        (work / WEIGHT_FILES[0]).write_text(json.dumps(index, indent=2) + "\n")
    return set(weight_map)


def write_shard(tensors: dict, path: Path, save_file) -> None:
    save_file(tensors, str(path), metadata={"format": "pt"})


# ---------------------------------------------------------------------------------------------
# Tokenizer


def added_tokens(source: Path) -> dict[int, dict]:
    """id -> {content, special, ...} from the source's tokenizer_config.json."""
    config_path = source / "tokenizer_config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    return {int(i): entry for i, entry in (config.get("added_tokens_decoder") or {}).items()}


def sentencepiece_merges(pieces: list) -> list[tuple[str, str]]:
    """BPE merges equivalent to SentencePiece's BPE: a merge exists for every split of a normal
    piece into two normal pieces, ranked by the merged piece's score (SentencePiece merges the
    adjacent pair whose union scores highest)."""
    normal = {p.piece: i for i, p in enumerate(pieces) if p.type == 1}
    ranked = []
    for piece, index in normal.items():
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in normal and right in normal:
                key = (-pieces[index].score, index, normal[left], normal[right])
                ranked.append((key, left, right))
    ranked.sort()
    return [(left, right) for _, left, right in ranked]


def sentencepiece_tokenizer(model_file: Path, add_bos: bool, renamed: dict[int, str]):
    """A `tokenizers` BPE that gives SentencePiece's ids for a SentencePiece BPE model.

    `renamed` gives some unsplittable pieces the text they stand for: InternLM2's model calls
    its chat tokens [UNUSED_TOKEN_141..146] and its tokenizer_config names them <|plugin|>,
    ..., <|im_start|> on the same ids."""
    from sentencepiece import sentencepiece_model_pb2
    from tokenizers import Tokenizer, decoders, models, normalizers, processors

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model_file.read_bytes())
    trainer, normalizer = proto.trainer_spec, proto.normalizer_spec
    if trainer.model_type != sentencepiece_model_pb2.TrainerSpec.BPE:
        raise ConversionError(f"{model_file} is not a SentencePiece BPE model.")
    if normalizer.remove_extra_whitespaces:
        raise ConversionError(
            f"{model_file}: remove_extra_whitespaces is set, which the converter does not "
            f"reproduce (InternLM2 tokenizers do not set it)."
        )
    pieces = list(proto.pieces)
    if any(pieces[i].type == 1 for i in renamed if i < len(pieces)):
        raise ConversionError(f"{model_file}: an added token renames an ordinary piece.")
    vocab = {renamed.get(i, p.piece): i for i, p in enumerate(pieces)}
    unk = next((p.piece for p in pieces if p.type == 2), None)
    tokenizer = Tokenizer(
        models.BPE(
            vocab=vocab,
            merges=sentencepiece_merges(pieces),
            unk_token=unk,
            fuse_unk=True,
            byte_fallback=trainer.byte_fallback,
        )
    )
    steps = []
    if normalizer.precompiled_charsmap:
        steps.append(normalizers.Precompiled(normalizer.precompiled_charsmap))
    if normalizer.add_dummy_prefix:
        steps.append(normalizers.Prepend("▁"))
    steps.append(normalizers.Replace(" ", "▁"))
    tokenizer.normalizer = normalizers.Sequence(steps)
    decode = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    if normalizer.add_dummy_prefix:
        decode.append(decoders.Strip(" ", 1, 0))
    tokenizer.decoder = decoders.Sequence(decode)
    if add_bos:
        bos = pieces[trainer.bos_id].piece
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, trainer.bos_id)]
        )
    return tokenizer, pieces


def internlm2_tokenizer(source: Path):
    """InternLM2's SentencePiece tokenizer as a fast tokenizer that needs no remote code."""
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast

    config = json.loads((source / "tokenizer_config.json").read_text())
    added = added_tokens(source)
    core, pieces = sentencepiece_tokenizer(
        source / "tokenizer.model",
        bool(config.get("add_bos_token", True)),
        {i: entry["content"] for i, entry in added.items()},
    )
    # The pieces SentencePiece never splits (control and user-defined), then the tokens added
    # on top of its vocabulary, in id order so that each lands on its own id.
    unsplit = (3, 4)  # CONTROL, USER_DEFINED
    entries = {
        i: {"content": p.piece, "special": True} for i, p in enumerate(pieces) if p.type in unsplit
    }
    entries.update(added)
    for token_id in sorted(entries):
        entry = entries[token_id]
        token = AddedToken(
            entry["content"],
            special=entry.get("special", True),
            normalized=False,
            lstrip=entry.get("lstrip", False),
            rstrip=entry.get("rstrip", False),
            single_word=entry.get("single_word", False),
        )
        core.add_special_tokens([token]) if token.special else core.add_tokens([token])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=config.get("bos_token", "<s>"),
        eos_token=config.get("eos_token", "</s>"),
        unk_token=config.get("unk_token", "<unk>"),
        pad_token=config.get("pad_token") or "</s>",
        clean_up_tokenization_spaces=False,
        model_max_length=config.get("model_max_length", 32768),
        extra_special_tokens=IMAGE_TOKENS,
    )
    # The chat and grounding tokens are special as in the original (so that <|im_end|> counts
    # among the special ids, which the app hides from answers).
    specials = [e["content"] for _, e in sorted(entries.items()) if e.get("special", True)]
    tokenizer.add_special_tokens(
        {"additional_special_tokens": specials}, replace_extra_special_tokens=False
    )
    return tokenizer


def qwen2_tokenizer(source: Path):
    """Qwen2 checkpoints keep their byte-level BPE; the class is named, never remote code."""
    from transformers import Qwen2Tokenizer

    return Qwen2Tokenizer.from_pretrained(source, extra_special_tokens=IMAGE_TOKENS)


def convert_tokenizer(source: Path, work: Path, original: OriginalConfig):
    """Write the native tokenizer; check that every added token kept its id."""
    if original.language_model == "internlm2":
        tokenizer = internlm2_tokenizer(source)
    else:
        tokenizer = qwen2_tokenizer(source)
        for name in ("vocab.json", "merges.txt"):
            if (source / name).is_file():
                shutil.copy2(source / name, work / name)
    # IMAGE_TOKENS also names <video>, which the original vocabularies lack: it gets the next
    # id, past the embeddings. It is only a placeholder that the native processor replaces by
    # frames before tokenizing (and the demo's prompt builder never writes it).
    vocab = tokenizer.get_vocab()
    missing = [t for t in (*IMAGE_TOKENS.values(), *GROUNDING_TOKENS) if t not in vocab]
    if missing:
        raise ConversionError(f"The tokenizer has no {', '.join(missing)} token.")
    tokenizer.chat_template = chat_template(TEMPLATES[original.template].separator)
    for token_id, entry in added_tokens(source).items():
        if tokenizer.convert_tokens_to_ids(entry["content"]) != token_id:
            raise ConversionError(
                f"The converted tokenizer gives {entry['content']} another id than {token_id}."
            )
    tokenizer.save_pretrained(work)
    return tokenizer


def special_token_ids(tokenizer) -> dict[str, int | None]:
    ids = tokenizer.convert_tokens_to_ids
    im_end = ids("<|im_end|>")
    return {
        "image": ids(IMAGE_TOKENS["context_image_token"]),
        "im_end": im_end,
        "bos": tokenizer.bos_token_id,
        "pad": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else im_end,
    }


# ---------------------------------------------------------------------------------------------
# The whole checkpoint


def disk_needed(source: Path) -> int:
    """Bytes the converted copy takes: its weights, about as large as the source's."""
    return sum((source / shard).stat().st_size for shard in weight_shards(source))


def check_disk(source: Path, destination: Path) -> int:
    needed = disk_needed(source)
    free = shutil.disk_usage(existing_parent(destination)).free
    if needed > free:
        raise ConversionError(
            f"Converting {source} needs {gigabytes(needed)} of disk next to {destination}, "
            f"and only {gigabytes(free)} is free."
        )
    return needed


def existing_parent(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path


def gigabytes(size: float) -> str:
    return f"{size / 1e9:.1f} GB" if size >= 1e8 else f"{size / 1e6:.1f} MB"


def download_original(model: str) -> Path:
    """A Hub id -> its local snapshot folder (only what the conversion reads)."""
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "tokenizer.model", "vocab.json", "merges.txt"]
    return Path(snapshot_download(model, allow_patterns=patterns))


def convert_checkpoint(
    source: str | Path,
    destination: str | Path,
    progress: bool = True,
    record: dict | None = None,
) -> Path:
    """Convert an original-format checkpoint folder into a native one at `destination`.

    Written into a sibling folder and renamed into place when complete.
    """
    source, destination = Path(source), Path(destination)
    if destination.exists() and any(destination.iterdir()):
        raise ConversionError(f"{destination} exists and is not empty: choose a new folder.")
    config = json.loads((source / "config.json").read_text())
    if not is_original_format(config):
        raise ConversionError(
            f"{source} is not an original-format InternVL checkpoint "
            f"(model_type {config.get('model_type')!r}, not 'internvl_chat')."
        )
    original = read_original_config(config)
    needed = check_disk(source, destination.parent)
    if progress:
        print(
            f"Converting {source} into {destination}: needs {gigabytes(needed)} of disk.",
            file=sys.stderr,
        )
    work = destination.parent / f".{destination.name}.partial-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        write_native_checkpoint(source, work, original, progress)
        record = {"source": str(source), **(record or {})}
        record.update(template=original.template, converter_version=CONVERTER_VERSION)
        (work / CONVERSION_RECORD).write_text(json.dumps(record, indent=2) + "\n")
        if destination.exists():
            destination.rmdir()  # empty (checked above)
        os.replace(work, destination)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return destination


def write_native_checkpoint(
    source: Path, work: Path, original: OriginalConfig, progress: bool
) -> None:
    from transformers import GenerationConfig

    tokenizer = convert_tokenizer(source, work, original)
    ids = special_token_ids(tokenizer)
    config = native_config(original, ids)
    written = convert_weights(source, work, original, progress)
    expected = expected_native_keys(config)
    if written != expected:
        missing, extra = sorted(expected - written), sorted(written - expected)
        raise ConversionError(
            f"The converted weights do not match the native model: missing {missing[:5]}, "
            f"unexpected {extra[:5]}."
        )
    config.save_pretrained(work)
    GenerationConfig(
        bos_token_id=ids["bos"], eos_token_id=ids["im_end"], pad_token_id=ids["pad"]
    ).save_pretrained(work)
    write_processor_configs(
        work,
        original.image_seq_length,
        tile_size=original.image_size,
        max_patches=int(original.chat["max_dynamic_patch"]),
    )


def cleanup_partial(folder: Path) -> Iterator[Path]:
    """Leftover `.NAME.partial-PID` folders of conversions whose process is gone."""
    for partial in folder.glob(".*.partial-*"):
        pid = partial.name.rpartition("-")[2]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(partial, ignore_errors=True)
            yield partial


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Convert an original-format InternVL checkpoint (model_type internvl_chat) "
        "into the native transformers format."
    )
    parser.add_argument("source", help="folder or Hub id of the original checkpoint")
    parser.add_argument("destination", help="new folder for the native checkpoint")
    args = parser.parse_args(argv)
    try:
        source = Path(args.source).expanduser()
        if not source.is_dir():
            if not HUB_ID.fullmatch(args.source):
                raise ConversionError(f"The folder {args.source} does not exist.")
            try:
                source = download_original(args.source)
            except Exception as error:  # the hub client raises many kinds
                raise ConversionError(
                    f"Could not download {args.source} from the Hugging Face Hub "
                    f"({type(error).__name__}). Without network, pass a local folder."
                ) from error
        convert_checkpoint(source, args.destination, record={"source": args.source})
    except ModelLoadError as error:
        print(f"\n{error}\n", file=sys.stderr)
        return 2
    print(f"Wrote {args.destination}. Try it: python app.py --model {args.destination}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
