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
    except (ValueError, FileNotFoundError, ImportError) as exc:  # ImportError: an optional part not installed
        print(f"qwen-stream {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
