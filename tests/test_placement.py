"""Placing the big checkpoints over several GPUs, memory estimates and --quantize, without GPUs.

The placement is computed for the real InternVL2_5-26B and -78B shapes (their original configs'
fields, converted by model_backend.convert) on the meta device, with made-up GPU memory.
"""

from __future__ import annotations

import pytest
import torch

from model_backend.convert import native_config, read_original_config
from model_backend.errors import ModelLoadError
from model_backend.loading import (
    FIXED_MODULES,
    MemoryEstimate,
    check_fits,
    estimate_memory,
    module_sizes,
    parse_max_memory,
    plan_device_map,
)
from tests.conftest import EXAMPLES

GiB = 2**30

# InternViT-6B-448px-V2_5 (its config leaves out norm_type: RMSNorm by the original default).
VISION_6B = {
    "hidden_size": 3200,
    "intermediate_size": 12800,
    "num_attention_heads": 25,
    "num_hidden_layers": 45,
    "patch_size": 14,
    "image_size": 448,
    "qk_normalization": True,
    "qkv_bias": False,
}
ORIGINAL_CONFIGS = {
    "InternVL2_5-26B": {
        "model_type": "internvl_chat",
        "template": "internvl2_5",
        "ps_version": "v2",
        "force_image_size": 448,
        "vision_config": VISION_6B,
        "llm_config": {  # internlm2_5-20b-chat
            "architectures": ["InternLM2ForCausalLM"],
            "hidden_size": 6144,
            "intermediate_size": 16384,
            "num_hidden_layers": 48,
            "num_attention_heads": 48,
            "num_key_value_heads": 8,
            "vocab_size": 92553,
            "max_position_embeddings": 32768,
            "bias": False,
        },
    },
    "InternVL2_5-78B": {
        "model_type": "internvl_chat",
        "template": "internvl2_5",
        "ps_version": "v2",
        "force_image_size": 448,
        "vision_config": VISION_6B,
        "llm_config": {  # Qwen2.5-72B-Instruct
            "architectures": ["Qwen2ForCausalLM"],
            "hidden_size": 8192,
            "intermediate_size": 29568,
            "num_hidden_layers": 80,
            "num_attention_heads": 64,
            "num_key_value_heads": 8,
            "vocab_size": 151674,
            "max_position_embeddings": 32768,
        },
    },
}
IDS = {"image": 92546, "im_end": 92542, "bos": 1, "pad": 2}


@pytest.fixture(scope="module", params=sorted(ORIGINAL_CONFIGS))
def big_config(request):
    original = read_original_config(ORIGINAL_CONFIGS[request.param])
    return request.param, native_config(original, IDS)


def layers_on(device_map: dict, gpu: int) -> list[int]:
    return [
        int(name.rsplit(".", 1)[1])
        for name, placed in device_map.items()
        if ".layers." in name and placed == gpu
    ]


def planned_bytes(device_map, sizes, config) -> dict[int, int]:
    """What each GPU holds: modules, plus the KV cache of its layers."""
    from model_backend.loading import PLANNED_TOKENS

    text = config.text_config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    kv = 2 * text.num_key_value_heads * head_dim * PLANNED_TOKENS * 2
    held: dict[int, int] = {}
    for name, gpu in device_map.items():
        held[gpu] = held.get(gpu, 0) + sizes.get(name, 0) + (kv if ".layers." in name else 0)
    return held


MEMORY = {  # made-up GPUs, enough for bf16 weights with a margin
    "InternVL2_5-26B": {2: 40 * GiB, 4: 24 * GiB, 8: 16 * GiB},
    "InternVL2_5-78B": {2: 120 * GiB, 4: 48 * GiB, 8: 24 * GiB},
}


@pytest.mark.parametrize("gpus", [2, 4, 8])
def test_placement_of_the_big_checkpoints(big_config, gpus):
    name, config = big_config
    memory = dict.fromkeys(range(gpus), MEMORY[name][gpus])
    device_map = plan_device_map(config, memory, torch.bfloat16)
    sizes = module_sizes(config, torch.bfloat16, None)

    # Every parameter of the native model has a place.
    assert set(sizes) <= set(device_map)
    # Vision tower, projector, embeddings and output layer on the first GPU...
    assert all(device_map[module] == 0 for module in FIXED_MODULES)
    # ... with fewer decoder layers there than on any other GPU, the rest balanced.
    counts = [len(layers_on(device_map, gpu)) for gpu in range(gpus)]
    assert sum(counts) == config.text_config.num_hidden_layers
    assert all(counts[0] < count for count in counts[1:]), counts
    assert max(counts[1:]) - min(counts[1:]) <= 1, counts
    # Layers in order: GPU k holds a contiguous run that follows GPU k-1's.
    order = [device_map[f"model.language_model.layers.{i}"] for i in range(sum(counts))]
    assert order == sorted(order)
    # Nothing over its budget, KV cache included.
    held = planned_bytes(device_map, sizes, config)
    assert all(held[gpu] <= memory[gpu] for gpu in held), held


def test_uneven_max_memory_gives_the_larger_gpu_more_layers(big_config):
    _, config = big_config
    memory = parse_max_memory("0=60GiB,1=100GiB")
    device_map = plan_device_map(config, memory, torch.bfloat16)
    assert len(layers_on(device_map, 1)) > len(layers_on(device_map, 0))


def test_78b_does_not_fit_two_64gib_gpus_in_bf16_and_the_message_names_the_ways_out():
    config = native_config(read_original_config(ORIGINAL_CONFIGS["InternVL2_5-78B"]), IDS)
    with pytest.raises(ModelLoadError) as error:
        plan_device_map(config, dict.fromkeys(range(2), 64 * GiB), torch.bfloat16)
    assert "--quantize" in str(error.value)
    # In 4 bits the language model fits on the same two GPUs.
    device_map = plan_device_map(config, dict.fromkeys(range(2), 64 * GiB), torch.bfloat16, "4bit")
    assert device_map["lm_head"] == 0


def test_parse_max_memory():
    assert parse_max_memory("0=20GiB,1=40GiB") == {0: 20 * GiB, 1: 40 * GiB}
    assert parse_max_memory("0=1500MB") == {0: 1_500_000_000}
    for bad in ("20GiB", "0=20", "a=1GiB", "0=lots"):
        with pytest.raises(ModelLoadError, match="--max-memory"):
            parse_max_memory(bad)


def test_memory_estimate_counts_weights_kv_cache_and_quantization():
    original = ORIGINAL_CONFIGS["InternVL2_5-78B"]
    full = estimate_memory(original, 156 * 10**9, torch.bfloat16, None)
    assert full.weights == 156 * 10**9
    # 80 layers x K and V x 8 heads x 128 x (13 tiles x 256 + text + answer) x 2 bytes
    assert 1.5 * GiB < full.kv_cache < 2.5 * GiB
    four_bit = estimate_memory(original, 156 * 10**9, torch.bfloat16, "4bit")
    # The 6B vision tower stays in 16 bit, the rest shrinks to about a quarter.
    assert 45 * 10**9 < four_bit.weights < 60 * 10**9
    with pytest.raises(ModelLoadError) as error:
        check_fits("OpenGVLab/InternVL2_5-78B", full, 24 * GiB, "1 GPU(s) have")
    message = str(error.value)
    for way_out in ("smaller model", "--quantize", "GPUs", "--backend openai"):
        assert way_out in message
    check_fits("small", MemoryEstimate(GiB, GiB, GiB), 4 * GiB, "this machine has")


def test_quantize_is_refused_without_cuda(tiny_checkpoint):
    from model_backend.local import LocalBackend

    with pytest.raises(ModelLoadError) as error:
        LocalBackend(str(tiny_checkpoint), device="cpu", quantize="8bit")
    assert "--quantize 8bit needs an NVIDIA GPU" in str(error.value)
    with pytest.raises(ModelLoadError, match="--max-memory"):
        LocalBackend(str(tiny_checkpoint), device="cpu", max_memory="0=10GiB")


def test_the_split_path_generates_on_the_cpu(tiny_checkpoint):
    """The placement computed for three made-up GPUs, with every GPU mapped to the CPU, goes
    through from_pretrained(device_map=...) and generation as on real GPUs."""
    from transformers import AutoConfig

    from model_backend.base import Conversation, GenerationSettings, Turn
    from model_backend.local import LocalBackend

    config = AutoConfig.from_pretrained(tiny_checkpoint)
    plan = plan_device_map(config, dict.fromkeys(range(3), 2 * GiB), torch.float32)
    assert len({plan[name] for name in plan if ".layers." in name}) == 2  # layers split in two
    backend = LocalBackend(
        str(tiny_checkpoint), device="cpu", device_map=dict.fromkeys(plan, "cpu")
    )
    conversation = Conversation((Turn("user", "Hello", (str(EXAMPLES / "cat.jpg"),)),))
    stream = backend.stream(conversation, GenerationSettings(max_new_tokens=5))
    assert "".join(stream)
    assert stream.stats.new_tokens == 5


def test_quantize_leaves_the_vision_tower_projector_and_output_layer_in_16_bit():
    """transformers matches the skipped modules by full name: a name that matched nothing
    would quantize the vision tower too (4-bit breaks InternViT-6B)."""
    from transformers import InternVLForConditionalGeneration
    from transformers.quantizers.quantizers_utils import should_convert_module

    from model_backend.loading import UNQUANTIZED_MODULES

    config = native_config(read_original_config(ORIGINAL_CONFIGS["InternVL2_5-26B"]), IDS)
    config.vision_config.num_hidden_layers = config.text_config.num_hidden_layers = 1
    with torch.device("meta"):
        model = InternVLForConditionalGeneration(config)
    linear = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    quantized = {n for n in linear if should_convert_module(n, UNQUANTIZED_MODULES)}
    assert quantized and all(n.startswith("model.language_model.layers.") for n in quantized)
    kept = set(linear) - quantized
    assert {n.split(".")[1] if n.startswith("model.") else n for n in kept} == {
        "vision_tower",
        "multi_modal_projector",
        "lm_head",
    }


def test_max_memory_naming_a_missing_gpu_is_refused(monkeypatch):
    from model_backend.loading import check_limits

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    check_limits({0: GiB, 1: GiB}, torch.device("cuda"))
    with pytest.raises(ModelLoadError, match="names GPU 2, but this machine has 2"):
        check_limits({0: GiB, 2: GiB}, torch.device("cuda"))
