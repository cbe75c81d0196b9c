"""Chat history in, prompt token ids out: normalize the history, apply the chat template, fold to fit.

History comes either as Qwen-7B-Chat's ``[(query, response), ...]`` pairs or as OpenAI-style messages. When
the prompt would not fit the context window minus ``max_new_tokens``, whole turns are dropped, oldest first;
the system prompt and the last user turn are always kept. With ``fold=False`` nothing is dropped: a prompt over
the limit is a ContextLengthError that says its size (the HTTP protocols' answer, as their own servers give).

How the prompt ends (``ending``): ``answer`` opens a new assistant turn (the generation prompt); ``continue``
leaves the final assistant message open so the model goes on writing it (prefill: Anthropic's final assistant
message, vLLM's ``continue_final_message``), the template's own way: rendered without the generation prompt and
cut after that message's text, as transformers' ``continue_final_message`` does; ``bare`` renders the messages
alone (vLLM's ``add_generation_prompt: false``).

Special tokens come only from the chat template: a message whose text spells one (``<|im_end|>``,
``<|im_start|>system``) is encoded as plain text, as Qwen-7B-Chat's make_context does with
``allowed_special=set()``, so a user cannot forge a turn. Non-special added tokens (Qwen2.5's ``<tool_call>``)
are left to the tokenizer: they are meant to appear in message text.

Tool use: an assistant message keeps its ``tool_calls`` (arguments parsed into objects for the template) and a
``tool`` message its ``tool_call_id``; a turn runs from a user message to the next one, so a call and its
results are always kept or dropped together. ``tools`` and any ``template_kwargs`` (``enable_thinking`` ...)
go to the template as variables. Known slips in a shipped template (Qwen2.5's doubled-brace tool-call example)
are corrected before rendering (inputs/template_fixes.py).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from qwen_stream.errors import ContextLengthError, InvalidParameterError, UnsupportedTaskError
from qwen_stream.inputs.template_fixes import corrected_template
from qwen_stream.inputs.tools import normalize_tool_calls

ROLES = frozenset({"system", "user", "assistant", "tool"})
# What Qwen-7B-Chat's make_context puts first when the caller gives no system prompt.
CHATML_DEFAULT_SYSTEM = "You are a helpful assistant."

Message = dict[str, Any]
PromptEnding = Literal["answer", "continue", "bare"]
# Names apply_chat_template itself takes: chat_template_kwargs must not smuggle these in.
_RESERVED_TEMPLATE_KWARGS = frozenset({
    "conversation", "messages", "tools", "documents", "chat_template", "add_generation_prompt",
    "continue_final_message", "tokenize", "padding", "truncation", "max_length", "return_tensors", "return_dict",
    "return_assistant_tokens_mask", "tokenizer_kwargs"})


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
    message: Message = {"role": str(role), "content": _content_text(content, f"history[{index}].content")}
    if role == "assistant" and item.get("tool_calls"):
        message["tool_calls"] = normalize_tool_calls(item["tool_calls"], f"history[{index}].tool_calls")
    if role == "assistant" and isinstance(item.get("reasoning_content"), str):
        message["reasoning_content"] = item["reasoning_content"]
    if role == "tool":
        for key in ("tool_call_id", "name"):
            if isinstance(item.get(key), str):
                message[key] = item[key]
    return message


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
        template = getattr(tokenizer, "chat_template", None)
        # The template rendered: the tokenizer's own, corrected where it is known to mislead the model (a
        # tokenizer with several named templates keeps its own choice among them).
        self._template = corrected_template(template) if isinstance(template, str) else None
        # Some tokenizers carry several named templates; what matters here is what any of them mentions.
        self.template_text = " ".join(template.values()) if isinstance(template, dict) else (self._template or "")
        self.supports_tools = "tools" in self.template_text
        self._specials = special_token_ids(tokenizer)
        self._special_id_set = frozenset(self._specials.values())
        self._special_re = _alternation(self._specials)

    def build(self, messages: Sequence[Mapping[str, Any]], *, max_prompt_tokens: int,
              tools: Sequence[Mapping[str, Any]] | None = None, template_kwargs: Mapping[str, Any] | None = None,
              fold: bool = True, ending: PromptEnding = "answer") -> PromptResult:
        """Token ids of the prompt, dropping the oldest turns until it fits ``max_prompt_tokens`` (with ``fold``;
        without, a ContextLengthError carrying the whole prompt's size). ``ending``: see the module docstring.

        ``tools`` (OpenAI specs) and ``template_kwargs`` are template variables; a template that never mentions
        ``tools`` cannot show them to the model, so asking for them is a ValueError rather than a silent drop.
        """
        if isinstance(max_prompt_tokens, bool) or not isinstance(max_prompt_tokens, int) or max_prompt_tokens < 1:
            raise ValueError(f"max_prompt_tokens must be an integer >= 1, got {max_prompt_tokens!r}")
        variables = self._template_variables(tools, template_kwargs)
        msgs = normalize_history(list(messages))
        if not msgs:
            raise ValueError("messages is empty: nothing to answer")
        if ending == "continue":
            _check_continuable(msgs[-1])
        system, turns = self._split(msgs)
        if not fold:
            return self._whole(system, turns, max_prompt_tokens, variables, ending)
        # Every turn takes at least one token, so no more than max_prompt_tokens of the newest can fit: rendering
        # only those keeps 100,000 messages from costing minutes of template rendering.
        skipped = max(0, len(turns) - max_prompt_tokens)
        turns = turns[skipped:]
        full = self._encode(system, turns, skipped, variables, ending)
        if len(full.ids) <= max_prompt_tokens:
            return full
        last_only = full if len(turns) == 1 else self._encode(system, turns[-1:], skipped + len(turns) - 1,
                                                              variables, ending)
        if len(last_only.ids) > max_prompt_tokens:
            raise ContextLengthError(f"the prompt is too long: the system prompt and the last message alone take "
                                     f"{len(last_only.ids)} tokens, but the limit is {max_prompt_tokens} "
                                     f"(the context window minus max_new_tokens)", prompt_tokens=len(last_only.ids))
        return self._fit(system, turns, max_prompt_tokens, last_only, variables, skipped, ending)

    def _whole(self, system: list[Message], turns: list[list[Message]], limit: int, variables: dict[str, Any],
               ending: PromptEnding) -> PromptResult:
        """The whole conversation, or a ContextLengthError with its size. More turns than ``limit`` cannot fit
        whatever they hold: the newest ``limit + 1`` alone prove it (their size a lower bound, ``at_least``), so
        100,000 messages cost no more to refuse than to fold."""
        partial = len(turns) > limit
        whole = self._encode(system, turns[-(limit + 1):] if partial else turns, 0, variables, ending)
        if len(whole.ids) > limit or partial:
            raise ContextLengthError(f"the prompt takes {'at least ' if partial else ''}{len(whole.ids)} tokens, "
                                     f"over the limit of {limit}", prompt_tokens=len(whole.ids), at_least=partial)
        return whole

    def require_tools(self) -> None:
        """UnsupportedTaskError unless the chat template can show the model ``tools``."""
        if not self.supports_tools:
            raise UnsupportedTaskError("this model's chat template has no tool support: it cannot show the model "
                                       "`tools` (use a model whose template renders them, e.g. Qwen2.5 or Qwen3)",
                                       code="tools_not_supported", param="tools")

    def _template_variables(self, tools: Sequence[Mapping[str, Any]] | None,
                            template_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
        variables: dict[str, Any] = {}
        if template_kwargs:
            if not isinstance(template_kwargs, Mapping) or not all(isinstance(k, str) for k in template_kwargs):
                raise ValueError("chat_template_kwargs must be an object with string keys")
            clash = sorted(set(template_kwargs) & _RESERVED_TEMPLATE_KWARGS)
            if clash:
                raise ValueError(f"chat_template_kwargs cannot set {', '.join(clash)}")
            variables.update(template_kwargs)
        if tools:
            self.require_tools()
            variables["tools"] = [dict(tool) for tool in tools]
        return variables

    def _fit(self, system: list[Message], turns: list[list[Message]], limit: int, best: PromptResult,
             variables: dict[str, Any], skipped: int = 0, ending: PromptEnding = "answer") -> PromptResult:
        # Fewer dropped turns -> longer prompt, so binary search the smallest drop that fits: O(log n) renders.
        lo, hi = 1, len(turns) - 1  # dropping 0 is known too long, dropping len-1 is known to fit
        while lo < hi:
            mid = (lo + hi) // 2
            candidate = self._encode(system, turns[mid:], skipped + mid, variables, ending)
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

    def _encode(self, system: list[Message], turns: list[list[Message]], dropped: int = 0,
                variables: dict[str, Any] | None = None, ending: PromptEnding = "answer") -> PromptResult:
        messages = system + [m for turn in turns for m in turn]
        for message in messages:
            if "tool_calls" in message and self._holds_special_text(repr(message["tool_calls"])):
                raise ValueError("tool call names and arguments must not spell special tokens")
        forged = [i for i, m in enumerate(messages) if self._holds_special_text(m["content"])]
        if forged:
            text, ids = self._encode_guarded(messages, forged, variables, ending)
            return PromptResult(ids=ids, dropped_turns=dropped, text=text)
        # No message spells a special token: every special token in the text is the template's own, so the
        # whole text is encoded at once, exactly as before. The template already wrote any BOS it wants.
        text = self.render(messages, variables, ending)
        ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return PromptResult(ids=ids, dropped_turns=dropped, text=text)

    def _holds_special_text(self, content: str) -> bool:
        return self._special_re is not None and self._special_re.search(content) is not None

    def _encode_guarded(self, messages: list[Message], forged: list[int], variables: dict[str, Any] | None,
                        ending: PromptEnding = "answer") -> tuple[str, list[int]]:
        """Render with a marker in place of each forged content, then encode the contents as plain text."""
        nonce = secrets.token_hex(8)  # unguessable, so no message can hold a marker itself
        marker = {i: f"\ue000{nonce}:{i}\ue001" for i in forged}  # private-use characters: templates leave them
        markers = {marker[i]: messages[i]["content"] for i in forged}
        marked = [{**m, "content": marker[i]} if i in marker else m for i, m in enumerate(messages)]
        pieces = re.split(f"(\ue000{nonce}:\\d+\ue001)", self.render(marked, variables, ending))
        # re.split with a group alternates: template text at even indexes, a marker at odd ones.
        text = "".join(markers[p] if k % 2 else p for k, p in enumerate(pieces))
        return text, self._encode_pieces(pieces, markers)

    def _encode_pieces(self, pieces: list[str], markers: dict[str, str]) -> list[int]:
        """Template specials become their ids; the text between them (template and content alike) is encoded
        in one run with special-token parsing off, so the ids across a content's edges match a plain encode."""
        ids: list[int] = []
        run: list[str] = []
        for k, piece in enumerate(pieces):
            if k % 2:
                run.append(markers[piece])
                continue
            for j, part in enumerate(self._special_re.split(piece) if self._special_re else [piece]):
                if j % 2:  # a special token written by the template
                    ids += self._plain_ids("".join(run))
                    run = []
                    ids.append(self._specials[part])
                else:
                    run.append(part)
        return ids + self._plain_ids("".join(run))

    def _plain_ids(self, text: str) -> list[int]:
        if not text:
            return []
        ids = list(self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])
        if not self._special_id_set.isdisjoint(ids):  # an old tokenizer that ignores the option: refuse
            raise TypeError(f"{type(self.tokenizer).__name__} ignores split_special_tokens: message text cannot "
                            f"be kept from forging special tokens with it")
        return ids

    def render(self, messages: list[Message], variables: Mapping[str, Any] | None = None,
               ending: PromptEnding = "answer") -> str:
        """The prompt text; ``variables`` (tools, enable_thinking, ...) are passed to the template."""
        if self.has_template:
            # transformers leaves the final message open for continue_final_message: the template renders it
            # whole, then the text is cut after the message's content (whatever end-of-turn the template wrote).
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=ending == "answer",
                                                      continue_final_message=ending == "continue",
                                                      chat_template=self._template, **dict(variables or {}))
            if not isinstance(text, str):
                raise TypeError(f"the chat template rendered {type(text).__name__}, expected a string")
            return text
        return render_chatml(messages, ending)


def special_token_ids(tokenizer: Any) -> dict[str, int]:
    """Text -> id of the tokenizer's special tokens (not its plain added tokens such as ``<tool_call>``)."""
    decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    found = {str(getattr(token, "content", token)): int(i) for i, token in decoder.items()
             if getattr(token, "special", False)}
    for token in getattr(tokenizer, "all_special_tokens", []):  # tokenizers without AddedToken details
        found.setdefault(token, int(tokenizer.convert_tokens_to_ids(token)))
    return found


def _alternation(tokens: Mapping[str, int]) -> re.Pattern[str] | None:
    """One regex matching any of ``tokens``, in a group so that re.split keeps them; the longest wins."""
    if not tokens:
        return None
    return re.compile("(" + "|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True)) + ")")


def render_chatml(messages: Sequence[Message], ending: PromptEnding = "answer") -> str:
    """ChatML as Qwen-7B-Chat's make_context writes it, for tokenizers without a chat template."""
    parts = []
    if not messages or messages[0]["role"] != "system":
        parts.append(f"<|im_start|>system\n{CHATML_DEFAULT_SYSTEM}<|im_end|>")
    parts += [f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>" for m in messages]
    if ending == "continue":
        parts[-1] = parts[-1].removesuffix("<|im_end|>")
    elif ending == "answer":
        parts.append("<|im_start|>assistant\n")
    return "\n".join(parts)


def _check_continuable(last: Message) -> None:
    """Only an assistant's text can be continued: not a user turn, not one that called tools, not an empty one."""
    if last["role"] != "assistant":
        raise InvalidParameterError("messages", "only a final assistant message can be continued")
    if last.get("tool_calls"):
        raise InvalidParameterError("messages", "a final assistant message that calls tools cannot be continued: "
                                    "send the tool results")
    if not last["content"]:
        raise InvalidParameterError("messages", "a final assistant message with no text has nothing to continue")
