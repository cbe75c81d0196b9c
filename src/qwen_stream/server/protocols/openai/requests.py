"""OpenAI's request bodies (chat completions, completions), with the fields llama-server and vLLM clients add.

Strict about types (``"max_tokens": "5"`` is an error, as with OpenAI) and about fields: one this server does not
know is a 400 naming it, as OpenAI answers, except those listed ``HARMLESS`` (delivery and bookkeeping: leaving
them unread changes nothing in the answer); fields that would change the answer and are not done here are refused
by name (``REFUSED``). Value limits that belong to sampling (temperature >= 0, ...) are checked once, by
``SamplingParams``; only what is specific to the HTTP shape is checked here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from qwen_stream.inputs.output_format import (
    OutputFormat,
    guided_fields,
    one_format,
    response_format,
    structured_outputs,
)
from qwen_stream.server.pipeline.bodies import Refused, StrictBody
from qwen_stream.server.pipeline.sampling_fields import SamplingFields
from qwen_stream.types import SEED_MAX, SEED_MIN

Role = Literal["system", "developer", "user", "assistant", "tool"]


class _Request(StrictBody):
    pass


class FunctionCallIn(_Request):
    name: str
    arguments: str | dict[str, Any] = "{}"  # OpenAI sends JSON text; an object is accepted too


class ToolCallIn(_Request):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCallIn


class ChatMessage(_Request):
    # What the openai SDK echoes back when an earlier answer's message object is sent again.
    HARMLESS: ClassVar[Mapping[str, str]] = {"refusal": "an earlier answer's refusal, echoed back with its message",
                "annotations": "an earlier answer's URL citations, echoed back with its message",
                "audio": "an earlier answer's audio reference, echoed back: its text is in content"}
    REFUSED: ClassVar[Mapping[str, Refused]] = {"function_call": Refused("the legacy function_call is not supported: send tool_calls")}

    role: Role
    # Content parts other than text (image_url, input_audio, file) change what a request means and this server
    # reads text only, so they are refused by name instead of dropped.
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None  # an assistant turn that called tools
    tool_call_id: str | None = None  # a tool turn: which call it answers
    reasoning_content: str | None = None

    @model_validator(mode="after")
    def _check(self) -> ChatMessage:
        if isinstance(self.content, list):
            for k, part in enumerate(self.content):
                kind = part.get("type")
                if kind != "text":
                    raise ValueError(f"content[{k}] is a {kind!r} part: this model reads text only, so only "
                                     f"'text' content parts are supported")
                if not isinstance(part.get("text"), str):
                    raise ValueError(f"content[{k}].text must be a string")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a 'tool' message needs tool_call_id: the id of the tool call it answers")
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only assistant messages carry tool_calls")
        return self

    def text(self) -> str:
        """The content as one string; list content (``[{"type": "text", ...}]``) is joined."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(str(part["text"]) for part in self.content)

    def as_dict(self) -> dict[str, Any]:
        # "developer" is the newer OpenAI name for the system role.
        role = "system" if self.role == "developer" else self.role
        message: dict[str, Any] = {"role": role, "content": self.text()}
        if self.tool_calls:
            message["tool_calls"] = [call.model_dump(exclude_none=True) for call in self.tool_calls]
        if self.tool_call_id is not None:
            message["tool_call_id"] = self.tool_call_id
        if self.role == "tool" and self.name is not None:
            message["name"] = self.name
        if self.reasoning_content is not None:
            message["reasoning_content"] = self.reasoning_content
        return message


class StreamOptions(_Request):
    HARMLESS: ClassVar[Mapping[str, str]] = {"include_obfuscation": "padding against length side channels: none is added here",
                "continuous_usage_stats": "vLLM's usage on every chunk: usage comes once, at the end"}

    include_usage: bool = False


class _SamplingFields(_Request):
    """Fields shared by chat and text completions."""

    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    logit_bias: dict[str, float] | None = None  # token id (as a string, as OpenAI sends it) -> bias in [-100, 100]
    seed: int | None = Field(default=None, ge=SEED_MIN, le=SEED_MAX)  # int64, as OpenAI
    stop: str | list[str] | None = None
    n: int = Field(default=1, ge=1, le=16)
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    ignore_eos: bool = False  # vLLM's extension: benchmarks use it to force exact lengths
    stop_token_ids: list[int] | None = None  # vLLM's extension: more token ids that end the answer
    # The answer's format, in any of the ways OpenAI, llama-server and vLLM clients ask for one (at most one per
    # request): {"type": "json_object" | "json_schema", ...} (llama-server: with "schema" beside the type), a bare
    # JSON schema, GBNF text, vLLM's structured_outputs {json | regex | choice | grammar} and guided_* fields. Each
    # is compiled into a grammar by the input side; one that does not compile is a 400 naming its field.
    response_format: dict[str, Any] | None = None
    json_schema: dict[str, Any] | bool | None = None
    grammar: str | None = None
    structured_outputs: dict[str, Any] | None = None
    guided_json: dict[str, Any] | str | None = None
    guided_regex: str | None = None
    guided_choice: list[str] | None = None
    guided_grammar: str | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    def sampling_fields(self, token_limit: int | None, num_logprobs: int | None) -> SamplingFields:
        return SamplingFields(
            max_tokens=token_limit, temperature=self.temperature, top_p=self.top_p, top_k=self.top_k,
            min_p=self.min_p, seed=self.seed, stop=self.stop, presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty, repetition_penalty=self.repetition_penalty,
            logprobs=num_logprobs, logit_bias=self.logit_bias, ignore_eos=self.ignore_eos, output=self.output(),
            stop_token_ids=tuple(self.stop_token_ids or ()))

    def output(self) -> OutputFormat | None:
        """The one output format the request asks for (two are a 400)."""
        guided = {"guided_json": self.guided_json, "guided_regex": self.guided_regex,
                  "guided_choice": self.guided_choice, "guided_grammar": self.guided_grammar}
        return one_format([
            response_format(self.response_format),
            None if self.json_schema is None else OutputFormat.json_schema(self.json_schema),
            OutputFormat.grammar(self.grammar) if self.grammar else None,  # llama.cpp's "": none
            structured_outputs(self.structured_outputs), guided_fields(guided)])


# Sent by OpenAI, llama-server and vLLM clients; none changes what the answer says.
_HARMLESS = {
    "store": "OpenAI's stored completions (its dashboard): this server keeps none",
    "metadata": "labels for OpenAI's stored completions",
    "service_tier": "OpenAI's billing tier: one tier here",
    "safety_identifier": "an end-user id for OpenAI's abuse detection",
    "prompt_cache_key": "a cache-routing hint: prefix reuse here is automatic",
    "prompt_cache_retention": "how long OpenAI keeps a prompt cache: prefix reuse here is automatic",
    "cache_prompt": "llama-server's prefix reuse switch: reuse here is always on and leaves the answer as it is",
    "id_slot": "llama-server's slot choice: slots here are chosen by cached prefix, the answer is the same",
    "priority": "vLLM's scheduling priority: it orders requests, not what they say",
    "request_id": "vLLM's request id: answers carry their own",
    "guided_decoding_backend": "vLLM's choice of grammar library: xgrammar is the one here",
    "guided_whitespace_pattern": "vLLM's whitespace inside JSON: the JSON grammar here fixes it, the values are the same",
}
# Would change the answer, and are not done here: refused by name (400) unless at the value that changes nothing.
_REFUSED = {
    "prediction": Refused("predicted outputs are not supported"),
    "audio": Refused("audio output is not supported: this model writes text only"),
    "functions": Refused("the legacy `functions` field is not supported: send `tools`"),
    "function_call": Refused("the legacy `function_call` field is not supported: send `tool_choice`"),
    "web_search_options": Refused("web search is not supported"),
    "verbosity": Refused("answer verbosity is not supported (medium is what the model does)", ("medium",)),
    "best_of": Refused("best_of is not supported: ask for n choices", (1,)),
    "use_beam_search": Refused("beam search is not supported", (False,)),
    "min_tokens": Refused("a minimum answer length is not supported", (0,)),
    "include_stop_str_in_output": Refused("the stop string is never part of the answer here", (False,)),
    "skip_special_tokens": Refused("special tokens are always left out of the text here", (True,)),
    "echo": Refused("echo on chat completions is not supported", (False,)),
    "add_special_tokens": Refused("the chat template decides the special tokens here", (False,)),
    "chat_template": Refused("a request's own chat template is not supported: the model's own is used"),
    "documents": Refused("documents for the chat template are not supported"),
    "mirostat": Refused("mirostat sampling is not supported", (0,)),
    "typical_p": Refused("typical sampling is not supported", (1.0,)),
    "n_probs": Refused("n_probs belongs to /completion: send logprobs and top_logprobs", (0,)),
}


class ChatCompletionRequest(_SamplingFields):
    HARMLESS: ClassVar[Mapping[str, str]] = _HARMLESS
    REFUSED: ClassVar[Mapping[str, Refused]] = _REFUSED

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    tools: list[dict[str, Any]] | None = None  # checked by qwen_stream.inputs.tools (400 with the field named)
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    chat_template_kwargs: dict[str, Any] | None = None  # template variables, e.g. {"enable_thinking": false}
    modalities: list[str] | None = None
    # Qwen3's thinking switch: "none" / "minimal" turn it off, any other effort on (the model has no levels).
    reasoning_effort: str | None = None
    # vLLM's: a final assistant message is continued by default (prefill, as llama-server); these choose otherwise.
    continue_final_message: bool | None = None
    add_generation_prompt: bool | None = None

    @model_validator(mode="after")
    def _check(self) -> ChatCompletionRequest:
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs set to true")
        if self.modalities is not None and set(self.modalities) - {"text"}:
            raise ValueError("modalities: only 'text' output is supported")
        return self

    @property
    def chat_options(self) -> dict[str, Any]:
        """The chat options besides sampling (inputs/chat_options.py): tools, tool_choice, ..."""
        thinking = None if self.reasoning_effort is None else self.reasoning_effort not in ("none", "minimal")
        return {"tools": self.tools, "tool_choice": self.tool_choice, "parallel_tool_calls": self.parallel_tool_calls,
                "chat_template_kwargs": self.chat_template_kwargs, "thinking": thinking,
                "continue_final_message": self.continue_final_message,
                "add_generation_prompt": self.add_generation_prompt}

    def sampling(self) -> SamplingFields:
        limit = self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens
        # How many alternatives per token the engine must report (None: no logprobs at all).
        return self.sampling_fields(limit, (self.top_logprobs or 0) if self.logprobs else None)


class CompletionRequest(_SamplingFields):
    HARMLESS: ClassVar[Mapping[str, str]] = _HARMLESS
    REFUSED: ClassVar[Mapping[str, Refused]] = {name: why for name, why in _REFUSED.items() if name != "echo"}

    prompt: str | list[str]
    logprobs: int | None = Field(default=None, ge=0, le=5)
    echo: bool = False
    suffix: str | None = None  # text after the cursor: fill in the middle (server/protocols/openai/fim_completions.py)

    @model_validator(mode="after")
    def _check(self) -> CompletionRequest:
        if isinstance(self.prompt, list) and not self.prompt:
            raise ValueError("prompt must not be an empty list")
        return self

    @property
    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    def sampling(self) -> SamplingFields:
        return self.sampling_fields(self.max_tokens, self.logprobs)


