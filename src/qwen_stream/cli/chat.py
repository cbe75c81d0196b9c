"""`qwen-stream chat`: chat in the terminal, the answer streaming in as deltas.

Only light imports at the top (argparse, rich, our pure modules): torch and the model load inside run().
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from qwen_stream.cli.commands import Command, Empty, Query, UnknownCommand, parse_line, unknown_command_message
from qwen_stream.cli.line_input import LineReader, make_line_reader
from qwen_stream.cli.model_args import add_model_arguments, load_model
from qwen_stream.cli.render import STYLE_CODE, STYLE_FENCE, STYLE_HEADING, Segment, StreamStyler
from qwen_stream.cli.session import ChatState, dropped_turns_note, execute, format_stats
from qwen_stream.errors import EngineError
from qwen_stream.types import FinishReason, StreamEvent

if TYPE_CHECKING:
    from qwen_stream.api import ChatModel

DEFAULT_SEED = 1234  # as Qwen's CLI demo: the same question gives the same answer until :seed changes it
USER_PROMPT = "User> "
ANSWER_PREFIX = "Assistant> "
RICH_STYLES = {"": "", STYLE_CODE: "cyan", STYLE_FENCE: "dim cyan", STYLE_HEADING: "bold"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("-s", "--seed", type=int, default=DEFAULT_SEED,
                        help="random seed for sampling (default: %(default)s); -1 for a new one per answer")
    parser.add_argument("--system", default=None, help="system prompt (default: the model's own)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="longest answer in tokens")
    parser.add_argument("--temperature", type=float, default=None, help="0 = greedy (default: the model's)")
    parser.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass (default: the model's)")
    parser.add_argument("--stats", action="store_true",
                        help="after each answer, a line with time to first token, tokens/s and tokens")
    parser.add_argument("--plain", action="store_true", help="print answers as raw text, no markdown colouring")
    parser.add_argument("--hide-thinking", action="store_true",
                        help="do not print a thinking model's reasoning (it is shown dimmed by default)")
    history = parser.add_mutually_exclusive_group()
    history.add_argument("--history-file", type=Path, default=None, metavar="PATH",
                         help="where to save what you type, for Up/Down in later sessions (default: "
                              "$QWEN_STREAM_HISTORY, else ~/.local/state/qwen-stream/history)")
    history.add_argument("--no-history", action="store_true",
                         help="keep the input history in memory only (as QWEN_STREAM_HISTORY=off does)")


def run(args: argparse.Namespace) -> int:
    # soft_wrap: the terminal wraps lines itself (right for CJK); emoji off: ":x:" in an answer stays text
    console = Console(highlight=False, soft_wrap=True, emoji=False)
    state_overrides = _param_overrides(args)
    model = _load_model(args, console)
    try:
        params = model.sampling_params(**state_overrides).with_(seed=None)
        seed = None if args.seed is None or args.seed < 0 else args.seed
        state = ChatState(params=params, seed=seed, system=args.system, show_stats=args.stats,
                          hide_thinking=args.hide_thinking)
        reader = make_line_reader(history_file=_history_file(args))
        return ChatLoop(console, model, state, reader, markdown=not args.plain).run()
    finally:
        close = getattr(model, "close", None)
        if callable(close):
            close()


def _history_file(args: argparse.Namespace) -> Path | None:
    if args.no_history:
        return None
    if args.history_file is not None:
        return Path(args.history_file).expanduser()
    from qwen_stream.cli.history import default_history_path  # imports prompt_toolkit: only when chatting

    return default_history_path()


def _param_overrides(args: argparse.Namespace) -> dict[str, Any]:
    wanted = {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "top_p": args.top_p}
    return {key: value for key, value in wanted.items() if value is not None}


def _load_model(args: argparse.Namespace, console: Console) -> ChatModel:
    return load_model(args)


@dataclass
class _Progress:
    """How far an answer got, readable after a Ctrl-C."""

    last: StreamEvent | None = None
    interrupted: bool = False
    reasoned: bool = False  # reasoning was printed and the answer has not started below it yet
    drafts_before: tuple[int, int] = (0, 0)  # the engine's (drafted, accepted) totals when the answer started


class ChatLoop:
    """Read a line, run a command or stream an answer, repeat until :quit, Ctrl-D or Ctrl-C at the prompt."""

    def __init__(self, console: Console, model: ChatModel, state: ChatState, reader: LineReader, *,
                 markdown: bool = True) -> None:
        self.console = console
        self.model = model
        self.state = state
        self.reader = reader
        self.markdown = markdown

    def run(self) -> int:
        self._banner()
        while True:
            try:
                line = self.reader.read(USER_PROMPT)
            except (EOFError, KeyboardInterrupt):  # Ctrl-D, or Ctrl-C on an empty line: leave quietly
                self.console.print()
                return 0
            if not self._handle(line):
                return 0

    def _banner(self) -> None:
        self.console.print(f"qwen-stream chat with [bold]{self.model.name}[/bold]. "
                           "Type a question; :help for commands, :quit or Ctrl-D to leave.", highlight=False)

    def _handle(self, line: str) -> bool:
        """Act on one line; False means leave."""
        parsed = parse_line(line)
        if isinstance(parsed, Empty):
            self._note("Type a question, or :help for the commands.")
        elif isinstance(parsed, UnknownCommand):
            self._note(unknown_command_message(parsed), style="yellow")
        elif isinstance(parsed, Command):
            return self._command(parsed)
        elif isinstance(parsed, Query):
            self.answer(parsed.text)
        return True

    def _command(self, command: Command) -> bool:
        result = execute(self.state, command)
        if result.clear_screen:
            self.console.clear()
        for text in result.lines:
            self.console.print(text, style="yellow" if result.is_error else None, markup=False)
        return not result.quit

    def _note(self, text: str, style: str = "dim") -> None:
        self.console.print(text, style=style, markup=False)

    def answer(self, query: str) -> None:
        """Stream one answer; Ctrl-C stops it (the engine request is aborted), what was shown is kept."""
        try:
            stream = self.model.stream(query, history=list(self.state.history), system=self.state.system,
                                       params=self.state.request_params(), thinking=self.state.thinking)
        except (ValueError, EngineError) as exc:  # too long for the context, engine busy or stopped
            self._note(f"Cannot answer: {exc}", style="yellow")
            return
        progress = _Progress()
        progress.drafts_before = _draft_counts(self.model.engine)
        styler = StreamStyler(markdown=self.markdown)
        # Ctrl-C may land anywhere from here on (even inside rich's print of the prefix), not only while waiting
        # for a token: the whole answer is covered, and the stream is closed whatever happens.
        try:
            self._print_answer(stream, styler, progress)
        except KeyboardInterrupt:
            progress.interrupted = True
        finally:
            stream.close()  # aborts the request in the engine at once if it is still running
        try:
            self._write(styler.finish())
            self.console.print()
            self.state.history.append((query, progress.last.text if progress.last else ""))
            self._after_answer(progress.last, progress.interrupted, progress.drafts_before)
        except KeyboardInterrupt:  # a second Ctrl-C while tidying up: the answer is already stopped
            self.console.print()

    def _print_answer(self, stream: Any, styler: StreamStyler, progress: _Progress) -> None:
        note = dropped_turns_note(getattr(getattr(stream, "prompt_info", None), "dropped_turns", 0) or 0)
        if note:
            self._note(note)
        self.console.print(ANSWER_PREFIX, style="bold green", end="")
        for event in stream:
            progress.last = event
            if event.reasoning_delta and not self.state.hide_thinking:
                self.console.print(event.reasoning_delta, style="dim", end="", markup=False)
                progress.reasoned = True
            if event.delta and progress.reasoned:
                self.console.print()  # the answer starts on its own line under the reasoning
                progress.reasoned = False
            self._write(styler.feed(event.delta))

    def _write(self, segments: list[Segment]) -> None:
        for text, style in segments:
            self.console.print(text, style=RICH_STYLES.get(style, ""), end="", markup=False)
        self.console.file.flush()

    def _after_answer(self, last: StreamEvent | None, interrupted: bool,
                      drafts_before: tuple[int, int] = (0, 0)) -> None:
        if interrupted:
            self._note("[stopped]", style="yellow")
        elif last is not None and last.finish_reason == FinishReason.LENGTH:
            self._note(f"(cut at {self.state.params.max_new_tokens} tokens or the context window; "
                       ":conf max_new_tokens=N for longer answers)")
        if self.state.show_stats and last is not None:
            drafted, accepted = _draft_counts(self.model.engine)
            self._note(format_stats(last.time_to_first_token_s, last.tokens_per_second,
                                    last.num_generated_tokens,
                                    (drafted - drafts_before[0], accepted - drafts_before[1])))


def _draft_counts(engine: Any) -> tuple[int, int]:
    """Speculative decoding totals so far (drafted, accepted); zeros for a backend without them."""
    stats = engine.stats()
    return int(getattr(stats, "drafted_tokens", 0)), int(getattr(stats, "accepted_draft_tokens", 0))
