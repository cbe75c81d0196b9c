"""Chat history in, prompt token ids out: normalize the history, apply the chat template, fold to fit.

History comes either as Qwen-7B-Chat's ``[(query, response), ...]`` pairs or as OpenAI-style messages. When
the prompt would not fit the context window minus ``max_new_tokens``, whole turns are dropped, oldest first;
the system prompt and the last user turn are always kept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

ROLES = frozenset({"system", "user", "assistant", "tool"})
# What Qwen-7B-Chat's make_context puts first when the caller gives no system prompt.
CHATML_DEFAULT_SYSTEM = "You are a helpful assistant."

Message = dict[str, str]


@dataclass(slots=True)
class PromptResult:
    ids: list[int]
    dropped_turns: int  # whole user(+assistant) turns left out, oldest first, to fit the limit
    text: str  # the rendered prompt the ids came from

    @property
    def num_tokens(self) -> int:
        return len(self.ids)


def normalize_history(history: object) -> list[Message]:
    """None, (query, response) pairs, or OpenAI-style messages -> [{"role": ..., "content": ...}, ...]."""
    if history is None:
        return []
    if isinstance(history, (str, bytes)) or not isinstance(history, Sequence):
        raise TypeError(f"history must be a list of (query, response) pairs or of messages, "
                        f"got {type(history).__name__}")
    messages: list[Message] = []
    for index, item in enumerate(history):
        if isinstance(item, Mapping):
            messages.append(_normalize_message(item, index))
        elif isinstance(item, (tuple, list)) and len(item) == 2:
            query, response = (_text(part, f"history[{index}][{k}]") for k, part in enumerate(item))
            messages += [{"role": "user", "content": query}, {"role": "assistant", "content": response}]
        else:
            raise TypeError(f"history[{index}] must be a (query, response) pair or a message dict, got {item!r:.80}")
    return messages


def make_messages(query: str | None, history: object = None, *, system: str | None = None) -> list[Message]:
    """The full conversation for one request: system prompt, the history, then the new query (if any)."""
    messages = normalize_history(history)
    if system is not None:
        if not isinstance(system, str):
            raise TypeError(f"system must be a string, got {type(system).__name__}")
        messages = [m for m in messages if m["role"] != "system"]
        messages.insert(0, {"role": "system", "content": system})
    if query is not None:
        messages.append({"role": "user", "content": _text(query, "query")})
    if not messages:
        raise ValueError("nothing to answer: give a query or at least one message")
    return messages


def history_pairs(history: object) -> list[tuple[str, str]]:
    """(question, answer) pairs of the finished turns, whatever form the history came in (Qwen-7B-Chat's form)."""
    pairs: list[tuple[str, str]] = []
    question: str | None = None
    for message in normalize_history(history):
        if message["role"] == "user":
            question = message["content"]
        elif message["role"] == "assistant" and question is not None:
            pairs.append((question, message["content"]))
            question = None
    return pairs


def _normalize_message(item: Mapping[str, Any], index: int) -> Message:
    role = item.get("role")
    if role not in ROLES:
        raise ValueError(f"history[{index}] has role {role!r}; expected one of {sorted(ROLES)}")
    content = item.get("content")
    if content is None and role == "assistant":
        content = ""  # an assistant turn that only called tools
    return {"role": str(role), "content": _content_text(content, f"history[{index}].content")}


def _content_text(content: object, where: str) -> str:
    if isinstance(content, list):  # OpenAI content parts: only text parts make sense to a text-only model
        texts = []
        for part in content:
            if not isinstance(part, Mapping) or part.get("type") != "text":
                raise ValueError(f"{where}: only text content parts are supported, got {part!r:.80}")
            texts.append(_text(part.get("text"), where))
        return "\n".join(texts)
    return _text(content, where)


def _text(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{where} must be a string, got {type(value).__name__}")
    return value


class ChatPrompter:
    """Renders messages with the tokenizer's chat template (ChatML when it has none) and folds to fit."""

    def __init__(self, tokenizer: Any, *, default_system: str | None = None) -> None:
        self.tokenizer = tokenizer
        self.default_system = default_system
        self.has_template = bool(getattr(tokenizer, "chat_template", None))

    def build(self, messages: Sequence[Mapping[str, Any]], *, max_prompt_tokens: int) -> PromptResult:
        """Token ids of the prompt, dropping the oldest turns until it fits ``max_prompt_tokens``."""
        if isinstance(max_prompt_tokens, bool) or not isinstance(max_prompt_tokens, int) or max_prompt_tokens < 1:
            raise ValueError(f"max_prompt_tokens must be an integer >= 1, got {max_prompt_tokens!r}")
        msgs = normalize_history(list(messages))
        if not msgs:
            raise ValueError("messages is empty: nothing to answer")
        system, turns = self._split(msgs)
        full = self._encode(system, turns)
        if len(full.ids) <= max_prompt_tokens:
            return full
        last_only = full if len(turns) == 1 else self._encode(system, turns[-1:], dropped=len(turns) - 1)
        if len(last_only.ids) > max_prompt_tokens:
            raise ValueError(f"the prompt is too long: the system prompt and the last message alone take "
                             f"{len(last_only.ids)} tokens, but the limit is {max_prompt_tokens} "
                             f"(the context window minus max_new_tokens)")
        return self._fit(system, turns, max_prompt_tokens, last_only)

    def _fit(self, system: list[Message], turns: list[list[Message]], limit: int, best: PromptResult) -> PromptResult:
        # Fewer dropped turns -> longer prompt, so binary search the smallest drop that fits: O(log n) renders.
        lo, hi = 1, len(turns) - 1  # dropping 0 is known too long, dropping len-1 is known to fit
        while lo < hi:
            mid = (lo + hi) // 2
            candidate = self._encode(system, turns[mid:], dropped=mid)
            if len(candidate.ids) <= limit:
                hi, best = mid, candidate
            else:
                lo = mid + 1
        return best  # always the encoding for `hi`: it is updated together with hi

    def _split(self, msgs: list[Message]) -> tuple[list[Message], list[list[Message]]]:
        """Leading system messages, then turns: each starts at a user message and runs to the next one."""
        n_system = 0
        while n_system < len(msgs) and msgs[n_system]["role"] == "system":
            n_system += 1
        system = msgs[:n_system]
        if not system and self.default_system is not None:
            system = [{"role": "system", "content": self.default_system}]
        turns: list[list[Message]] = []
        for message in msgs[n_system:]:
            if message["role"] == "user" or not turns:
                turns.append([message])
            else:
                turns[-1].append(message)
        if not turns:
            raise ValueError("messages hold only a system prompt: add a user message")
        return system, turns

    def _encode(self, system: list[Message], turns: list[list[Message]], dropped: int = 0) -> PromptResult:
        messages = system + [m for turn in turns for m in turn]
        text = self.render(messages)
        # The template already wrote any BOS/special tokens it wants: do not let the tokenizer add them again.
        ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return PromptResult(ids=ids, dropped_turns=dropped, text=text)

    def render(self, messages: list[Message]) -> str:
        if self.has_template:
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            if not isinstance(text, str):
                raise TypeError(f"the chat template rendered {type(text).__name__}, expected a string")
            return text
        return render_chatml(messages)


def render_chatml(messages: Sequence[Message]) -> str:
    """ChatML as Qwen-7B-Chat's make_context writes it, for tokenizers without a chat template."""
    parts = []
    if not messages or messages[0]["role"] != "system":
        parts.append(f"<|im_start|>system\n{CHATML_DEFAULT_SYSTEM}<|im_end|>")
    parts += [f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>" for m in messages]
    parts.append("<|im_start|>assistant\n")
    return "\n".join(parts)
