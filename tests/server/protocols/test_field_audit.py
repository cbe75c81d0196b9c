"""Unknown or unhonoured means 400, for every request body of every protocol.

Every field a body declares is listed below as used (with the test file that shows its effect), refused by name
(with a value that would change the answer), or accepted and harmless (with why): a new field that is none of
these fails ``test_every_body_field_is_audited``. Fields a body does not declare are refused by name, except the
ones it lists as HARMLESS or REFUSED at a neutral value (server/pipeline/bodies.py): shown on a live server for
every route, nested bodies included."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from qwen_stream.server.pipeline.bodies import StrictBody
from qwen_stream.server.pipeline.sampling_fields import SamplingFields

TESTS = Path(__file__).resolve().parents[2]
HERE = "server/protocols/test_field_audit.py"  # the sampling-field mappings below
FORMATS = "server/protocols/test_output_formats_http.py"
PREFILL = "server/protocols/test_prefill.py"
LLAMA = "server/protocols/llamacpp/test_llamacpp_api.py"
CHAT, RESP, ANTH, OLLAMA = ("server/protocols/openai/test_chat.py", "server/protocols/responses/test_responses.py", "server/protocols/anthropic/test_messages.py",
                            "server/protocols/ollama/test_ollama.py")
EMBED, OLLAMA_EMBED = ("server/protocols/openai/test_embeddings_openai.py",
                       "server/protocols/ollama/test_embed_ollama.py")
LLAMA_EMBED, RERANK = ("server/protocols/llamacpp/test_embedding_llamacpp.py",
                       "server/protocols/rerank/test_rerank_routes.py")
TOOLS, INFILL = "server/protocols/openai/test_tools.py", "server/protocols/infill/test_infill.py"


@dataclass
class Audit:
    used: dict[str, str] = field(default_factory=dict)  # field -> the test file showing its effect
    refused: dict[str, Any] = field(default_factory=dict)  # field -> a value that is refused by name
    harmless: dict[str, str] = field(default_factory=dict)  # field -> why leaving it unread changes nothing


def _used(where: str, *names: str) -> dict[str, str]:
    return dict.fromkeys(names, where)


_OPENAI_SAMPLING = {**_used(HERE, "max_tokens", "temperature", "top_p", "top_k", "min_p", "seed", "stop",
                            "presence_penalty", "frequency_penalty", "repetition_penalty", "ignore_eos",
                            "stop_token_ids", "logit_bias"),
                    **_used(FORMATS, "response_format", "json_schema", "grammar", "structured_outputs", "guided_json",
                            "guided_regex", "guided_choice", "guided_grammar"),
                    **_used(CHAT, "model", "n", "stream", "stream_options")}
_USER = {"user": "an end-user id for OpenAI's abuse detection"}
_LLAMA_SAMPLING = {**_used(HERE, "n_predict", "temperature", "top_k", "top_p", "min_p", "repeat_penalty",
                           "repeat_last_n", "presence_penalty", "frequency_penalty", "seed", "stop", "ignore_eos",
                           "logit_bias", "samplers", "n_probs", "n_cache_reuse"),
                   **_used(LLAMA, "model", "stream", "return_tokens", "response_fields"),
                   **_used(FORMATS, "grammar", "json_schema"), **_used(INFILL, "n_indent", "t_max_predict_ms")}
_ANTHROPIC_PROMPT = {**_used(ANTH, "model", "messages", "system", "output_config"), "thinking": HERE,
                     **_used("server/protocols/test_tool_round_trips.py", "tools", "tool_choice"), "output_format": FORMATS}
_ITEM = _used(RESP, "type")

AUDIT: dict[str, Audit] = {
    "openai.requests.ChatCompletionRequest": Audit(
        used={**_OPENAI_SAMPLING, **_used(CHAT, "messages", "logprobs", "top_logprobs"),
              "max_completion_tokens": "server/protocols/openai/test_protocol.py",
              **_used(TOOLS, "tools", "tool_choice", "parallel_tool_calls", "chat_template_kwargs"),
              **_used(PREFILL, "continue_final_message", "add_generation_prompt"), "reasoning_effort": HERE},
        refused={"modalities": ["audio"]}, harmless=_USER),
    "openai.requests.CompletionRequest": Audit(
        used={**_OPENAI_SAMPLING, **_used(CHAT, "prompt", "logprobs", "echo"),
              "suffix": "server/protocols/infill/test_fim_editors.py"},
        harmless=_USER),
    "openai.requests.ChatMessage": Audit(
        used={**_used(CHAT, "role", "content"), **_used(TOOLS, "tool_calls", "tool_call_id", "name"),
              "reasoning_content": "server/protocols/openai/test_chat_chunks.py"}),
    "openai.requests.ToolCallIn": Audit(used=_used(TOOLS, "id", "type", "function")),
    "openai.requests.FunctionCallIn": Audit(used=_used(TOOLS, "name", "arguments")),
    "openai.requests.StreamOptions": Audit(used=_used(CHAT, "include_usage")),
    "responses.protocol.ResponsesRequest": Audit(
        used={**_used(HERE, "max_output_tokens", "temperature", "top_p", "seed", "top_k", "stop"),
              **_used(RESP, "model", "input", "instructions", "stream", "store", "previous_response_id", "text"),
              **_used("server/protocols/test_tool_round_trips.py", "tools", "tool_choice", "parallel_tool_calls"),
              "reasoning": HERE, "truncation": "server/protocols/test_context_overflow.py"},
        refused={"background": True, "conversation": "conv_1", "prompt": {"id": "pmpt_1"}},
        harmless={**_USER, "metadata": "labels echoed back in the response: the model never sees them"}),
    "responses.protocol.TextConfig": Audit(used=_used(RESP, "format")),
    "responses.protocol.TextFormat": Audit(
        used=_used(RESP, "type", "schema"),
        harmless={"name": "the schema's name, for OpenAI's logs", "strict": "the grammar always holds strictly"}),
    "responses.protocol.ReasoningConfig": Audit(
        used={"effort": HERE}, harmless={"summary": "a summary of the reasoning: the reasoning is given whole"}),
    "responses.protocol._MessageItem": Audit(used={**_ITEM, **_used(RESP, "role", "content")}),
    "responses.protocol._FunctionCallItem": Audit(
        used={**_ITEM, **_used("server/protocols/test_tool_round_trips.py", "call_id", "name", "arguments")}),
    "responses.protocol._FunctionCallOutputItem": Audit(
        used={**_ITEM, **_used("server/protocols/test_tool_round_trips.py", "call_id", "output")}),
    "anthropic.protocol.MessagesRequest": Audit(
        used={**_ANTHROPIC_PROMPT, **_used(HERE, "max_tokens", "stop_sequences", "temperature", "top_p", "top_k",
                                           "seed"), "stream": ANTH},
        harmless={"metadata": "a user id for Anthropic's abuse detection"}),
    "anthropic.protocol.CountTokensRequest": Audit(used=_ANTHROPIC_PROMPT),
    "anthropic.protocol._Message": Audit(used=_used(ANTH, "role", "content")),
    "anthropic.protocol._ToolUse": Audit(used={**_used("server/protocols/test_tool_round_trips.py", "name", "input"), "id": HERE}),
    "anthropic.protocol._ToolResult": Audit(
        used={**_used("server/protocols/test_tool_round_trips.py", "tool_use_id", "content"), "is_error": HERE}),
    "ollama.protocol.ChatRequest": Audit(
        used={**_used(OLLAMA, "model", "stream", "options", "format", "messages"), "think": HERE,
              "keep_alive": "server/pool/test_model_pool.py", "tools": "server/protocols/test_tool_round_trips.py"}),
    "ollama.protocol.GenerateRequest": Audit(
        used={**_used(OLLAMA, "model", "stream", "options", "format", "prompt", "system", "raw"), "think": HERE,
              "keep_alive": "server/pool/test_model_pool.py", "suffix": "server/protocols/infill/test_fim_editors.py"},
        refused={"template": "{{ .Prompt }}", "context": [1, 2], "images": ["aGk="]}),
    "ollama.protocol.Options": Audit(
        used={**_used(HERE, "temperature", "top_p", "top_k", "min_p", "seed", "stop", "repeat_penalty",
                      "repeat_last_n", "presence_penalty", "frequency_penalty"), "num_predict": OLLAMA}),
    "ollama.protocol.ModelRequest": Audit(used={"model": OLLAMA, "name": HERE}),
    "ollama.protocol._Message": Audit(
        used={**_used(OLLAMA, "role", "content"), **_used("server/protocols/test_tool_round_trips.py", "tool_calls",
                                                          "tool_name")},
        refused={"images": ["aGk="]},
        harmless={"thinking": "an earlier turn's thinking: not sent back to the model, as Qwen3's template does"}),
    "ollama.protocol._ToolCall": Audit(used=_used("server/protocols/test_tool_round_trips.py", "function")),
    "ollama.protocol._Function": Audit(used=_used("server/protocols/test_tool_round_trips.py", "name", "arguments")),
    "llamacpp.protocol.CompletionRequest": Audit(used={**_LLAMA_SAMPLING, "prompt": LLAMA}),
    "infill.protocol.InfillRequest": Audit(
        used={**_LLAMA_SAMPLING, **_used(INFILL, "input_prefix", "input_suffix", "input_extra", "prompt")}),
    "infill.protocol.InputChunk": Audit(used=_used("server/protocols/infill/test_fim_editors.py", "text", "filename")),
    "llamacpp.routes.ApplyTemplateRequest": Audit(
        used={**_used(LLAMA, "model", "messages"), **_used(PREFILL, "add_generation_prompt", "continue_final_message"),
              **_used(TOOLS, "tools", "chat_template_kwargs")}),
    "tokenize.TokenizeRequest": Audit(
        used={**_used(LLAMA, "model", "prompt", "content", "messages", "parse_special", "with_pieces", "add_special",
                      "return_token_strs", "add_special_tokens"),
              **_used(PREFILL, "add_generation_prompt", "continue_final_message"),
              **_used(TOOLS, "tools", "chat_template_kwargs")}),
    "tokenize.DetokenizeRequest": Audit(used=_used(LLAMA, "model", "tokens")),
    "openai.embeddings.EmbeddingRequest": Audit(
        used=_used(EMBED, "input", "model", "encoding_format", "dimensions", "input_type", "truncate")),
    "ollama.embed.EmbedRequest": Audit(
        used=_used(OLLAMA_EMBED, "model", "input", "truncate", "dimensions", "options", "keep_alive")),
    "ollama.embed.EmbeddingsRequest": Audit(used=_used(OLLAMA_EMBED, "model", "prompt", "options", "keep_alive")),
    "llamacpp.embeddings.EmbeddingBody": Audit(
        used=_used(LLAMA_EMBED, "content", "input", "embd_normalize", "model")),
    "rerank.protocol.RerankRequest": Audit(
        used=_used(RERANK, "model", "query", "documents", "top_n", "return_documents", "instruction")),
    "rerank.protocol.ScoreRequest": Audit(used=_used(RERANK, "model", "text_1", "text_2", "instruction")),
}


def bodies() -> Iterator[type[StrictBody]]:
    """Every request body (and body part) the server parses: the leaves of StrictBody's family tree."""
    import qwen_stream.server.app  # noqa: F401  (imports every protocol)

    pending = list(StrictBody.__subclasses__())
    while pending:
        model = pending.pop()
        pending += model.__subclasses__()
        if not model.__subclasses__():
            yield model


def name(model: type[StrictBody]) -> str:
    return f"{model.__module__.removeprefix('qwen_stream.server.protocols.')}.{model.__name__}"


def keys(model: type[StrictBody]) -> set[str]:
    return {info.alias or key for key, info in model.model_fields.items()}


def test_every_body_field_is_audited() -> None:
    found = {name(model): model for model in bodies()}
    assert set(found) == set(AUDIT), "a body without an audit (or an audit without its body)"
    for label, model in found.items():
        audit = AUDIT[label]
        listed = [*audit.used, *audit.refused, *audit.harmless]
        assert len(listed) == len(set(listed)), f"{label}: a field listed twice"
        assert set(listed) == keys(model), f"{label}: unaudited {keys(model) - set(listed)}, gone {set(listed) - keys(model)}"
        assert all(why.strip() for why in (*audit.harmless.values(), *model.HARMLESS.values()))
        assert all(refusal.why.strip() for refusal in model.REFUSED.values())
        assert not set(model.HARMLESS) & set(model.REFUSED) & keys(model)


def test_each_used_field_names_a_test_that_exercises_it() -> None:
    for label, audit in AUDIT.items():
        for key, where in audit.used.items():
            text = (TESTS / where).read_text()
            assert re.search(rf"[\"']{key}[\"']|\b{key}=", text), f"{label}.{key}: {where} does not use it"


# ---- on a live server: unknown and refused fields are 400s naming them, harmless ones pass -----------------------

USER = [{"role": "user", "content": "hi"}]
ROUTES: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {"messages": USER, "max_tokens": 1},
    "/v1/completions": {"prompt": "hi", "max_tokens": 1},
    "/v1/responses": {"input": "hi", "max_output_tokens": 1},
    "/v1/messages": {"model": "m", "max_tokens": 1, "messages": USER},
    "/v1/messages/count_tokens": {"model": "m", "messages": USER},
    "/api/chat": {"model": "m", "messages": USER, "stream": False, "options": {"num_predict": 1}},
    "/api/generate": {"model": "m", "prompt": "hi", "stream": False, "options": {"num_predict": 1}},
    "/api/show": {"model": "m"},
    "/completion": {"prompt": "hi", "n_predict": 1},
    "/infill": {"input_prefix": "a", "input_suffix": "b", "n_predict": 1},
    "/apply-template": {"messages": USER},
    "/tokenize": {"content": "hi"},
    "/detokenize": {"tokens": [1]},
    "/v1/embeddings": {"model": "m", "input": "hi"},
    "/api/embed": {"model": "m", "input": "hi"},
    "/api/embeddings": {"model": "m", "prompt": "hi"},
    "/embedding": {"content": "hi"},
    "/v1/rerank": {"model": "m", "query": "hi", "documents": ["hello"]},
    "/score": {"model": "m", "text_1": "hi", "text_2": "hello"},
}
BODY_OF = {"/v1/chat/completions": "openai.requests.ChatCompletionRequest",
           "/v1/completions": "openai.requests.CompletionRequest", "/v1/responses": "responses.protocol.ResponsesRequest",
           "/v1/messages": "anthropic.protocol.MessagesRequest", "/api/chat": "ollama.protocol.ChatRequest",
           "/api/generate": "ollama.protocol.GenerateRequest", "/completion": "llamacpp.protocol.CompletionRequest",
           "/infill": "infill.protocol.InfillRequest"}
NO_FIM = "cannot fill in the middle"  # the tiny model has no FIM tokens: /infill ends there once its fields pass


def message_of(response: httpx.Response) -> str:
    error = response.json()["error"]
    return error if isinstance(error, str) else str(error["message"])


def passed(response: httpx.Response, route: str) -> bool:
    if route == "/infill":
        return response.status_code == 400 and NO_FIM in message_of(response)
    return response.status_code == 200


@pytest.mark.parametrize("route", ROUTES)
def test_an_unknown_field_is_a_400_naming_it(http: httpx.Client, route: str) -> None:
    refused = http.post(route, json={**ROUTES[route], "frobnicate": 1})
    assert refused.status_code == 400 and "frobnicate: unknown field" in message_of(refused), refused.text
    assert passed(http.post(route, json=ROUTES[route]), route)


@pytest.mark.parametrize(("route", "change", "path"), [
    ("/v1/chat/completions", {"messages": [{**USER[0], "frobnicate": 1}]}, "messages.0.frobnicate"),
    ("/v1/chat/completions", {"stream_options": {"frobnicate": 1}, "stream": True}, "stream_options.frobnicate"),
    ("/v1/responses", {"input": [{"role": "user", "content": "hi", "frobnicate": 1}]}, "input[0].frobnicate"),
    ("/v1/responses", {"text": {"format": {"type": "text", "frobnicate": 1}}}, "text.format.frobnicate"),
    ("/v1/messages", {"messages": [{**USER[0], "frobnicate": 1}]}, "messages[0].frobnicate"),
    ("/api/chat", {"options": {"num_predict": 1, "frobnicate": 1}}, "options.frobnicate"),
    ("/api/chat", {"messages": [{**USER[0], "frobnicate": 1}]}, "messages[0].frobnicate"),
    ("/infill", {"input_extra": [{"text": "x", "frobnicate": 1}]}, "input_extra.0.frobnicate"),
    ("/api/embed", {"options": {"frobnicate": 1}}, "options.frobnicate"),
])
def test_an_unknown_field_in_a_nested_body_is_a_400_naming_its_path(http: httpx.Client, route: str,
                                                                    change: dict[str, Any], path: str) -> None:
    refused = http.post(route, json={**ROUTES[route], **change})
    assert refused.status_code == 400 and f"{path}: unknown field" in message_of(refused), refused.text


def refusals() -> Iterator[tuple[str, str, Any]]:
    """(route, field, value) for every field a top-level body refuses: declared ones and listed extras."""
    found = {name(model): model for model in bodies()}
    for route, label in BODY_OF.items():
        for key, value in AUDIT[label].refused.items():
            yield route, key, value
        for key in found[label].REFUSED:
            yield route, key, "not-neutral"


@pytest.mark.parametrize(("route", "key", "value"), list(refusals()))
def test_a_refused_field_is_a_400_naming_it(http: httpx.Client, route: str, key: str, value: Any) -> None:
    refused = http.post(route, json={**ROUTES[route], key: value})
    assert refused.status_code == 400 and key in message_of(refused), refused.text


@pytest.mark.parametrize("route", BODY_OF)
def test_harmless_fields_pass(http: httpx.Client, route: str) -> None:
    model = {name(m): m for m in bodies()}[BODY_OF[route]]
    extras = dict.fromkeys(model.HARMLESS, "x")
    neutral = {key: refusal.neutral[0] for key, refusal in model.REFUSED.items() if refusal.neutral}
    response = http.post(route, json={**ROUTES[route], **extras, **neutral})
    assert passed(response, route), response.text


# ---- what each protocol's sampling fields become -------------------------------------------------------------


def test_each_protocols_sampling_fields_reach_the_neutral_vocabulary() -> None:
    from qwen_stream.server.protocols.anthropic.protocol import MessagesRequest
    from qwen_stream.server.protocols.llamacpp.protocol import CompletionRequest as LlamaCompletion
    from qwen_stream.server.protocols.ollama.protocol import ChatRequest
    from qwen_stream.server.protocols.openai.requests import ChatCompletionRequest
    from qwen_stream.server.protocols.responses.protocol import ResponsesRequest

    openai = ChatCompletionRequest.model_validate({
        "messages": USER, "max_tokens": 7, "temperature": 0.5, "top_p": 0.9, "top_k": 3, "min_p": 0.1, "seed": 4,
        "stop": ["x"], "presence_penalty": 0.1, "frequency_penalty": 0.2, "repetition_penalty": 1.1,
        "ignore_eos": True, "stop_token_ids": [5], "logit_bias": {"6": 1.0}, "reasoning_effort": "none"})
    assert openai.sampling() == SamplingFields(7, 0.5, 0.9, 3, 0.1, 4, ["x"], 0.1, 0.2, 1.1, None, {"6": 1.0}, True,
                                               None, (5,))
    assert openai.chat_options["thinking"] is False  # reasoning_effort "none": Qwen3's thinking off
    anthropic = MessagesRequest.model_validate({"model": "m", "messages": USER, "max_tokens": 7, "temperature": 0.5,
                                                "top_p": 0.9, "top_k": 3, "seed": 4, "stop_sequences": ["x"]})
    assert anthropic.sampling() == SamplingFields(7, 0.5, 0.9, 3, seed=4, stop=["x"])
    responses = ResponsesRequest.model_validate({"input": "hi", "max_output_tokens": 7, "temperature": 0.5,
                                                 "top_p": 0.9, "top_k": 3, "seed": 4, "stop": "x",
                                                 "reasoning": {"effort": "minimal"}})
    assert responses.sampling() == SamplingFields(7, 0.5, 0.9, 3, seed=4, stop="x")
    assert responses.chat_options()["thinking"] is False
    ollama = ChatRequest.model_validate({"model": "m", "options": {
        "num_predict": 7, "temperature": 0.5, "top_p": 0.9, "top_k": 3, "min_p": 0.1, "seed": 4, "stop": ["x"],
        "repeat_penalty": 1.1, "repeat_last_n": -1, "presence_penalty": 0.1, "frequency_penalty": 0.2}})
    assert ollama.sampling() == SamplingFields(7, 0.5, 0.9, 3, 0.1, 4, ["x"], 0.1, 0.2, 1.1)
    assert ChatRequest.model_validate({"model": "m", "options": {"repeat_penalty": 1.3, "repeat_last_n": 0}}) \
        .sampling().repetition_penalty == 1.0  # Ollama's 0: penalties off
    llama = LlamaCompletion.model_validate({
        "prompt": "x", "n_predict": 7, "temperature": 0.5, "top_k": 3, "top_p": 0.9, "min_p": 0.1, "seed": 4,
        "stop": ["x"], "repeat_penalty": 1.1, "repeat_last_n": -1, "presence_penalty": 0.1,
        "frequency_penalty": 0.2, "ignore_eos": True, "n_probs": 2, "logit_bias": [[6, 1.0], [7, False]],
        "samplers": ["top_k", "temperature", "penalties"], "n_cache_reuse": 64})
    assert llama.sampling() == SamplingFields(7, 0.5, 1.0, 3, 0.0, 4, ("x",), 0.1, 0.2, 1.1, 2,
                                              {"6": 1.0, "7": -100.0}, True,  # top_p and min_p: not in samplers
                                              cache_reuse=64)  # this request's cache reuse (test_cache_reuse.py)
    assert llama.sampling().overrides()["cache_reuse"] == 64


def test_a_tool_results_is_error_reaches_the_model(http: httpx.Client) -> None:
    def count(is_error: bool) -> int:
        messages = [{"role": "user", "content": "x"},
                    {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "boom",
                                                  "is_error": is_error}]}]
        body = {"model": "m", "messages": messages}  # the tiny model's template shows no tools, only the turns
        return int(http.post("/v1/messages/count_tokens", json=body).json()["input_tokens"])

    assert count(True) > count(False)  # the result reads "Error: boom"


def test_each_protocols_chat_options_reach_the_input_side(http: httpx.Client) -> None:
    from qwen_stream.server.protocols.anthropic.protocol import MessagesRequest
    from qwen_stream.server.protocols.ollama.protocol import ChatRequest, GenerateRequest

    def anthropic(**fields: Any) -> MessagesRequest:
        return MessagesRequest.model_validate({"model": "m", "max_tokens": 1, "messages": USER, **fields})

    assert anthropic(thinking={"type": "enabled", "budget_tokens": 1024}).chat_options()["thinking"] is True
    assert anthropic(thinking={"type": "disabled"}).chat_options()["thinking"] is False
    use = {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}}
    turns = anthropic(messages=[*USER, {"role": "assistant", "content": [use]}]).chat_messages()
    assert turns[-1]["tool_calls"][0]["id"] == "toolu_1"
    for think, on in ((True, True), ("high", True), (False, False)):
        assert ChatRequest.model_validate({"model": "m", "think": think}).chat_options()["thinking"] is on
        assert GenerateRequest.model_validate({"model": "m", "think": think}).thinking() is on
    assert http.post("/api/show", json={"name": "m"}).json()["model_info"]["context_length"] == 512  # older clients
