"""The terminal chat's state and what each `:command` does to it: no terminal, no model, so it is unit-tested.

`execute()` returns the lines to show and what the loop should do next; the loop (cli/chat.py) does the I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from qwen_stream.cli.commands import HELP_TEXT, Command, apply_conf, format_conf, parse_seed
from qwen_stream.types import SamplingParams


@dataclass
class ChatState:
    """Everything a chat remembers between questions."""

    params: SamplingParams  # generation settings now (the seed lives apart, see request_params)
    seed: int | None = None  # None: a fresh random seed for every answer
    system: str | None = None  # None: the model's own default system prompt
    show_stats: bool = False
    thinking: bool | None = None  # Qwen3's enable_thinking; None: the chat template's default
    hide_thinking: bool = False  # reasoning is not printed (it is never sent back to the model either)
    history: list[tuple[str, str]] = field(default_factory=list)  # (question, answer) pairs, oldest first
    initial_params: SamplingParams | None = None  # what :reset-conf restores; set from params when None

    def __post_init__(self) -> None:
        if self.initial_params is None:
            self.initial_params = self.params

    def request_params(self) -> SamplingParams:
        """The settings for the next answer: a fixed seed makes the same question give the same answer."""
        return self.params.with_(seed=self.seed)


@dataclass(frozen=True, slots=True)
class CommandResult:
    lines: tuple[str, ...] = ()
    is_error: bool = False  # show the lines as a warning
    quit: bool = False
    clear_screen: bool = False


def _ok(*lines: str) -> CommandResult:
    return CommandResult(tuple(lines))


def _error(message: str) -> CommandResult:
    return CommandResult((message,), is_error=True)


def _help(state: ChatState, arg: str) -> CommandResult:
    return _ok(*HELP_TEXT.splitlines())


def _quit(state: ChatState, arg: str) -> CommandResult:
    return CommandResult(quit=True)


def _clear(state: ChatState, arg: str) -> CommandResult:
    return CommandResult(clear_screen=True)


def _clear_history(state: ChatState, arg: str) -> CommandResult:
    turns = len(state.history)
    state.history.clear()
    return _ok(f"History cleared ({turns} turn{'s' if turns != 1 else ''} forgotten).")


def _history(state: ChatState, arg: str) -> CommandResult:
    if not state.history:
        return _ok("(no conversation yet)")
    lines: list[str] = []
    for number, (question, answer) in enumerate(state.history, start=1):
        lines.append(f"[{number}] User: {question}")
        lines.append(f"[{number}] Assistant: {answer}")
    return _ok(*lines)


def _seed(state: ChatState, arg: str) -> CommandResult:
    if arg:
        try:
            state.seed = parse_seed(arg)
        except ValueError as exc:
            return _error(str(exc))
        return _ok(f"Seed set to {_describe_seed(state.seed)}.")
    return _ok(f"Seed: {_describe_seed(state.seed)}.")


def _describe_seed(seed: int | None) -> str:
    return "random (a new one per answer)" if seed is None else str(seed)


def _conf(state: ChatState, arg: str) -> CommandResult:
    if arg:
        try:
            state.params = apply_conf(state.params, arg)
        except (ValueError, TypeError) as exc:
            return _error(f"Settings unchanged: {exc}")
        return _ok("Settings changed:", *format_conf(state.params))
    return _ok(*format_conf(state.params))


def _reset_conf(state: ChatState, arg: str) -> CommandResult:
    state.params = state.initial_params or state.params
    return _ok("Settings reset:", *format_conf(state.params))


def _system(state: ChatState, arg: str) -> CommandResult:
    if not arg:
        shown = state.system if state.system is not None else "(the model's default)"
        return _ok(f"System prompt: {shown}")
    state.system = None if arg == "-" else arg
    return _ok("System prompt removed: the model's default applies." if state.system is None
               else "System prompt set; it applies from the next question.")


def _stats(state: ChatState, arg: str) -> CommandResult:
    state.show_stats = not state.show_stats
    return _ok(f"Stats after each answer: {'on' if state.show_stats else 'off'}.")


def _think(state: ChatState, arg: str) -> CommandResult:
    words = {"on": True, "off": False}
    if not arg:
        shown = "the model's default" if state.thinking is None else ("on" if state.thinking else "off")
        hidden = " (reasoning hidden: --hide-thinking)" if state.hide_thinking else ""
        return _ok(f"Thinking: {shown}{hidden}.")
    if arg.lower() not in words:
        return _error(f":think takes on or off, got {arg!r}")
    state.thinking = words[arg.lower()]
    return _ok(f"Thinking {'on' if state.thinking else 'off'} from the next question "
               "(models without a thinking mode ignore it).")


_HANDLERS: dict[str, Callable[[ChatState, str], CommandResult]] = {
    "help": _help,
    "quit": _quit,
    "clear": _clear,
    "clear-history": _clear_history,
    "history": _history,
    "seed": _seed,
    "conf": _conf,
    "reset-conf": _reset_conf,
    "system": _system,
    "stats": _stats,
    "think": _think,
}


def execute(state: ChatState, command: Command) -> CommandResult:
    """Apply one command to the state; bad arguments give an error result, never an exception."""
    handler = _HANDLERS.get(command.name)
    if handler is None:
        raise ValueError(f"no handler for command {command.name!r}")
    return handler(state, command.arg)


def format_stats(time_to_first_token_s: float | None, tokens_per_second: float, num_tokens: int,
                 drafts: tuple[int, int] | None = None) -> str:
    """The --stats line; ``drafts``: (drafted, accepted) tokens of this answer's speculative decoding."""
    ttft = "-" if time_to_first_token_s is None else f"{time_to_first_token_s:.2f} s"
    line = f"first token {ttft} · {tokens_per_second:.1f} tok/s · {num_tokens} tokens"
    if drafts and drafts[0] > 0:
        line += f" · drafts {100 * drafts[1] / drafts[0]:.0f}% accepted ({drafts[1]}/{drafts[0]})"
    return line


def dropped_turns_note(dropped: int) -> str | None:
    if dropped <= 0:
        return None
    turns = "turn" if dropped == 1 else "turns"
    return f"({dropped} oldest {turns} no longer fit the context window and were left out of this answer's prompt)"
