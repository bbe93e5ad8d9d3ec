"""Write a tiny random-weight InternVL checkpoint in the native transformers format.

    python -m model_backend.tiny DIR

It is the real model class (`InternVLForConditionalGeneration`), the real tokenizer class
(`Qwen2Tokenizer`, byte level, with InternVL's special tokens) and the real 448-pixel tiles, only
with very few, very small layers. It takes seconds, needs no network, and is what the tests and
`python app.py --model DIR` use to try everything without downloading weights. Its answers are
random bytes: the app says so when it serves one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from model_backend.native_files import (
    GROUNDING_TOKENS,
    IMAGE_TOKENS,
    chat_template,
    write_processor_configs,
)

# Marker file in the checkpoint folder; the app reads it to say the weights are random.
RANDOM_WEIGHTS_MARKER = "RANDOM_WEIGHTS"

# The same special tokens as the real InternVL 2.5 tokenizers (ChatML + image + grounding tags).
CHAT_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TILE_SIZE = 448  # the real tile size, so tiling is exercised exactly as for the real models
PATCH_SIZE = 56  # 8x8 patches per tile -> 16 image tokens per tile after pixel shuffle


def build_tokenizer():
    """A byte-level Qwen2 tokenizer with InternVL's special tokens, built without any download."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import Qwen2Tokenizer

    vocab = {symbol: i for i, symbol in enumerate(sorted(ByteLevel.alphabet()))}
    specials = CHAT_TOKENS + list(IMAGE_TOKENS.values()) + GROUNDING_TOKENS
    for token in specials:
        vocab[token] = len(vocab)
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=[],
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=IMAGE_TOKENS,
    )
    # Like the real checkpoints, the grounding tags are special tokens (and so are stripped by a
    # plain skip_special_tokens decode; the backend keeps them on purpose).
    tokenizer.add_special_tokens({"additional_special_tokens": CHAT_TOKENS[1:] + GROUNDING_TOKENS})
    tokenizer.chat_template = chat_template()
    return tokenizer


def build_config(tokenizer):
    """A real InternVLConfig (Qwen2 language model) with tiny sizes and the real 448 tiles."""
    from transformers import InternVLConfig

    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKENS["context_image_token"])
    im_end_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    pad_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    tokens_per_tile = (TILE_SIZE // PATCH_SIZE) ** 2 // 4
    return InternVLConfig(
        text_config={
            "model_type": "qwen2",
            "vocab_size": len(tokenizer),
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 32768,
            "tie_word_embeddings": False,
            "eos_token_id": im_end_id,
            "pad_token_id": pad_id,
        },
        vision_config={
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 64,
            "image_size": TILE_SIZE,
            "patch_size": PATCH_SIZE,
        },
        image_token_id=image_token_id,
        image_seq_length=tokens_per_tile,
        downsample_ratio=0.5,
        tie_word_embeddings=False,
    )


def write_tiny_checkpoint(directory: str | Path, seed: int = 0) -> Path:
    """Write the tiny checkpoint into `directory` (created if needed) and return its path."""
    import torch
    from transformers import GenerationConfig, InternVLForConditionalGeneration

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    config = build_config(tokenizer)
    model = InternVLForConditionalGeneration(config).eval()
    # Wide, untied random embeddings and output layer, so that greedy decoding wanders over many
    # tokens instead of repeating the last one: streaming is then visible in the UI and in tests.
    with torch.no_grad():
        model.get_input_embeddings().weight.normal_(0.0, 1.0)
        model.get_output_embeddings().weight.normal_(0.0, 1.0)
    model.generation_config = GenerationConfig(
        eos_token_id=config.text_config.eos_token_id,
        pad_token_id=config.text_config.pad_token_id,
    )
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    write_processor_configs(directory, config.image_seq_length)
    (directory / RANDOM_WEIGHTS_MARKER).write_text(
        "This checkpoint was written by `python -m model_backend.tiny`: its weights are random.\n"
    )
    return directory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", help="folder to write the checkpoint into")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = write_tiny_checkpoint(args.directory, seed=args.seed)
    print(f"Wrote a tiny random-weight InternVL checkpoint to {path}")
    print(f"Try the UI with it: python app.py --model {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
