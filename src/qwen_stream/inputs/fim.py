"""Fill-in-the-middle prompts as token ids, built on a code model's own FIM tokens (Qwen2.5-Coder's names).

File level: ``<|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>``; the model writes the middle and ends it
with ``<|endoftext|>`` (or another FIM token, which also ends it). Repo level, for other files as context, the
layout Qwen2.5-Coder was trained on (its README and report, and llama.cpp's ``format_prompt_infill``)::

    <|repo_name|>{repo}\\n<|file_sep|>{path}\\n{text}<|file_sep|>{path}\\n{text}...<|file_sep|>{current}\\n
    <|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>

The special tokens come from the tokenizer by name and go in as ids. The user's text (code, file names) is
tokenized with special-token matching off, so a file that contains ``<|fim_suffix|>`` cannot inject one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from qwen_stream.errors import ContextLengthError, UnsupportedTaskError

FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE, FIM_PAD = "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|fim_pad|>"
REPO_NAME, FILE_SEP = "<|repo_name|>", "<|file_sep|>"
DEFAULT_REPO = "myproject"  # the names llama.cpp's server uses when the client gives none
DEFAULT_FILENAME = "filename"


class NoFimError(UnsupportedTaskError):
    """The model's tokenizer has no fill-in-the-middle tokens: it cannot fill a middle."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="fim_not_supported")


@dataclass(frozen=True, slots=True)
class FimTokens:
    prefix: int
    suffix: int
    middle: int
    pad: int | None = None
    repo_name: int | None = None
    file_sep: int | None = None

    @property
    def repo_level(self) -> bool:
        return self.repo_name is not None and self.file_sep is not None

    @property
    def stop_ids(self) -> tuple[int, ...]:
        """Ids that end a middle besides the end-of-text: any FIM token (a model that writes one has finished the
        gap, or started the next file)."""
        ids = (self.prefix, self.suffix, self.middle, self.pad, self.repo_name, self.file_sep)
        return tuple(i for i in ids if i is not None)


@dataclass(frozen=True, slots=True)
class ExtraFile:
    """Another file of the project, shown to the model before the one being edited."""

    filename: str
    text: str


@dataclass(frozen=True, slots=True)
class FimBudget:
    """Token limits: the prefix keeps its end, the suffix its start, other files what is left of ``total``."""

    total: int
    prefix: int = 1536  # llama.cpp's split of its 2,048-token batch: 3/4 prefix, 1/4 suffix
    suffix: int = 512


@dataclass(frozen=True, slots=True)
class FimInput:
    """What a request asks to fill: the text before and after the gap. ``repo_level``: llama.cpp's ``/infill``
    layout, with other files of the project as context and ``prompt`` (the cursor line's start) after the prefix;
    otherwise the file alone (Ollama's and OpenAI's ``suffix``)."""

    prefix: str
    suffix: str
    repo_level: bool = False
    prompt: str = ""
    extra: tuple[ExtraFile, ...] = ()
    repo: str = DEFAULT_REPO
    filename: str = DEFAULT_FILENAME

    def build(self, prompter: FimPrompter, budget: FimBudget) -> FimPrompt:
        if not self.repo_level:
            return prompter.file_level(self.prefix, self.suffix, budget)
        return prompter.repo_level(self.prefix, self.suffix, budget, prompt=self.prompt, extra=self.extra,
                                   repo=self.repo, filename=self.filename)


@dataclass(frozen=True, slots=True)
class FimPrompt:
    ids: list[int]
    truncated: bool  # some prefix, suffix or context was left out to fit the budget


def special_id(tokenizer: Any, token: str) -> int | None:
    """The id of ``token`` when the tokenizer has it as one token (not unknown, not split), else None."""
    token_id = tokenizer.convert_tokens_to_ids(token)
    if not isinstance(token_id, int) or token_id < 0:
        return None
    return token_id if tokenizer.convert_ids_to_tokens(token_id) == token else None


def fim_tokens(tokenizer: Any) -> FimTokens | None:
    """The model's FIM tokens, or None when it lacks the three it needs."""
    prefix, suffix, middle = (special_id(tokenizer, t) for t in (FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE))
    if prefix is None or suffix is None or middle is None:
        return None
    return FimTokens(prefix, suffix, middle, special_id(tokenizer, FIM_PAD), special_id(tokenizer, REPO_NAME),
                     special_id(tokenizer, FILE_SEP))


def require_fim(tokenizer: Any, model_name: str = "this model") -> FimTokens:
    tokens = fim_tokens(tokenizer)
    if tokens is None:
        raise NoFimError(f"{model_name} cannot fill in the middle: its tokenizer has no {FIM_PREFIX}, "
                         f"{FIM_SUFFIX} and {FIM_MIDDLE} tokens (serve a code model such as qwen2.5-coder-1.5b)")
    return tokens


class PlainTextEncoder:
    """Text to ids with every special token read as plain text.

    A private copy of the fast tokenizer's backend with ``encode_special_tokens`` on: the shared tokenizer keeps
    matching specials for chat templates, and no flag is flipped on it under concurrent requests.
    """

    def __init__(self, tokenizer: Any) -> None:
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise TypeError("fill-in-the-middle needs a fast (tokenizers) tokenizer")
        from tokenizers import Tokenizer

        self._backend = Tokenizer.from_str(backend.to_str())
        self._backend.encode_special_tokens = True

    def encode(self, text: str) -> list[int]:
        return list(self._backend.encode(text, add_special_tokens=False).ids) if text else []


class FimPrompter:
    """Builds FIM prompts for one tokenizer (made once per model: copying the backend takes a moment)."""

    def __init__(self, tokenizer: Any, model_name: str = "this model") -> None:
        self.tokens = require_fim(tokenizer, model_name)
        self._encode = PlainTextEncoder(tokenizer).encode

    def file_level(self, prefix: str, suffix: str, budget: FimBudget) -> FimPrompt:
        """``prefix`` + hole + ``suffix`` with no repository header (Ollama's and OpenAI's ``suffix``)."""
        return self._assemble([], self._encode(prefix), [], self._encode(suffix), budget)

    def repo_level(self, prefix: str, suffix: str, budget: FimBudget, *, prompt: str = "",
                   extra: Sequence[ExtraFile] = (), repo: str = DEFAULT_REPO,
                   filename: str = DEFAULT_FILENAME) -> FimPrompt:
        """llama.cpp's ``/infill`` prompt: ``extra`` files as context, then the current file with ``prompt`` (the
        text before the cursor on its line) after the prefix. Without repo tokens the files go in as plain text."""
        head = self._context(extra, repo, filename)
        return self._assemble(head, self._encode(prefix), self._encode(prompt), self._encode(suffix), budget)

    def _context(self, extra: Sequence[ExtraFile], repo: str, filename: str) -> list[int]:
        t = self.tokens
        if not t.repo_level or t.repo_name is None or t.file_sep is None:
            return [i for f in extra for i in self._encode(f"\n\n--- snippet ---\n\n{f.text}")]
        ids = [t.repo_name, *self._encode(f"{repo}\n")]
        for f in extra:
            ids += [t.file_sep, *self._encode(f"{f.filename}\n{f.text}")]
        return [*ids, t.file_sep, *self._encode(f"{filename}\n")]

    def _assemble(self, head: list[int], prefix: list[int], prompt: list[int], suffix: list[int],
                  budget: FimBudget) -> FimPrompt:
        t = self.tokens
        keep_prefix = min(len(prefix), max(0, budget.prefix - len(prompt)))
        keep_suffix = min(len(suffix), budget.suffix)
        core = [t.prefix, *prefix[len(prefix) - keep_prefix:], *prompt, t.suffix, *suffix[:keep_suffix], t.middle]
        if len(core) > budget.total:
            raise ContextLengthError(f"the fill-in-the-middle prompt needs {len(core)} tokens and the context window "
                             f"leaves {budget.total}: send less text before the cursor on its line", prompt_tokens=len(core))
        keep_head = min(len(head), budget.total - len(core))
        truncated = keep_prefix < len(prefix) or keep_suffix < len(suffix) or keep_head < len(head)
        # The context keeps its end (nearest the file being edited), as llama.cpp does.
        return FimPrompt([*head[len(head) - keep_head:], *core], truncated)
