"""7. GPU: decode speed and time to first token of random-weight models with the real
InternVL2_5-2B-MPO and -8B-MPO shapes (bf16, one image at 12 tiles), against the
memory-bandwidth bound (every weight read once per token). Needs a CUDA GPU:

    python -m benchmarks gpu

The bound uses the card's memory bandwidth: 3,350 GB/s for an H100 SXM, 4,800 for an H200
(read from the device name; other cards: pass `bandwidth_gbs` to `run`).

No download: the configurations are written here from the published model sizes.
"""

from __future__ import annotations

import statistics
import time

from benchmarks.common import table

VISION = {  # InternViT-300M-448px-V2_5
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
    "image_size": 448,
    "patch_size": 14,
}
TEXT = {  # InternLM2.5 backbones as converted to Llama in the -hf checkpoints
    "InternVL2_5-2B-MPO": {
        "hidden_size": 2048,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "num_key_value_heads": 8,
        "intermediate_size": 8192,
    },
    "InternVL2_5-8B-MPO": {
        "hidden_size": 4096,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "intermediate_size": 14336,
    },
}
VOCAB, IMAGE_TOKEN = 92553, 92546


def build(name: str):
    import torch
    from transformers import InternVLConfig, InternVLForConditionalGeneration

    text = {
        "model_type": "llama",
        "vocab_size": VOCAB,
        "max_position_embeddings": 32768,
        "rope_theta": 1_000_000,
        **TEXT[name],
    }
    config = InternVLConfig(
        vision_config=VISION,
        text_config=text,
        image_token_id=IMAGE_TOKEN,
        image_seq_length=256,
        tie_word_embeddings=False,
    )
    with torch.device("cuda"):
        model = InternVLForConditionalGeneration(config).to(torch.bfloat16).eval()
    return model


def measure(model, new_tokens: int = 128) -> tuple[float, float]:
    """(seconds to first token, decode tokens/s) for one 12-tile image and a short question."""
    import torch
    from transformers.generation.streamers import BaseStreamer

    tiles = 13
    ids = [1] * 20 + [IMAGE_TOKEN] * (256 * tiles) + [2] * 30
    input_ids = torch.tensor([ids], device="cuda")
    pixels = torch.randn(tiles, 3, 448, 448, device="cuda", dtype=torch.bfloat16)
    times: list[float] = []

    class Clock(BaseStreamer):
        def put(self, value):
            times.append(time.perf_counter())

        def end(self):
            pass

    torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.inference_mode():
        model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            pixel_values=pixels,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            streamer=Clock(),
        )
    torch.cuda.synchronize()
    first = times[1] - start  # times[0] is the prompt, handed over before anything runs
    decode = (times[-1] - times[1]) / (len(times) - 2)
    return first, 1 / decode


BANDWIDTH_GBS = {"H200": 4800.0, "H100": 3350.0}


def run(bandwidth_gbs: float | None = None, runs: int = 3) -> str:
    import torch

    if not torch.cuda.is_available():
        return (
            "### 7. GPU\n\nNo CUDA GPU here: not measured (see benchmarks/gpu.py for the command)."
        )
    if bandwidth_gbs is None:
        name = torch.cuda.get_device_name(0)
        bandwidth_gbs = next((v for k, v in BANDWIDTH_GBS.items() if k in name), 3350.0)
    rows = [
        [
            "model",
            "weights GB",
            "first token s",
            "decode tokens/s",
            "bandwidth bound tokens/s",
            "of the bound",
        ]
    ]
    for name in TEXT:
        model = build(name)
        weights = sum(p.numel() * p.element_size() for p in model.parameters()) / 1e9
        measure(model, 8)  # warm-up
        results = [measure(model) for _ in range(runs)]
        first = statistics.median(r[0] for r in results)
        speed = statistics.median(r[1] for r in results)
        bound = bandwidth_gbs / weights
        rows.append(
            [
                name,
                f"{weights:.1f}",
                f"{first:.3f}",
                f"{speed:.0f}",
                f"{bound:.0f}",
                f"{speed / bound:.0%}",
            ]
        )
        del model
        torch.cuda.empty_cache()
    device = torch.cuda.get_device_name(0)
    return f"### 7. GPU ({device}, bf16, SDPA, random weights, one 12-tile image)\n\n" + table(rows)


if __name__ == "__main__":
    print(run())
