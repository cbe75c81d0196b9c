"""Requests in the user's terms to engine requests: the input side of every front end, with no engine in it.

A chat (messages, tools, thinking), a raw prompt (text or ids) or a fill-in-the-middle becomes a list of
``EngineRequest``s (inputs/request.py), one per choice (texts to embed and documents to rank become pooled jobs:
inputs/embed_inputs.py, inputs/rerank_inputs.py): templated, tokenized and folded to fit, with the model's
sampling defaults, the request's overrides, output formats compiled into grammars, a seed per choice
(inputs/choices.py) and the answer's length (inputs/answer_length.py) decided here, once, for the Python API and
every protocol of the server. CPU work (templates, tokenizers, grammar compiles): servers run it off their event
loop. Bad input raises the typed refusals of errors.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from qwen_stream.errors import ContextLengthError, InvalidParameterError, RequestError, UnsupportedTaskError
from qwen_stream.inputs.answer_length import USUAL_LENGTH, AnswerRoom, LengthPolicy, answer_room, longest_answer
from qwen_stream.inputs.chat_options import ChatOptions, parse_plan, tool_format
from qwen_stream.inputs.chat_template import ChatPrompter, PromptEnding, PromptResult, make_messages
from qwen_stream.inputs.choices import choice_params
from qwen_stream.inputs.embed_inputs import EmbedInput, EmbedOptions, EmbedTarget, embedding_job
from qwen_stream.inputs.fim import FimBudget, FimInput, FimPrompter, NoFimError, fim_tokens
from qwen_stream.inputs.grammars import Grammars
from qwen_stream.inputs.output_format import OutputFormat, one_format, response_format
from qwen_stream.inputs.pooled_request import EmbeddingJob, RankingJob
from qwen_stream.inputs.request import EngineRequest, ParsePlan, PromptInfo
from qwen_stream.inputs.rerank_inputs import cosine_job, judge_job
from qwen_stream.models.embedding_style import EmbeddingStyle
from qwen_stream.types import SamplingParams, TokenConstraint

Prompt = str | Sequence[int | str]  # raw text, token ids, or ids and text mixed (llama.cpp's [12, "text", 34])
# The Python API's names for an output format (besides ``output``, an OutputFormat): each becomes one OutputFormat.
_FORMAT_KWARGS = {"response_format": response_format, "json_schema": OutputFormat.json_schema,
                  "grammar": OutputFormat.grammar, "regex": OutputFormat.regex, "choice": OutputFormat.choice}
_FORMATS = ("constraint", "output", *_FORMAT_KWARGS)


class InputProcessor:
    """One model's input side: its tokenizer, chat template, grammars, FIM tokens and sampling defaults."""

    def __init__(self, tokenizer: Any, *, name: str, context_length: int, vocab_size: int,
                 default_params: SamplingParams, eos_token_ids: Sequence[int] = (),
                 default_system: str | None = None, tool_parser: str | None = None,
                 embedding: EmbeddingStyle | None = None, tasks: frozenset[str] = frozenset({"generate", "score"}),
                 embedding_width: int | None = None) -> None:
        self.name = name
        self.tokenizer = tokenizer
        self.context_length = context_length
        self.vocab_size = vocab_size
        self.eos_token_ids = tuple(eos_token_ids)
        # A model's default answer length (e.g. 512) must not by itself leave no room for the prompt.
        half = max(1, context_length // 2)
        self.default_params = default_params.with_(max_new_tokens=half) \
            if default_params.max_new_tokens > half else default_params
        self.prompter = ChatPrompter(tokenizer, default_system=default_system)
        self.grammars = Grammars(tokenizer, vocab_size=vocab_size, stop_token_ids=self.eos_token_ids)
        self.tool_parser = tool_parser  # None: read from the chat template; "hermes" / "qwen3_coder" forces one
        self._max_token_chars: int | None = None  # the longest token's length, for the cheap too-long check
        self._fim: FimPrompter | NoFimError | None = None  # made on first use: see fim_prompter
        self.tasks = tasks  # what its engine serves: "generate", "embed", "score" (engine/pooling.py)
        self.embedding = embedding or EmbeddingStyle()  # how it embeds (models/embedding_style.py)
        self.embedding_width = embedding_width

    # ---- parameters ------------------------------------------------------------------------------------------

    def params(self, params: SamplingParams | None = None, **overrides: Any) -> SamplingParams:
        """Validated parameters: the model's defaults, then ``params``, then keyword overrides (None = keep).

        The answer's format becomes a compiled ``constraint``, given as one of ``output`` (an OutputFormat),
        ``response_format`` (OpenAI's), ``json_schema``, ``regex``, ``choice`` (a list of strings) or ``grammar``
        (GBNF text, as llama.cpp takes it); one that does not compile is a GrammarError naming its field."""
        base = params or self.default_params
        changes = {k: v for k, v in self._constrain(dict(overrides)).items() if v is not None}
        unknown = set(changes) - set(SamplingParams.__dataclass_fields__)
        if unknown:
            raise TypeError(f"unknown sampling parameter(s): {', '.join(sorted(unknown))}")
        chosen = base.with_(**changes) if changes else base
        if any(token_id >= self.vocab_size for token_id, _ in chosen.logit_bias):
            raise InvalidParameterError("logit_bias", f"logit_bias names token ids past this model's vocabulary "
                                                      f"of {self.vocab_size}")
        return chosen

    def _constrain(self, overrides: dict[str, Any]) -> dict[str, Any]:
        """The one place an output format is compiled, whichever name it came by."""
        formats = [overrides.pop("output", None)]
        for name, make in _FORMAT_KWARGS.items():
            value = overrides.pop(name, None)
            formats.append(None if value is None else make(value, name))  # type: ignore[operator]
        output = one_format(formats)
        if output is not None:
            if overrides.get("constraint") is not None:
                raise InvalidParameterError(output.field, f"give constraint or {output.field}, not both")
            overrides["constraint"] = self.grammars.compile(output)
        return overrides

    @property
    def longest_answer(self) -> int:
        """The most tokens any answer of this model can take (a length picker's top)."""
        return longest_answer(self.context_length)

    # ---- the three kinds of request --------------------------------------------------------------------------

    def chat(self, messages: Sequence[Any], *, params: SamplingParams | None = None, n: int = 1,
             policy: LengthPolicy = USUAL_LENGTH, **overrides: Any) -> list[EngineRequest]:
        """A conversation (OpenAI-style messages or (query, response) pairs) answered ``n`` times.

        ``overrides``: sampling fields, ``response_format`` / ``json_schema``, and the chat options ``tools``,
        ``tool_choice``, ``parallel_tool_calls``, ``thinking``, ``chat_template_kwargs``."""
        self._require_generation()
        options = ChatOptions.take(overrides)
        if options.tools.active:
            self.prompter.require_tools()
            tool_format(self.prompter.template_text, self.tool_parser)  # fail before any work when unknown
        if options.tools.must_call:
            if any(overrides.get(k) is not None for k in _FORMATS):
                raise ValueError("tool_choice that forces a call cannot be combined with response_format")
            overrides["constraint"] = self._tool_constraint(options)
        room, chosen = self._room(params, overrides, policy)
        turns = make_messages(None, messages)
        ending = options.ending(turns[-1]["role"])
        if not any(turn["role"] == "user" for turn in turns) or turns[-1]["role"] == "system":
            raise ValueError("nothing to answer: give a query, or messages with a user message (a final assistant "
                             "message continues the answer to it)")
        self._check_chars(str(turns[-1].get("content") or ""), "the last message")
        prompt = self._fold(turns, options, room, ending, policy.fold_history)
        plan = parse_plan(self.prompter.template_text, prompt.text, options.tools, self.tool_parser)
        chosen = chosen.with_(max_new_tokens=room.for_prompt(len(prompt.ids), self.context_length))
        return self._choices([prompt.ids], chosen, n, plan, [PromptInfo(len(prompt.ids), prompt.dropped_turns)])

    def completion(self, prompts: Sequence[Prompt], *, params: SamplingParams | None = None, n: int = 1,
                   policy: LengthPolicy = USUAL_LENGTH, **overrides: Any) -> list[EngineRequest]:
        """Raw prompts (text, or token ids), continued as they are (no template), each answered ``n`` times."""
        self._require_generation()
        room, chosen = self._room(params, overrides, policy)
        ids = [self._prompt_ids(prompt) for prompt in prompts]
        for prompt_ids in ids:
            self._check_fits(len(prompt_ids), room)
        return self._choices(ids, chosen, n, ParsePlan(), [PromptInfo(len(i)) for i in ids],
                             lengths=[room.for_prompt(len(i), self.context_length) for i in ids])

    def fim(self, pieces: Sequence[FimInput], *, params: SamplingParams | None = None, n: int = 1,
            policy: LengthPolicy = USUAL_LENGTH, **overrides: Any) -> list[EngineRequest]:
        """Fill-in-the-middle: each piece's gap filled ``n`` times, on the model's FIM tokens, the answer ending
        at them too. The file fills the window, so an answer without a length gets the usual one, not the rest."""
        self._require_generation()
        room, chosen = self._room(params, overrides, policy.without_rest_of_window())
        budget = FimBudget(total=self.context_length - room.reserve)
        if budget.total < 3:
            raise ContextLengthError(f"max tokens {room.reserve} leave no room for a prompt in the context window "
                                     f"of {self.context_length}", window=self.context_length)
        prompter = self.fim_prompter()
        built = [piece.build(prompter, budget) for piece in pieces]
        stops = tuple(dict.fromkeys([*chosen.stop_token_ids, *prompter.tokens.stop_ids]))
        chosen = chosen.with_(max_new_tokens=room.limit, stop_token_ids=stops)
        return self._choices([p.ids for p in built], chosen, n, ParsePlan(),
                             [PromptInfo(len(p.ids), truncated=p.truncated) for p in built])

    def count_chat_tokens(self, messages: Sequence[Any], **options: Any) -> int:
        """Tokens of the prompt the conversation makes (tools and template options included), whole: no turn
        folded away (Anthropic's count_tokens)."""
        return self.chat_prompt(messages, **options).num_tokens

    def chat_prompt(self, messages: Sequence[Any], **options: Any) -> PromptResult:
        """The prompt a conversation makes, whole (no turn folded away), ended as a chat request would end it:
        what /tokenize and llama.cpp's /apply-template show."""
        chat = ChatOptions.take(dict(options))
        turns = make_messages(None, messages)
        return self.prompter.build(turns, max_prompt_tokens=2**62, tools=chat.shown_tools,
                                   template_kwargs=chat.template_kwargs or None,
                                   ending=chat.ending(turns[-1]["role"]))

    # ---- the model's other outputs: embeddings and rankings -----------------------------------------------------

    def embed(self, inputs: EmbedInput | Sequence[EmbedInput], **options: Any) -> EmbeddingJob:
        """Texts (or token ids) to embed, one request each; ``options``: EmbedOptions' fields (``input_type``,
        ``truncate``, ``dimensions``, ``pooling``, ``normalize``, ``prompt``)."""
        if "embed" not in self.tasks:
            raise UnsupportedTaskError(f"the model `{self.name}` cannot make embeddings on this backend",
                                       code="embeddings_unsupported")
        return embedding_job(self._embed_target, inputs, EmbedOptions(**options))

    def rerank(self, query: str, documents: Sequence[str], *, top_n: int | None = None,
               instruction: str | None = None) -> RankingJob:
        """Documents to rank against ``query``, best first: by cosine of embeddings for an embedding model, else
        by a chat model's yes/no judgement (Qwen3-Reranker's formula; inputs/rerank_inputs.py)."""
        if isinstance(documents, str) or not isinstance(documents, Sequence):
            raise InvalidParameterError("documents", "documents must be a list of strings")
        return self.score([(query, doc) for doc in documents], top_n=top_n, instruction=instruction)

    def score(self, pairs: Sequence[tuple[str, str]], *, top_n: int | None = None, instruction: str | None = None,
              sort: bool = True) -> RankingJob:
        """(query, document) pairs scored as ``rerank`` does; ``sort=False`` keeps them in pair order."""
        if "embed" in self.tasks and (self.embedding.declared or "score" not in self.tasks):
            return cosine_job(self._embed_target, pairs, top_n=top_n, sort=sort)
        if "score" not in self.tasks:
            raise UnsupportedTaskError(f"the model `{self.name}` cannot rank documents on this backend",
                                       code="rerank_unsupported")
        from qwen_stream.output.message import template_thinks

        return judge_job(self.tokenizer, pairs, window=self.context_length, top_n=top_n, sort=sort,
                         instruction=instruction, thinks=template_thinks(self.prompter.template_text))

    @property
    def _embed_target(self) -> EmbedTarget:
        return EmbedTarget(self.tokenizer, self.embedding, self.context_length, self.vocab_size, self.embedding_width)

    def _require_generation(self) -> None:
        if "generate" not in self.tasks:
            raise UnsupportedTaskError(f"the model `{self.name}` is an embedding model: it does not generate text "
                                       "(it serves embeddings and rerank)", code="model_not_generative")

    # ---- fill-in-the-middle ----------------------------------------------------------------------------------

    @property
    def supports_fim(self) -> bool:
        """Whether the model has FIM tokens (a few vocabulary look-ups)."""
        return fim_tokens(self.tokenizer) is not None

    def fim_prompter(self) -> FimPrompter:
        """The model's FIM prompt builder, made on first use (it copies the tokenizer's backend); NoFimError when
        the model has no FIM tokens. Blocking: servers call it off the event loop."""
        if self._fim is None:
            try:
                self._fim = FimPrompter(self.tokenizer, self.name)
            except NoFimError as exc:
                self._fim = exc
        if isinstance(self._fim, NoFimError):
            raise self._fim
        return self._fim

    # ---- the rules, once -------------------------------------------------------------------------------------

    def _room(self, params: SamplingParams | None, overrides: dict[str, Any],
              policy: LengthPolicy) -> tuple[AnswerRoom, SamplingParams]:
        """The answer's room (inputs/answer_length.py) and the parameters it goes with."""
        requested = overrides.get("max_new_tokens")
        if requested is None and params is not None:
            requested = params.max_new_tokens  # parameters given whole say their own length
        chosen = self.params(params, **overrides)  # validates max_new_tokens among the rest
        room = answer_room(None if requested is None else chosen.max_new_tokens, policy,
                           window=self.context_length, default=self.default_params.max_new_tokens)
        if room.reserve >= self.context_length:
            raise ContextLengthError(f"max_new_tokens={room.reserve} does not fit the context window of "
                                     f"{self.context_length} tokens", window=self.context_length,
                                     param="max_tokens")
        return room, chosen

    def _fold(self, turns: list[dict[str, Any]], options: ChatOptions, room: AnswerRoom, ending: PromptEnding,
              fold: bool) -> PromptResult:
        """Template the conversation, dropping its oldest turns to leave the answer its room; with a flexible room
        a last message that alone leaves less may take the window but one token. Without ``fold`` the whole
        conversation must fit (the window less the room the answer requires), or it is refused with its size."""
        build: Callable[[int], PromptResult] = lambda limit: self.prompter.build(  # noqa: E731
            turns, max_prompt_tokens=limit, tools=options.shown_tools, template_kwargs=options.template_kwargs,
            fold=fold, ending=ending)
        if not fold:
            try:
                return build(self.context_length - room.required)
            except ContextLengthError as exc:
                raise self._too_long(exc.prompt_tokens, room, at_least=exc.at_least) from None
        try:
            return build(self.context_length - room.reserve)
        except ContextLengthError:
            if not room.flexible:
                raise
            return build(self.context_length - room.required)

    def _check_fits(self, prompt_tokens: int, room: AnswerRoom) -> None:
        if prompt_tokens > self.context_length - room.required:
            raise self._too_long(prompt_tokens, room)

    def _too_long(self, prompt_tokens: int | None, room: AnswerRoom, at_least: bool = False) -> ContextLengthError:
        """The refusal of a prompt that does not fit, with its size and the window's (Anthropic's wording first:
        clients read "prompt is too long: N tokens > M maximum" to shorten and retry)."""
        limit = self.context_length - room.required
        answer = "" if room.flexible else f", less max_tokens={room.reserve} for the answer"
        size = f"at least {prompt_tokens}" if at_least else str(prompt_tokens)
        return ContextLengthError(f"prompt is too long: {size} tokens > {limit} maximum (this model's "
                                  f"context window is {self.context_length} tokens{answer}); nothing was dropped: "
                                  f"shorten the prompt", window=self.context_length, prompt_tokens=prompt_tokens,
                                  at_least=at_least)

    def _prompt_ids(self, prompt: Prompt) -> list[int]:
        pieces = [prompt] if isinstance(prompt, str) else list(prompt)
        ids: list[int] = []
        for piece in pieces:
            if isinstance(piece, str):
                self._check_chars(piece, "the prompt")
                ids += self.tokenizer.encode(piece, add_special_tokens=False)
            elif isinstance(piece, int) and not isinstance(piece, bool):
                ids.append(piece)
            else:
                raise TypeError("prompt must be a string, a list of token ids, or ids and strings mixed")
        if any(not 0 <= i < self.vocab_size for i in ids):
            raise InvalidParameterError("prompt", f"the prompt holds token ids outside this model's vocabulary of "
                                                  f"{self.vocab_size}")
        if not ids:
            raise RequestError("the prompt is empty", param="prompt")
        return ids

    def _check_chars(self, text: str, what: str) -> None:
        """Refuse text too long for the window before tokenizing it: no token covers more characters than the
        longest token's bytes, so past (window x that) characters it cannot fit, whatever its tokens."""
        if self._max_token_chars is None:
            from qwen_stream.output.detokenizer import token_bytes_table

            self._max_token_chars = max(1, max(len(b) for b in token_bytes_table(self.tokenizer).with_special))
        limit = self.context_length * self._max_token_chars
        if len(text) > limit:
            raise ContextLengthError(f"{what} is too long for the context window: {len(text)} characters, and "
                                     f"{self.context_length} tokens hold at most {limit}", window=self.context_length)

    def _tool_constraint(self, options: ChatOptions) -> TokenConstraint:
        """The grammar that makes ``tool_choice`` "required" or a named function a fact, not a hope: the model
        can only write calls (in its own format) to the given functions with arguments valid for them."""
        tools = options.tools
        choice: Any = {"type": "function", "function": {"name": tools.choice}} if tools.forced_name else tools.choice
        return self.grammars.tool_calls(list(tools.tools), choice, parallel_tool_calls=tools.parallel,
                                        call_format=tool_format(self.prompter.template_text, self.tool_parser),
                                        reasoning=options.thinks(self.prompter.template_text))

    @staticmethod
    def _choices(prompts: list[list[int]], params: SamplingParams, n: int, plan: ParsePlan, infos: list[PromptInfo],
                 lengths: list[int] | None = None) -> list[EngineRequest]:
        """``n`` engine requests per prompt, choice i with seed + i, the prompt counted once in usage."""
        choices = choice_params(params, n)
        requests = []
        for index, (ids, info) in enumerate(zip(prompts, infos, strict=True)):
            for i, chosen in enumerate(choices):
                if lengths is not None:
                    chosen = chosen.with_(max_new_tokens=lengths[index])
                requests.append(EngineRequest(ids, chosen, info, plan, index, counts_prompt=i == 0))
        return requests
