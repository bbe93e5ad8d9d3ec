"""Start the InternVL demo: read the configuration, make a backend, build the UI, launch.

    python app.py [--model OpenGVLab/InternVL2_5-2B-MPO-hf] [--share --auth user:pass] ...
    python app.py --backend openai --endpoint http://HOST:8000/v1   (vLLM, LMDeploy, SGLang)
    python app.py --mcp   (also an MCP server: the endpoints as tools for agents)

Every flag can also be set by an environment variable, INTERNVL_<FLAG> (for example
INTERNVL_MODEL, INTERNVL_BACKEND, INTERNVL_ENDPOINT): a Hugging Face Space has no command line.
"""

from __future__ import annotations

# Before anything imports torch: on a ZeroGPU Space, `spaces` must come first.
import model_backend.zerogpu  # noqa: F401  isort: skip

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

from model_backend.base import DEFAULT_MODEL
from model_backend.errors import ModelLoadError

log = logging.getLogger("app")
LOOPBACK = ("127.0.0.1", "localhost", "::1", None)
TRUE = ("1", "true", "yes", "on")


def env(name: str, default=None):
    """INTERNVL_<NAME> from the environment, or the default."""
    return os.environ.get(f"INTERNVL_{name.upper()}", default)


def env_flag(name: str) -> bool:
    """A yes/no variable: 1, true, yes or on (any case) mean yes."""
    return str(env(name, "")).strip().lower() in TRUE


def env_list(name: str) -> list[str]:
    value = env(name)
    return [item.strip() for item in value.split(",") if item.strip()] if value else []


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Web demo for InternVL 2.5 multimodal models.",
        epilog="Each flag may also be given as an environment variable INTERNVL_<FLAG>.",
    )
    model = parser.add_argument_group("model")
    model.add_argument(
        "--backend",
        choices=["local", "openai"],
        default=env("backend", "local"),
        help="local: transformers in this process; openai: an OpenAI-compatible engine",
    )
    model.add_argument(
        "--model",
        action="append",
        default=None,
        help="Hub id or folder of an InternVL checkpoint, native (-hf) or original (converted "
        "once, on first load); repeat to offer a choice "
        f"(default {DEFAULT_MODEL}; env: comma-separated)",
    )
    model.add_argument(
        "--device",
        default=env("device", "auto"),
        help="auto (every GPU, else the CPU), cpu, cuda, cuda:N",
    )
    model.add_argument(
        "--quantize",
        default=env("quantize"),
        choices=["8bit", "4bit"],
        help="load the language model in 8 or 4 bits (bitsandbytes, CUDA only); the vision "
        "tower stays 16-bit",
    )
    model.add_argument(
        "--max-memory",
        default=env("max_memory"),
        help="memory per GPU when placing a model over several, e.g. 0=20GiB,1=40GiB",
    )
    model.add_argument(
        "--model-pool-gb",
        type=float,
        default=env("model_pool_gb"),
        help="memory for the models held at once when sessions choose different ones from the "
        "menu (least recently used unloaded first; default: what the device has)",
    )
    model.add_argument(
        "--prefix-cache-gb",
        type=float,
        default=env("prefix_cache_gb"),
        help="memory for each conversation's kept prompt (KV cache), which makes follow-ups "
        "fast; 0 turns it off (default: a share of the device's memory)",
    )
    model.add_argument(
        "--dtype", default=env("dtype", "auto"), choices=["auto", "bfloat16", "float16", "float32"]
    )
    model.add_argument(
        "--attn", default=env("attn", "sdpa"), choices=["sdpa", "flash_attention_2", "eager"]
    )
    remote = parser.add_argument_group("remote engine (--backend openai)")
    remote.add_argument("--endpoint", default=env("endpoint"), help="e.g. http://HOST:8000/v1")
    remote.add_argument("--api-key", default=env("api_key"), help="if the engine wants one")
    remote.add_argument("--served-model", default=env("served_model"), help="model name to use")
    remote.add_argument(
        "--engine",
        default=env("engine", "generic"),
        choices=["vllm", "lmdeploy", "sglang", "generic"],
        help="how to pass the tile limit (vllm, lmdeploy) and extra sampling options",
    )
    server = parser.add_argument_group("server")
    server.add_argument("--host", default=env("host"), help="address (default 127.0.0.1)")
    server.add_argument("--port", type=int, default=env("port"), help="port (default 7860)")
    server.add_argument(
        "--share", action="store_true", default=env_flag("share"), help="public link"
    )
    server.add_argument(
        "--mcp",
        action="store_true",
        default=env_flag("mcp"),
        help="also serve the API endpoints as MCP tools for agents, at /gradio_api/mcp/",
    )
    server.add_argument("--root-path", default=env("root_path"), help="behind a reverse proxy")
    server.add_argument(
        "--auth", action="append", default=env_list("auth") or None, help="user:password"
    )
    server.add_argument("--auth-file", default=env("auth_file"), help="lines of user:password")
    server.add_argument(
        "--max-file-size", default=env("max_file_size", "2gb"), help="largest upload (2gb)"
    )
    server.add_argument(
        "--queue-size", type=int, default=int(env("queue_size", 32)), help="waiting requests"
    )
    server.add_argument(
        "--concurrency",
        type=int,
        default=env("concurrency"),
        help="answers generated at once (default 1 local, 16 with --backend openai)",
    )
    server.add_argument(
        "--jobs-per-address",
        type=int,
        default=int(env("jobs_per_address", 8)),
        help="requests one network address may have queued or running (a classroom behind "
        "one address needs more; a session may have 4)",
    )
    server.add_argument(
        "--feedback-dir",
        default=env("feedback_dir"),
        help="keep votes (Compare) and likes on regenerated answers as preference pairs for "
        "MPO training, with the media they concern, in this folder (off by default; the page "
        "then says so)",
    )
    server.add_argument(
        "--max-images",
        type=int,
        default=int(env("max_images", 8)),
        help="images per conversation (multi-image tab)",
    )
    args = parser.parse_args(argv)
    if args.backend == "openai" and not args.endpoint:
        parser.error("--backend openai needs --endpoint http://HOST:PORT/v1 (the engine's URL)")
    # Gradio's own variable shares too: treat it as --share (and warn when there is no --auth).
    args.share = args.share or os.environ.get("GRADIO_SHARE", "").strip().lower() in TRUE
    args.mcp = args.mcp or os.environ.get("GRADIO_MCP_SERVER", "").strip().lower() in TRUE
    args.model = args.model or env_list("model") or [DEFAULT_MODEL]
    if args.concurrency is None:
        args.concurrency = 16 if args.backend == "openai" else 1
    args.concurrency = int(args.concurrency)
    args.port = None if args.port is None else int(args.port)
    return args


def read_auth(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(user, password) pairs from --auth and --auth-file."""
    entries = list(args.auth or [])
    if args.auth_file:
        lines = Path(args.auth_file).read_text().splitlines()
        entries += [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    pairs = []
    for entry in entries:
        user, sep, password = entry.partition(":")
        if not sep or not user or not password:
            raise SystemExit(f"--auth takes user:password, got {entry!r}")
        pairs.append((user, password))
    return pairs


def exposure_warning(args: argparse.Namespace, auth: list) -> str | None:
    """A warning when the demo is reachable by others and nobody has to log in."""
    if auth:
        return None
    host = args.host or os.environ.get("GRADIO_SERVER_NAME")
    if getattr(args, "mcp", False) and (args.share or host not in LOOPBACK):
        # --auth is no way out here: MCP clients cannot log in (see check_mcp).
        where = "on the internet (--share)" if args.share else f"to anyone who can reach {host}"
        return (
            f"WARNING: --mcp serves the demo's tools {where} with no login, and every MCP "
            f"client shares one session (its queue share, Compare votes). Keep an MCP server "
            f"on 127.0.0.1, or put it behind a proxy that checks clients."
        )
    if args.share:
        return (
            "WARNING: --share makes this demo public on the internet and no --auth is set: "
            "anyone with the link can use your GPU. Add --auth user:password."
        )
    if host not in LOOPBACK:
        return (
            f"WARNING: listening on {host} without --auth: anyone who can reach this "
            f"machine can use the demo."
        )
    return None


def check_mcp(args: argparse.Namespace, auth: list) -> None:
    """Refuse --mcp with --auth: MCP clients cannot log in through the login page, so every
    tool call would be refused."""
    if args.mcp and auth:
        raise SystemExit(
            "--mcp cannot be used with --auth: MCP clients cannot log in to the demo. Serve "
            "the MCP server on 127.0.0.1 without --auth, or behind a proxy that checks clients."
        )


def mcp_url(app_url: str) -> str:
    """Where MCP clients connect (Gradio's streamable HTTP transport; SSE is at .../sse)."""
    return f"{app_url.rstrip('/')}/gradio_api/mcp/"


def check_feedback_dir(folder: str | None) -> None:
    """Refuse a feedback folder inside Gradio's temporary folder: Gradio serves files from
    there to anyone (the pairs and their media would be downloadable) and deletes them after
    a few hours."""
    if not folder:
        return
    gradio_temp = os.environ.get("GRADIO_TEMP_DIR") or str(Path(tempfile.gettempdir(), "gradio"))
    if Path(folder).resolve().is_relative_to(Path(gradio_temp).resolve()):
        raise SystemExit(
            f"--feedback-dir {folder} is inside Gradio's temporary folder ({gradio_temp}), "
            f"whose files Gradio serves to anyone and deletes after a few hours: choose "
            f"another folder."
        )


def make_backend(args: argparse.Namespace):
    if args.backend == "openai":
        from model_backend.remote import OpenAIBackend

        return OpenAIBackend(args.endpoint, args.api_key, args.served_model, args.engine)
    from model_backend.local import LocalBackend

    return LocalBackend(
        args.model[0],
        device=args.device,
        dtype=args.dtype,
        attn=args.attn,
        models=args.model,
        quantize=args.quantize,
        max_memory=args.max_memory,
        model_pool_gb=args.model_pool_gb,
        prefix_cache_gb=args.prefix_cache_gb,
    )


def build_app(args: argparse.Namespace):
    """The backend (model loaded) and the queued Gradio app, ready to launch."""
    from interface.layout import UIOptions, build_demo

    backend = make_backend(args)
    options = UIOptions(
        concurrency_limit=args.concurrency,
        max_images=args.max_images,
        jobs_per_address=args.jobs_per_address,
        feedback_dir=args.feedback_dir,
    )
    demo = build_demo(backend, options)
    demo.queue(max_size=args.queue_size, default_concurrency_limit=args.concurrency)
    return backend, demo


def launch(demo, args: argparse.Namespace, auth: list) -> None:
    """Start serving (without blocking) and say where."""
    from interface.i18n import language_options
    from interface.layout import CSS
    from interface.security import secure_launch_options

    # quiet: Gradio's own hint ("set share=True in launch()") is wrong for this app.
    _, local_url, share_url = demo.launch(
        server_name=args.host,
        server_port=args.port,
        share=args.share,
        auth=auth or None,
        root_path=args.root_path,
        mcp_server=args.mcp,
        max_file_size=args.max_file_size,
        show_error=True,
        css=CSS,
        **language_options(),  # English and Chinese, and the switch between them
        quiet=True,
        prevent_thread_lock=True,
        **secure_launch_options(),  # Content-Security-Policy, login throttling and checks
    )
    print(f"The demo is running at {local_url}", file=sys.stderr)
    if args.mcp:
        if not demo.mcp_server:  # Gradio says why only when not quiet
            demo.close()
            raise SystemExit(demo.mcp_error or "The MCP server could not start.")
        print(f"MCP server (for agents): {mcp_url(share_url or local_url)}", file=sys.stderr)
    if share_url:
        print(f"Public link: {share_url}", file=sys.stderr)
    elif not args.share:
        print(
            "For a public link, start it with --share (and --auth user:password).", file=sys.stderr
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    auth = read_auth(args)
    check_mcp(args, auth)
    check_feedback_dir(args.feedback_dir)
    try:
        _, demo = build_app(args)
    except ModelLoadError as error:
        print(f"\n{error}\n", file=sys.stderr)
        return 2
    warning = exposure_warning(args, auth)
    if warning:
        print(warning, file=sys.stderr)
    from interface.export import exit_on_signals

    exit_on_signals()  # SIGTERM and SIGINT end the app like Ctrl+C: its temp files are removed

    try:
        launch(demo, args, auth)
        demo.block_thread()  # returns on Ctrl+C or SIGTERM, once the server is closed
    except KeyboardInterrupt:  # the same, arriving while the server was still starting
        demo.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
