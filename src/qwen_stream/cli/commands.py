"""The terminal chat's `:commands` and `:conf key=value` settings, as pure functions (no I/O, no model).

A line is a command only when it looks like one (``:word`` at the start), so a user can still ask ``:)`` or
``:-( why?`` as a question.
"""

from __future__ import annotations

import difflib
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from qwen_stream.types import SamplingParams

# canonical name -> every spelling that reaches it (Qwen's own CLI demo spellings, plus :clear-history)
COMMAND_ALIASES: dict[str, tuple[str, ...]] = {
    "help": ("help", "h"),
    "quit": ("quit", "q", "exit"),
    "clear": ("clear", "cl"),
    "clear-history": ("clear-history", "clear-his", "clh"),
    "history": ("history", "his"),
    "seed": ("seed",),
    "conf": ("conf",),
    "reset-conf": ("reset-conf",),
    "system": ("system",),
    "stats": ("stats",),
    "think": ("think",),
}
_SPELLING_TO_NAME = {spelling: name for name, spellings in COMMAND_ALIASES.items() for spelling in spellings}
_COMMAND_RE = re.compile(r":([A-Za-z][A-Za-z-]*)(?:\s+(.*))?", re.DOTALL)

HELP_TEXT = """\
Type a question and press Enter; the answer streams in. Ctrl-C stops an answer; Ctrl-C or Ctrl-D on an empty
prompt quits. End a line with \\ (or press Esc then Enter, or Ctrl-J) to continue on a new line.
Commands:
  :help, :h                     show this help
  :quit, :q, :exit              leave
  :clear, :cl                   clear the screen
  :clear-history, :clear-his, :clh   forget the conversation so far
  :history, :his                show the conversation so far
  :seed [N|random]              show or set the random seed
  :conf [key=value ...]         show or change the generation settings (e.g. :conf temperature=0.2 top_p=0.9)
  :reset-conf                   restore the generation settings you started with
  :system [text | -]            show, set or remove (-) the system prompt
  :stats                        toggle a line with time to first token and tokens/s after each answer
  :think [on|off]               show or switch Qwen3's thinking (reasoning shown dimmed before the answer)"""


@dataclass(frozen=True, slots=True)
class Command:
    name: str  # canonical name, a key of COMMAND_ALIASES
    arg: str  # the rest of the line, stripped ("" when none)


@dataclass(frozen=True, slots=True)
class UnknownCommand:
    text: str  # the word as typed, with its colon
    suggestion: str | None  # the closest known spelling, with its colon, when one is close


@dataclass(frozen=True, slots=True)
class Query:
    text: str


@dataclass(frozen=True, slots=True)
class Empty:
    pass


ParsedLine = Command | UnknownCommand | Query | Empty


def parse_line(line: str) -> ParsedLine:
    """Sort one line of input into a command, an unknown command, a question or nothing."""
    if not isinstance(line, str):
        raise TypeError(f"line must be a str, got {type(line).__name__}")
    text = line.strip()
    if not text:
        return Empty()
    match = _COMMAND_RE.fullmatch(text)
    if match is None:
        return Query(text)
    word, arg = match.group(1).lower(), (match.group(2) or "").strip()
    name = _SPELLING_TO_NAME.get(word)
    if name is not None:
        return Command(name, arg)
    close = difflib.get_close_matches(word, list(_SPELLING_TO_NAME), n=1, cutoff=0.6)
    return UnknownCommand(":" + word, ":" + close[0] if close else None)


def unknown_command_message(unknown: UnknownCommand) -> str:
    hint = f" Did you mean {unknown.suggestion}?" if unknown.suggestion else ""
    return f"Unknown command {unknown.text}.{hint} Type :help for the list of commands."


def join_continued_lines(lines: list[str]) -> tuple[str, bool]:
    """Join input lines where each but the last ended with a backslash; say whether more lines are wanted."""
    wants_more = bool(lines) and lines[-1].endswith("\\")
    parts = [line[:-1] if line.endswith("\\") else line for line in lines]
    return "\n".join(parts), wants_more


# ---- :seed -----------------------------------------------------------------------------------------------------

def parse_seed(arg: str) -> int | None:
    """`:seed` argument -> a seed, or None for a fresh random seed per answer ("random" / "none")."""
    text = arg.strip().lower()
    if text in ("random", "none", "off"):
        return None
    try:
        seed = int(text)
    except ValueError:
        raise ValueError(f"the seed must be an integer >= 0 or 'random', got {arg.strip()!r}") from None
    if seed < 0:
        raise ValueError(f"the seed must be an integer >= 0 or 'random', got {seed}")
    return seed


# ---- :conf -----------------------------------------------------------------------------------------------------

def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _parse_stop(text: str) -> tuple[str, ...]:
    # comma-separated; "\n" written as a backslash-n is the usual stop wish, so unescape it
    if text.lower() in ("", "none", "-"):
        return ()
    return tuple(part.replace("\\n", "\n") for part in text.split(",") if part)


# setting -> (how to read a value, what it means); the SamplingParams fields a chat user tunes
CONF_FIELDS: dict[str, tuple[Callable[[str], Any], str]] = {
    "max_new_tokens": (int, "longest answer, in tokens"),
    "temperature": (float, "randomness; 0 = always the most likely token"),
    "top_p": (float, "nucleus sampling: keep the most likely tokens up to this probability mass"),
    "top_k": (int, "keep only the k most likely tokens; 0 = off"),
    "repetition_penalty": (float, "> 1 discourages repeating tokens (multiplicative)"),
    "presence_penalty": (float, "OpenAI-style additive penalty for tokens already present, -2..2"),
    "frequency_penalty": (float, "OpenAI-style additive penalty growing with each repeat, -2..2"),
    "stop": (_parse_stop, "stop strings, comma-separated (\\n for a newline); - for none"),
    "ignore_eos": (_parse_bool, "keep generating past the end-of-text token"),
}
CONF_ALIASES = {"max_tokens": "max_new_tokens", "temp": "temperature", "t": "temperature"}


def conf_key(raw_key: str) -> str:
    """Canonical setting name for what the user typed (dashes allowed, a few aliases)."""
    key = raw_key.strip().lower().replace("-", "_")
    key = CONF_ALIASES.get(key, key)
    if key == "seed":
        raise ValueError("the seed has its own command: :seed N")
    if key not in CONF_FIELDS:
        known = ", ".join(CONF_FIELDS)
        raise ValueError(f"unknown setting {raw_key!r}; settings: {known}")
    return key


def _split_words(text: str) -> list[str]:
    # shell-like quoting for values with spaces, but backslashes stay as typed ("\\n" means a newline stop)
    lexer = shlex.shlex(text, posix=True)
    lexer.whitespace_split = True
    lexer.escape = ""
    return list(lexer)


def parse_conf_assignments(arg: str) -> dict[str, Any]:
    """`temperature=0.2 top_p=0.9` -> {"temperature": 0.2, "top_p": 0.9}; ValueError names the bad part."""
    try:
        words = _split_words(arg)
    except ValueError as exc:
        raise ValueError(f"cannot read {arg!r}: {exc}") from None
    changes: dict[str, Any] = {}
    for word in words:
        if "=" not in word:
            raise ValueError(f"expected key=value, got {word!r} (e.g. :conf temperature=0.2)")
        raw_key, raw_value = word.split("=", 1)
        key = conf_key(raw_key)
        reader = CONF_FIELDS[key][0]
        try:
            changes[key] = reader(raw_value.strip())
        except ValueError:
            raise ValueError(f"{key} cannot be {raw_value!r}") from None
    return changes


def apply_conf(params: SamplingParams, arg: str) -> SamplingParams:
    """New settings with the assignments applied, validated by SamplingParams (ValueError if out of range)."""
    changes = parse_conf_assignments(arg)
    if not changes:
        raise ValueError("nothing to change: write key=value, e.g. :conf temperature=0.2")
    return params.with_(**changes)


def format_conf(params: SamplingParams) -> list[str]:
    """One `key = value  # meaning` line per setting, aligned."""
    width = max(len(key) for key in CONF_FIELDS)
    lines = []
    for key, (_, meaning) in CONF_FIELDS.items():
        value = getattr(params, key)
        shown = (",".join(s.replace("\n", "\\n") for s in value) or "-") if key == "stop" else value
        lines.append(f"{key:<{width}} = {shown!s:<8}  # {meaning}")
    return lines
