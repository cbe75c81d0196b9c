"""The web chat's conversation bookkeeping as pure functions (no gradio import), so it is unit-tested alone.

Gradio's Chatbot holds the conversation as OpenAI-style messages; in Gradio 6 a message's content comes back
from the browser as a list of parts (``[{"type": "text", "text": ...}]``), so everything here reads content
through `message_text` and writes plain strings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from qwen_stream.inputs.chat_template import history_pairs

Message = dict[str, Any]
THINKING_TITLE = "Thinking"  # a reasoning block: an assistant message Gradio shows collapsible (metadata.title)

# One answer at a time per conversation, as chat UIs do: a second question waits in the box, not in the chat.
STILL_ANSWERING = "An answer is still streaming. Wait for it to finish, or press Stop, then send again."


class StillAnsweringError(ValueError):
    """A question or a Regenerate came while this conversation's answer is still streaming."""

    def __init__(self) -> None:
        super().__init__(STILL_ANSWERING)


def accept_query(query: str | None, answering: bool) -> str:
    """The question to answer now ("" for an empty box); StillAnsweringError while an answer streams."""
    if query is not None and not isinstance(query, str):
        raise TypeError(f"the question must be a string, got {type(query).__name__}")
    if answering:
        raise StillAnsweringError()
    return (query or "").strip()


def message_text(content: Any) -> str:
    """The text of a message's content, whether a string, a list of parts or one part."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Mapping):
        return str(content.get("text") or content.get("content") or "")
    if isinstance(content, Sequence):
        return "".join(message_text(part) for part in content)
    raise TypeError(f"cannot read message content of type {type(content).__name__}")


def normalize(messages: Sequence[Mapping[str, Any]] | None) -> list[Message]:
    """Plain {"role", "content": str} copies; a reasoning block keeps its metadata (the UI shows it collapsed),
    other keys (options, ...) are the UI's, not the model's."""
    out: list[Message] = []
    for message in messages or []:
        if not isinstance(message, Mapping) or "role" not in message:
            raise TypeError(f"each message must be a mapping with a 'role', got {message!r}")
        copy: Message = {"role": str(message["role"]), "content": message_text(message.get("content"))}
        if is_thinking(message):
            copy["metadata"] = {"title": THINKING_TITLE, "status": "done"}
        out.append(copy)
    return out


def is_thinking(message: Mapping[str, Any]) -> bool:
    metadata = message.get("metadata")
    return isinstance(metadata, Mapping) and metadata.get("title") == THINKING_TITLE


def to_pairs(messages: Sequence[Mapping[str, Any]] | None) -> list[tuple[str, str]]:
    """(question, answer) pairs of the finished turns; a question with no answer yet is left out. Reasoning
    blocks are not sent back to the model, as Qwen3's own template drops earlier turns' reasoning."""
    return history_pairs([m for m in normalize(messages) if not is_thinking(m)])


def thinking_block(reasoning: str, *, done: bool) -> Message:
    """The collapsible "Thinking" message shown above an answer."""
    return {"role": "assistant", "content": reasoning,
            "metadata": {"title": THINKING_TITLE, "status": "done" if done else "pending"}}


def start_turn(messages: Sequence[Mapping[str, Any]] | None, query: str) -> list[Message]:
    """The conversation with the new question and an empty answer that the stream will fill."""
    return [*normalize(messages), {"role": "user", "content": query}, {"role": "assistant", "content": ""}]


def pop_last_turn(messages: Sequence[Mapping[str, Any]] | None) -> tuple[list[Message], str]:
    """Remove the last question and its answer (if any): for Undo and Regenerate. Returns (rest, question)."""
    rest = normalize(messages)
    while rest and rest[-1]["role"] == "assistant":
        rest.pop()
    if not rest or rest[-1]["role"] != "user":
        return rest, ""
    return rest[:-1], rest[-1]["content"]


def seed_from_ui(value: float | int | str | None) -> int | None:
    """The seed box: empty or negative means a new random seed per answer."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"the seed must be a whole number, got {value!r}") from None
    if number != int(number):
        raise ValueError(f"the seed must be a whole number, got {value!r}")
    return None if number < 0 else int(number)


def sampling_overrides(temperature: float | None, top_p: float | None, max_new_tokens: float | None,
                       seed: float | int | str | None) -> dict[str, Any]:
    """The UI controls as SamplingParams overrides (None = keep the model's default)."""
    overrides: dict[str, Any] = {"seed": seed_from_ui(seed)}
    if temperature is not None:
        overrides["temperature"] = float(temperature)
    if top_p is not None:
        overrides["top_p"] = float(top_p)
    if max_new_tokens is not None:
        overrides["max_new_tokens"] = int(max_new_tokens)
    return overrides
