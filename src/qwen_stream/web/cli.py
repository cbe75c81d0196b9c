"""`qwen-stream web`: the Gradio chat page on 127.0.0.1.

Only light imports at the top: gradio and torch load inside run(), so `qwen-stream --help` stays instant.
"""

from __future__ import annotations

import argparse
import os

from qwen_stream.cli.model_args import SHARED_KV_WINDOWS, add_model_arguments, load_model

DEFAULT_HOST = "127.0.0.1"  # loopback: the page is not on the network unless asked for


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help="address to listen on (default: %(default)s; 0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=None, help="port (default: 7860, or the next free one)")
    parser.add_argument("--share", action="store_true",
                        help="also open a public *.gradio.live link (off by default; needs internet)")
    parser.add_argument("--system", default="", help="initial system prompt in the page")
    parser.add_argument("-s", "--seed", type=int, default=-1, help="initial seed in the page (-1: random)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="initial longest answer in tokens")
    parser.add_argument("--temperature", type=float, default=None, help="initial temperature (0 = greedy)")
    parser.add_argument("--top-p", type=float, default=None, help="initial nucleus sampling mass")
    parser.add_argument("--open", action="store_true", help="open the page in the default browser")


def run(args: argparse.Namespace) -> int:
    if args.port is not None and not 0 < args.port < 65536:
        raise ValueError(f"--port must be in 1..65535, got {args.port}")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no phoning home from an offline tool
    from qwen_stream.web.app import WebDefaults, build_demo, page_options

    model = load_model(args, kv_windows=SHARED_KV_WINDOWS)
    try:
        model.sampling_params(temperature=args.temperature, top_p=args.top_p,
                              max_new_tokens=args.max_new_tokens)  # bad flags fail here, before the page opens
        defaults = WebDefaults(system=args.system, temperature=args.temperature, top_p=args.top_p,
                               max_new_tokens=args.max_new_tokens, seed=args.seed)
        demo = build_demo(model, defaults)
        demo.queue(default_concurrency_limit=None)
        demo.launch(server_name=args.host, server_port=args.port, share=args.share, inbrowser=args.open,
                    **page_options())
    finally:
        model.close()
    return 0
