"""What a native InternVL checkpoint carries besides weights and config, in one place.

Both checkpoint writers use it: the tiny random-weight one (`model_backend.tiny`) and the
conversion of original-format checkpoints (`model_backend.convert`).
"""

from __future__ import annotations

import json
from pathlib import Path

# The tokenizer attributes InternVLProcessor reads (tokenizer.start_image_token, ...).
IMAGE_TOKENS = {
    "start_image_token": "<img>",
    "end_image_token": "</img>",
    "context_image_token": "<IMG_CONTEXT>",
    "video_token": "<video>",
}
GROUNDING_TOKENS = ["<quad>", "</quad>", "<ref>", "</ref>", "<box>", "</box>"]

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def chat_template(separator: str = "<|im_end|>\n") -> str:
    """The ChatML chat template of the converted -hf checkpoints (an image item becomes
    <IMG_CONTEXT>), with the separator of the checkpoint's conversation template. The app builds
    its prompts itself (model_backend.prompt); this is for other tools that open the folder."""
    end = separator.replace("\n", "\\n")
    return (
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n'}}"
        "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
        "{% for content in message['content'] %}"
        "{% if content['type'] == 'image' %}{{ '<IMG_CONTEXT>\\n' }}"
        "{% elif content['type'] == 'video' %}{{ '<video>\\n' }}"
        "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
        "{% endfor %}{% endif %}{{'" + end + "'}}{% endfor %}"
        "{% if add_generation_prompt %}{{'<|im_start|>assistant\\n'}}{% endif %}"
    )


def write_processor_configs(
    directory: Path, image_seq_length: int, tile_size: int = 448, max_patches: int = 12
) -> None:
    """Image and video processor configs as the converted checkpoints have them (bicubic,
    ImageNet mean and std, square tiles)."""
    common = {
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": IMAGENET_MEAN,
        "image_std": IMAGENET_STD,
        "resample": 3,  # bicubic
        "rescale_factor": 1 / 255,
        "size": {"height": tile_size, "width": tile_size},
    }
    image = {
        **common,
        "image_processor_type": "GotOcr2ImageProcessor",
        "crop_to_patches": False,
        "min_patches": 1,
        "max_patches": max_patches,
        "processor_class": "InternVLProcessor",
    }
    video = {**common, "video_processor_type": "InternVLVideoProcessor", "initial_shift": True}
    processor = {"processor_class": "InternVLProcessor", "image_seq_length": image_seq_length}
    for name, content in [
        ("preprocessor_config.json", image),
        ("video_preprocessor_config.json", video),
        ("processor_config.json", processor),
    ]:
        (Path(directory) / name).write_text(json.dumps(content, indent=2) + "\n")
