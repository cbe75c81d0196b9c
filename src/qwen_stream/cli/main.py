"""`qwen-stream` console command: one subcommand per front end.

Each front end module exposes ``add_arguments(parser)`` and ``run(args) -> int``; this file only wires them.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# subcommand -> (module, help). These modules import only light things at the top (no torch, no gradio):
# heavy imports happen inside run(), so `qwen-stream --help` and `qwen-stream models` stay instant.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "chat": ("qwen_stream.cli.chat", "chat in the terminal, the answer streaming in"),
    "serve": ("qwen_stream.server.cli", "serve an OpenAI-compatible streaming HTTP API"),
    "web": ("qwen_stream.web.cli", "chat in the browser (Gradio)"),
    "models": ("qwen_stream.cli.models", "list the built-in model aliases and whether they are present"),
    "bench": ("qwen_stream.bench.cli", "benchmark the engine against its peers"),
}


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The model options every command that loads a model shares."""
    parser.add_argument("-c", "--checkpoint-path", "--model", dest="model", default=None,
                        help="built-in alias, local HF directory, .gguf file or hub id (default: the default alias)")
    parser.add_argument("--runner", choices=["auto", "llamacpp", "torch"], default="auto",
                        help="what computes the logits: llama.cpp for GGUF, PyTorch otherwise (default: auto)")
    parser.add_argument("--cpu-only", action="store_true", help="run on the CPU even if a GPU is present")
    parser.add_argument("--device", default=None, help="torch device: cpu, cuda, cuda:1, auto (default: cpu)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                        help="weights dtype for the PyTorch runner (default: float32 on CPU, bfloat16 on GPU)")
    parser.add_argument("--quantize", choices=["int8"], default=None,
                        help="int8 weights for the PyTorch runner on the CPU (picks --runner torch under auto)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: physical cores)")
    parser.add_argument("--context-length", type=int, default=None, help="context window to serve (tokens)")
    parser.add_argument("--max-batch-size", type=int, default=16, help="sequences decoded together at most")
    parser.add_argument("--no-prefix-cache", dest="prefix_cache", action="store_false",
                        help="forget a finished request's KV (default: keep it, so the next turn of a conversation "
                             "prefills only its new tokens)")


def device_from_args(args: argparse.Namespace) -> str:
    if getattr(args, "cpu_only", False):
        return "cpu"
    return args.device or "cpu"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qwen-stream", description="Stream answers from Qwen-family chat models.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        sub_parser.set_defaults(_module=module_name)
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:  # a front end whose optional dependency is missing
            sub_parser.set_defaults(_import_error=str(exc))
            continue
        module.add_arguments(sub_parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if getattr(args, "_import_error", None):
        print(f"qwen-stream {args.command}: unavailable ({args._import_error})", file=sys.stderr)
        return 2
    module = importlib.import_module(args._module)
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (ValueError, FileNotFoundError) as exc:
        print(f"qwen-stream {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
