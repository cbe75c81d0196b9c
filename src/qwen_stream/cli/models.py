"""`qwen-stream models`: list the built-in aliases (size, present or not), or fetch one with --fetch."""

from __future__ import annotations

import argparse

from qwen_stream.models import registry  # light: no torch, no transformers


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fetch", metavar="NAME", default=None,
                        help=f"download and verify one alias now ({', '.join(registry.ALIASES)})")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console()
    if args.fetch:
        path = registry.ensure_alias(args.fetch, progress=True)  # ValueError for an unknown name: main prints it
        console.print(f"[green]ready:[/green] {registry.get_alias(args.fetch).name} -> {path}")
    console.print(_table())
    console.print(f"cache: {registry.cache_root()}  (set ${registry.CACHE_ENV} to move it)")
    console.print(f"default model: {registry.default_model()}  (set ${registry.MODEL_ENV} to change it)")
    return 0


def _table():  # -> rich.table.Table, built lazily so importing this module stays cheap
    from rich.table import Table

    table = Table(title="Built-in models")
    for column in ("alias", "size", "present", "description", "path"):
        table.add_column(column, overflow="fold")
    default = registry.default_model()
    for row in registry.alias_status():
        name = f"{row.name} (default)" if row.name == default else row.name
        present = "[green]yes[/green]" if row.present else "[yellow]no[/yellow] (fetched on first use)"
        table.add_row(name, registry.format_size(row.size), present, row.description, str(row.path))
    return table
