"""Start the InternVL demo: parse flags, make a backend, build the UI, launch.

python app.py [--model OpenGVLab/InternVL2_5-2B-MPO-hf] [--device auto] [--share] ...
"""

from __future__ import annotations

import argparse
import logging
import sys

from model_backend.errors import ModelLoadError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from model_backend.local import DEFAULT_MODEL

    parser = argparse.ArgumentParser(description="Web demo for InternVL 2.5 multimodal models.")
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="Hub id or local folder of a native (-hf) InternVL checkpoint (default: %(default)s)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"]
    )
    parser.add_argument("--attn", default="sdpa", choices=["sdpa", "flash_attention_2", "eager"])
    parser.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default 7860)")
    parser.add_argument("--share", action="store_true", help="create a public gradio.live link")
    parser.add_argument(
        "--queue-size", type=int, default=32, help="requests that may wait in the queue"
    )
    parser.add_argument(
        "--max-images", type=int, default=8, help="images per conversation (multi-image tab)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from interface.layout import CSS, UIOptions, build_demo
    from model_backend.local import LocalBackend

    try:
        backend = LocalBackend(args.model, device=args.device, dtype=args.dtype, attn=args.attn)
    except ModelLoadError as error:
        print(f"\n{error}\n", file=sys.stderr)
        return 2
    demo = build_demo(backend, UIOptions(max_images=args.max_images))
    demo.queue(max_size=args.queue_size)
    demo.launch(
        server_name=args.host,
        server_port=args.port,
        share=args.share,
        show_error=True,
        css=CSS,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
