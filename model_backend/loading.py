"""From a `--model` name to a model in memory: format, conversion, memory, placement, precision.

- Native checkpoints (`model_type: internvl`, the -hf repos) load as they are.
- Original-format ones (`internvl_chat`: InternVL2_5-1B ... 78B, the -MPO twins,
  InternVL2-8B-MPO) are converted once into a cache (model_backend.convert), keyed by the Hub
  revision or the folder's content; later starts load the cached copy.
- Before any weight is read, the memory the model needs is compared with what the devices have.
- Several GPUs: the vision tower, projector, embeddings and output layer go on the first GPU
  with fewer decoder layers there; the other layers are spread over the rest by free memory.
- `--quantize 8bit|4bit` (bitsandbytes) quantizes the language model only.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import torch

from model_backend.convert import (
    CONVERSION_RECORD,
    CONVERTER_VERSION,
    HUB_ID,
    WEIGHT_FILES,
    cleanup_partial,
    convert_checkpoint,
    download_original,
    gigabytes,
    is_original_format,
    read_original_config,
)
from model_backend.errors import ModelLoadError
from model_backend.prompt import DEFAULT_TEMPLATE, TEMPLATES, PromptTemplate
from model_backend.thinking import has_thinking_mode
from model_backend.zerogpu import on_zero_gpu

log = logging.getLogger(__name__)

NATIVE_CHECKPOINTS = (
    "OpenGVLab/InternVL2_5-2B-MPO-hf, OpenGVLab/InternVL2_5-8B-MPO-hf, "
    "OpenGVLab/InternVL3-{1B,2B,8B,9B,14B,38B,78B}-hf"
)
# What the memory estimate plans for besides the weights: a 12-tile image (12 tiles and the
# thumbnail, 256 tokens each), some text, and a long answer.
PLANNED_TOKENS = 13 * 256 + 512 + 2048
ACTIVATIONS = 1.5 * 2**30  # vision tower on 13 tiles, logits, CUDA context: a rough allowance
QUANTIZED_BYTES_PER_PARAMETER = {"8bit": 1.0, "4bit": 0.55}  # 4-bit: nf4 + scales
# The modules that stay in 16-bit when quantizing (4-bit is known to break InternViT-6B).
# Full names from the root: transformers matches them as prefixes (or as name endings).
UNQUANTIZED_MODULES = ["model.vision_tower", "model.multi_modal_projector", "lm_head"]


# ---------------------------------------------------------------------------------------------
# Devices and precision


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"--device {device} was asked for, but no CUDA GPU is available.")
    return resolved


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """auto: bfloat16 on GPUs that support it, float16 on other GPUs, float32 on the CPU."""
    if dtype != "auto":
        return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[
            dtype
        ]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def check_attention(attn: str) -> None:
    if attn == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        raise ModelLoadError(
            "--attn flash_attention_2 needs the flash-attn package (pip install flash-attn); "
            "the default --attn sdpa needs nothing extra and is nearly as fast."
        )


def check_quantize(quantize: str | None) -> None:
    """--quantize needs CUDA and bitsandbytes; say so before anything is loaded."""
    if not quantize:
        return
    if quantize not in QUANTIZED_BYTES_PER_PARAMETER:
        raise ModelLoadError(f"--quantize takes 8bit or 4bit, not {quantize!r}.")
    if not torch.cuda.is_available():
        raise ModelLoadError(
            f"--quantize {quantize} needs an NVIDIA GPU (bitsandbytes quantizes on CUDA), and "
            f"this machine has none. On the CPU, run the model in full precision, choose a "
            f"smaller model (InternVL2_5-1B, -2B), or point the demo at an engine with "
            f"--backend openai."
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelLoadError(f"--quantize {quantize} needs bitsandbytes: pip install bitsandbytes")


def quantization_config(quantize: str | None, dtype: torch.dtype):
    if not quantize:
        return None
    from transformers import BitsAndBytesConfig

    if quantize == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=UNQUANTIZED_MODULES)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=dtype,
        bnb_4bit_use_double_quant=True,
        llm_int8_skip_modules=UNQUANTIZED_MODULES,
    )


def parse_max_memory(text: str | None) -> dict[int, int]:
    """'0=20GiB,1=40GiB' -> {0: bytes, 1: bytes}."""
    if not text:
        return {}
    limits = {}
    for item in text.split(","):
        gpu, sep, size = item.strip().partition("=")
        match = re.fullmatch(r"\s*([\d.]+)\s*(GiB|GB|MiB|MB)\s*", size, re.IGNORECASE)
        if not sep or not gpu.strip().isdigit() or not match:
            raise ModelLoadError(
                f"--max-memory takes GPU=SIZE pairs such as 0=20GiB,1=40GiB; got {item!r}."
            )
        number, unit = float(match.group(1)), match.group(2).lower()
        scale = {"gib": 2**30, "gb": 10**9, "mib": 2**20, "mb": 10**6}[unit]
        limits[int(gpu)] = int(number * scale)
    return limits


def gpu_memory(max_memory: dict[int, int]) -> dict[int, int]:
    """Bytes to plan with on each GPU: --max-memory where given, else 90% of what is free."""
    if max_memory:
        return dict(max_memory)
    return {i: int(torch.cuda.mem_get_info(i)[0] * 0.9) for i in range(torch.cuda.device_count())}


def available_cpu_memory() -> int:
    """MemAvailable (what can be allocated without swapping), or free pages elsewhere."""
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


# ---------------------------------------------------------------------------------------------
# Config and format


def read_model_config(model: str) -> dict:
    """config.json of a local folder or a Hub repo (from the cache when offline)."""
    folder = Path(model).expanduser()
    if folder.is_dir():
        config_path = folder / "config.json"
        if not config_path.is_file():
            raise ModelLoadError(f"{model} is a folder but has no config.json: not a checkpoint.")
        return json.loads(config_path.read_text())
    if not HUB_ID.fullmatch(model):
        raise ModelLoadError(
            f"The folder {model} does not exist (looked in {folder.resolve()}). Check the path; "
            f"a Hugging Face Hub id looks like OpenGVLab/InternVL2_5-8B."
        )
    from huggingface_hub import constants, hf_hub_download

    try:  # the cache first: no network needed, and nothing to wait for
        cached = hf_hub_download(model, "config.json", local_files_only=True)
    except Exception:  # not cached (the hub client raises many kinds)
        cached = None
    unreachable = not constants.HF_HUB_OFFLINE and not hub_reachable(constants.ENDPOINT)
    if cached:
        if unreachable:  # use the cache without the hub client's retries on every file
            log.warning(
                "%s cannot be reached: using the cached copy of %s", constants.ENDPOINT, model
            )
            constants.HF_HUB_OFFLINE = True
        return json.loads(Path(cached).read_text())
    if unreachable:
        # Said at once: the hub client would retry with back-off for most of a minute.
        raise ModelLoadError(cannot_fetch_message(model, f"{constants.ENDPOINT} cannot be reached"))
    try:
        return json.loads(Path(hf_hub_download(model, "config.json")).read_text())
    except Exception as error:  # the hub client raises many kinds; all mean "cannot get it"
        raise ModelLoadError(cannot_fetch_message(model, error)) from error


def hub_reachable(endpoint: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the Hub opens (behind a proxy: assume it does)."""
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY")):
        return True
    url = urlsplit(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def cannot_fetch_message(model: str, error: Exception | str) -> str:
    reason = error if isinstance(error, str) else f"{type(error).__name__}: {first_line(error)}"
    return (
        f"Could not load the model '{model}': it is not a local folder, and its files could not "
        f"be downloaded from the Hugging Face Hub or found in the local cache ({reason}). "
        f"If this machine has no network, download the model elsewhere and pass its folder with "
        f"--model PATH, or try the demo without any download on a tiny random-weight "
        f"checkpoint: python -m model_backend.tiny ./tiny-model && python app.py --model "
        f"./tiny-model"
    )


def first_line(error: Exception) -> str:
    return str(error).splitlines()[0] if str(error) else "no details"


def check_format(model: str, config: dict) -> None:
    """Native and original-format InternVL checkpoints are welcome; anything else is not."""
    if config.get("model_type") == "internvl":
        return
    if is_original_format(config):
        read_original_config(config)  # refuses what cannot be converted, naming the field
        return
    raise ModelLoadError(
        f"'{model}' is not an InternVL checkpoint (model_type '{config.get('model_type')}'). "
        f"Native checkpoints ({NATIVE_CHECKPOINTS}) load as they are; original-format ones "
        f"(OpenGVLab/InternVL2_5-1B ... -78B, their -MPO twins) are converted on load."
    )


def language_model_shape(config: dict) -> tuple[int, int, int]:
    """(decoder layers, key/value heads, head size) of a native or original config."""
    text = config.get("text_config") or config.get("llm_config") or {}
    heads = text.get("num_attention_heads", 32)
    kv_heads = text.get("num_key_value_heads") or heads
    head_dim = text.get("head_dim") or text.get("hidden_size", 4096) // heads
    return text.get("num_hidden_layers", 32), kv_heads, head_dim


def text_model_type(config: dict) -> str | None:
    """The language model's `model_type` ("qwen2", "qwen3", ...) of a native or original config."""
    return (config.get("text_config") or config.get("llm_config") or {}).get("model_type")


def vision_parameters(config: dict) -> int:
    """About how many parameters the vision tower and projector have (from their shapes)."""
    vision = config.get("vision_config") or {}
    text = config.get("text_config") or config.get("llm_config") or {}
    d, inner = vision.get("hidden_size", 1024), vision.get("intermediate_size", 4096)
    hidden = text.get("hidden_size", 4096)
    tower = vision.get("num_hidden_layers", 24) * (4 * d * d + 2 * d * inner)
    return tower + 4 * d * hidden + hidden * hidden


# ---------------------------------------------------------------------------------------------
# Memory estimate


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    kv_cache: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.activations


def weight_bytes(model: str) -> int | None:
    """Size of the checkpoint's weights, from its index (or files); None when unknown."""
    folder = Path(model).expanduser()
    if not folder.is_dir():
        return hub_weight_bytes(model)
    index = folder / WEIGHT_FILES[0]
    if index.is_file():
        size = json.loads(index.read_text()).get("metadata", {}).get("total_size")
        if size:
            return int(size)
    files = list(folder.glob("*.safetensors"))
    return sum(f.stat().st_size for f in files) or None


def hub_weight_bytes(model: str) -> int | None:
    """From the safetensors headers on the Hub (sharded or not), without the weights."""
    from huggingface_hub import constants, get_safetensors_metadata, hf_hub_download

    try:  # a sharded checkpoint's index, cached from an earlier start
        cached = hf_hub_download(model, WEIGHT_FILES[0], local_files_only=True)
        return json.loads(Path(cached).read_text())["metadata"]["total_size"]
    except Exception:  # not cached, or not sharded
        pass
    if constants.HF_HUB_OFFLINE:
        return None
    try:
        metadata = get_safetensors_metadata(model)
    except Exception:  # offline, or no safetensors: no estimate, no harm
        return None
    sizes = {"F32": 4, "F16": 2, "BF16": 2, "I8": 1, "U8": 1, "F64": 8, "I64": 8, "I32": 4}
    return sum(count * sizes.get(dtype, 2) for dtype, count in metadata.parameter_count.items())


def estimate_memory(
    config: dict, checkpoint_bytes: int, dtype: torch.dtype, quantize: str | None
) -> MemoryEstimate:
    """Weights at the dtype the model will run in, plus the KV cache of a 12-tile image with a
    long answer, plus an allowance for activations. Checkpoints are stored in 16 bit."""
    element = torch.finfo(dtype).bits // 8
    weights = checkpoint_bytes * element // 2
    if quantize:
        # The vision tower, projector, embeddings and output layer stay in 16 bit.
        kept = (vision_parameters(config) + 2 * embedding_parameters(config)) * element
        language = max(0, weights - kept) / element
        weights = kept + int(language * QUANTIZED_BYTES_PER_PARAMETER[quantize])
    layers, kv_heads, head_dim = language_model_shape(config)
    kv_cache = 2 * layers * kv_heads * head_dim * PLANNED_TOKENS * element
    return MemoryEstimate(weights, kv_cache, int(ACTIVATIONS))


def estimate_weight_bytes(
    model: str, device: str = "auto", dtype: str = "auto", quantize: str | None = None, **_
) -> int | None:
    """About how many bytes `model`'s weights take once loaded with these options, from its
    config and file sizes without loading it (None: unknown). Takes load_model's options."""
    size = weight_bytes(model)
    if size is None:
        return None
    config = read_model_config(model)
    # estimate_memory takes 16-bit checkpoints; some (the tiny one) are stored in float32.
    stored = config.get("dtype") or config.get("torch_dtype") or "bfloat16"
    size = size * 2 // (4 if stored == "float32" else 2)
    torch_dtype = resolve_dtype(dtype, resolve_device(device))
    return estimate_memory(config, size, torch_dtype, quantize).weights


def device_memory(device: torch.device) -> int:
    """All the memory of the device the models go on: the RAM, or every GPU's (--device auto
    spreads a model over all of them)."""
    if device.type == "cuda":
        indices = range(torch.cuda.device_count()) if device.index is None else [device.index]
        return sum(torch.cuda.get_device_properties(i).total_memory for i in indices)
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def embedding_parameters(config: dict) -> int:
    text = config.get("text_config") or config.get("llm_config") or {}
    return text.get("vocab_size", 92553) * text.get("hidden_size", 4096)


def check_fits(model: str, estimate: MemoryEstimate, available: int, where: str) -> None:
    if estimate.total <= available:
        return
    raise ModelLoadError(
        f"'{model}' will not fit: it needs about {gigabytes(estimate.total)} (weights "
        f"{gigabytes(estimate.weights)}, KV cache for a 12-tile image and a long answer "
        f"{gigabytes(estimate.kv_cache)}, working memory {gigabytes(estimate.activations)}), "
        f"and {where} {gigabytes(available)}. Ways out: a smaller model (InternVL2_5-1B, 2B, "
        f"4B, 8B), --quantize 8bit or 4bit (about 1 or 0.5 GB per billion parameters), more "
        f"GPUs (--device auto spreads the model over all of them), or an engine such as vLLM "
        f"or LMDeploy with tensor parallelism (--backend openai --endpoint ...)."
    )


# ---------------------------------------------------------------------------------------------
# Placement over several GPUs


def module_sizes(config, dtype: torch.dtype, quantize: str | None) -> dict[str, int]:
    """Bytes of each placeable module of the native model (built on the meta device)."""
    from transformers import InternVLForConditionalGeneration

    with torch.device("meta"):
        model = InternVLForConditionalGeneration(config)
    element = torch.finfo(dtype).bits // 8
    quantized = QUANTIZED_BYTES_PER_PARAMETER.get(quantize or "", element)
    sizes: dict[str, int] = {}
    for name, parameter in model.named_parameters():
        module = placeable_module(name)
        per_parameter = quantized if ".layers." in module else element
        sizes[module] = sizes.get(module, 0) + int(parameter.numel() * per_parameter)
    return sizes


def placeable_module(name: str) -> str:
    """The unit a parameter is placed with: a decoder layer, or one of the fixed modules."""
    match = re.match(r"(model\.language_model\.layers\.\d+)\.", name)
    if match:
        return match.group(1)
    for fixed in FIXED_MODULES:
        if name.startswith(fixed + "."):
            return fixed
    raise ValueError(f"no placement for {name}")


# On the first GPU: what the images go through, and both ends of the language model.
FIXED_MODULES = (
    "model.vision_tower",
    "model.multi_modal_projector",
    "model.language_model.embed_tokens",
    "model.language_model.norm",
    "model.language_model.rotary_emb",
    "lm_head",
)


def plan_device_map(
    config, memory: dict[int, int], dtype: torch.dtype, quantize: str | None = None
) -> dict[str, int]:
    """Module -> GPU. The fixed modules go on the first GPU; decoder layers fill every GPU in
    proportion to the room left on it (so the first GPU holds fewer), in order, each layer with
    its share of the planned KV cache. Raises ModelLoadError if the layers do not fit."""
    sizes = module_sizes(config, dtype, quantize)
    layers = sorted(
        (name for name in sizes if ".layers." in name), key=lambda n: int(n.rsplit(".", 1)[1])
    )
    text = config.text_config
    kv_heads = text.num_key_value_heads or text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    element = torch.finfo(dtype).bits // 8
    per_layer = sizes[layers[0]] + 2 * kv_heads * head_dim * PLANNED_TOKENS * element
    fixed = sum(size for name, size in sizes.items() if ".layers." not in name)
    gpus = sorted(memory)
    room = [memory[g] - (fixed + ACTIVATIONS if g == gpus[0] else ACTIVATIONS / 3) for g in gpus]
    capacity = [max(0, int(r // per_layer)) for r in room]
    if room[0] < 0 or sum(capacity) < len(layers):
        raise ModelLoadError(
            f"The model does not fit on {len(gpus)} GPU(s) with "
            f"{', '.join(f'{g}: {gigabytes(memory[g])}' for g in gpus)}: the first GPU needs "
            f"{gigabytes(fixed + ACTIVATIONS)} for the vision tower, embeddings and output "
            f"layer, and each of the {len(layers)} decoder layers {gigabytes(per_layer)}. Use "
            f"--quantize, more GPUs, or an engine (--backend openai)."
        )
    counts = proportional_counts(len(layers), capacity)
    device_map = {name: gpus[0] for name in FIXED_MODULES}
    start = 0
    for gpu, count in zip(gpus, counts, strict=True):
        for name in layers[start : start + count]:
            device_map[name] = gpu
        start += count
    return device_map


def proportional_counts(total: int, capacity: list[int]) -> list[int]:
    """Split `total` items over bins in proportion to their capacity, never over it."""
    whole = sum(capacity)
    counts = [min(c, total * c // whole) for c in capacity]
    # Hand out the rest to the bins with the most spare room, one at a time.
    while sum(counts) < total:
        spare = [(c - n) / max(c, 1) for c, n in zip(capacity, counts, strict=True)]
        counts[spare.index(max(spare))] += 1
    return counts


# ---------------------------------------------------------------------------------------------
# Conversion cache


def converted_root() -> Path:
    """Where converted copies live: INTERNVL_CONVERTED_DIR, else the user's cache folder."""
    configured = os.environ.get("INTERNVL_CONVERTED_DIR")
    if configured:
        return Path(configured)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "internvl-demo" / "converted"


def folder_key(folder: Path) -> str:
    """Names the folder's content: small files by their bytes, weight files by name, size and
    modification time (hashing hundreds of GB at every start would take minutes)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        stat = path.stat()
        digest.update(path.name.encode())
        if stat.st_size < 2**24:
            digest.update(path.read_bytes())
        else:
            digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def native_checkpoint(model: str, config: dict, progress: bool = True) -> str:
    """The native checkpoint to load for `model`: itself, or its converted copy (made now if
    there is none yet; two apps starting at once convert once, the second waits)."""
    if not is_original_format(config):
        return model
    folder = Path(model).expanduser()
    key = folder_key(folder) if folder.is_dir() else hub_revision(model)
    name = folder.name if folder.is_dir() else re.sub(r"[^A-Za-z0-9_.-]+", "--", model)
    root = converted_root()
    destination = root / f"{name}-{key}-v{CONVERTER_VERSION}"
    if destination.is_dir():  # only a complete conversion is ever renamed to this name
        log.info("Using the converted copy %s", destination)
        return str(destination)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{destination.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        if destination.is_dir():  # converted by another start while this one waited
            return str(destination)
        for stale in cleanup_partial(root):
            log.info("Removed an unfinished conversion: %s", stale)
        if folder.is_dir():
            source = folder
        else:
            check_disk_for_download(model, root)
            source = download(model)
        log.info("Converting %s into the native format, once (later starts reuse it)", model)
        convert_checkpoint(source, destination, progress=progress, record={"source": model})
    older = sorted(p.name for p in root.glob(f"{name}-*") if p != destination and p.is_dir())
    if older:
        log.info("Older converted copies of %s in %s: %s", model, root, ", ".join(older))
    return str(destination)


def hub_revision(model: str) -> str:
    """The commit of the Hub repo's snapshot (its config.json is already in the cache)."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(model, "config.json")).parent.name[:16]
    except Exception as error:  # the hub client raises many kinds
        raise ModelLoadError(cannot_fetch_message(model, error)) from error


def download(model: str) -> Path:
    try:
        return download_original(model)
    except Exception as error:  # the hub client raises many kinds
        raise ModelLoadError(cannot_fetch_message(model, error)) from error


def check_disk_for_download(model: str, root: Path) -> None:
    """Before downloading an original checkpoint: room for its converted copy."""
    needed = weight_bytes(model)
    free = shutil.disk_usage(root).free
    if needed and needed > free:
        raise ModelLoadError(
            f"Converting {model} needs {gigabytes(needed)} of disk in {root} for the converted "
            f"copy (and as much again in the Hugging Face cache for the download), and only "
            f"{gigabytes(free)} is free there. Free some space, or set INTERNVL_CONVERTED_DIR "
            f"to a bigger disk."
        )


def checkpoint_template(folder: str) -> PromptTemplate:
    """The conversation template: recorded by the conversion, else InternVL 2.5's."""
    record = Path(folder, CONVERSION_RECORD)
    if record.is_file():
        return TEMPLATES[json.loads(record.read_text())["template"]]
    return DEFAULT_TEMPLATE


# ---------------------------------------------------------------------------------------------
# Loading


@dataclass
class LoadedModel:
    model: object
    tokenizer: object
    template: PromptTemplate
    input_device: torch.device  # where input ids and pixels go (the embeddings' device)
    description: str  # for the header: device(s) and precision
    path: str  # what was loaded (the converted copy for original-format checkpoints)
    thinking_mode: bool = False  # model_backend.thinking.has_thinking_mode


def load_model(
    model: str,
    device: str = "auto",
    dtype: str = "auto",
    attn: str = "sdpa",
    quantize: str | None = None,
    max_memory: str | None = None,
    device_map: dict | None = None,
) -> LoadedModel:
    """Check, estimate, convert if needed, place and load `model`. Raises ModelLoadError."""
    check_attention(attn)
    check_quantize(quantize)
    limits = parse_max_memory(max_memory)
    target = resolve_device(device)
    check_limits(limits, target)
    torch_dtype = resolve_dtype(dtype, target)
    several_gpus = target.type == "cuda" and device == "auto" and torch.cuda.device_count() > 1
    config = read_model_config(model)
    check_format(model, config)
    check_memory(model, config, target, torch_dtype, quantize, limits, several_gpus)
    path = native_checkpoint(model, config)
    if device_map is None and (several_gpus or limits):
        from transformers import AutoConfig

        native = AutoConfig.from_pretrained(path)
        device_map = plan_device_map(native, gpu_memory(limits), torch_dtype, quantize)
    elif device_map is None and target.type == "cuda" and not on_zero_gpu():
        # Straight onto the GPU (not through host memory). ZeroGPU wants .to("cuda") instead.
        device_map = {"": target.index or 0}
    loaded = from_pretrained(path, model, torch_dtype, attn, quantize, device_map)
    if device_map is None:
        loaded.to(target)
    loaded.eval()
    input_device = loaded.get_input_embeddings().weight.device
    return LoadedModel(
        model=loaded,
        tokenizer=load_tokenizer(path, model),
        template=checkpoint_template(path),
        input_device=input_device,
        description=describe(input_device, device_map, torch_dtype, attn, quantize),
        path=path,
        thinking_mode=has_thinking_mode(model, text_model_type(config)),
    )


def check_limits(limits: dict[int, int], target: torch.device) -> None:
    if not limits:
        return
    if target.type != "cuda":
        raise ModelLoadError("--max-memory places the model over GPUs, and there is none here.")
    count = torch.cuda.device_count()
    unknown = sorted(gpu for gpu in limits if gpu >= count)
    if unknown:
        raise ModelLoadError(
            f"--max-memory names GPU {', '.join(map(str, unknown))}, but this machine has "
            f"{count} GPU(s), numbered from 0."
        )
    if target.index is not None and target.index not in limits:
        log.warning("--device %s is not among the --max-memory GPUs: using those", target)


def check_memory(model, config, target, dtype, quantize, limits, several_gpus) -> None:
    if on_zero_gpu():  # CUDA may not be touched outside the GPU function there
        return
    size = weight_bytes(model)
    if size is None:
        return
    estimate = estimate_memory(config, size, dtype, quantize)
    if target.type == "cuda":
        memory = gpu_memory(limits) if (several_gpus or limits) else gpu_memory({})
        if not (several_gpus or limits):
            memory = {target.index or 0: memory.get(target.index or 0, 0)}
        available = sum(memory.values())
        where = f"{len(memory)} GPU(s) have"
    else:
        available, where = available_cpu_memory(), "this machine has"
    check_fits(model, estimate, available, where)


def from_pretrained(path, model, dtype, attn, quantize, device_map):
    from transformers import AutoModelForImageTextToText

    try:
        return AutoModelForImageTextToText.from_pretrained(
            path,
            dtype=dtype,
            attn_implementation=attn,
            device_map=device_map,
            quantization_config=quantization_config(quantize, dtype),
        )
    except OSError as error:
        if Path(path).is_dir():
            raise ModelLoadError(
                f"The folder {path} could not be loaded as a native InternVL checkpoint "
                f"({type(error).__name__}: {error})."
            ) from error
        raise ModelLoadError(cannot_fetch_message(model, error)) from error


def load_tokenizer(path: str, model: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path)
    except OSError as error:
        raise ModelLoadError(cannot_fetch_message(model, error)) from error


def describe(input_device, device_map, dtype, attn, quantize) -> str:
    precision = str(dtype).removeprefix("torch.")
    if quantize:
        precision = f"language model {quantize}, vision {precision}"
    gpus = sorted({d for d in (device_map or {}).values() if isinstance(d, int)})
    where = f"{len(gpus)} GPUs" if len(gpus) > 1 else str(input_device)
    return f"{where} ({precision}, {attn})"
