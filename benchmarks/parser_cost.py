"""What reading reasoning and tool calls out of a streamed answer costs per token (no model: the answer is a
fixed text cut into the real Qwen tokenizer's tokens, fed one token at a time as the engine would). Run:

    python benchmarks/parser_cost.py

Prints microseconds per token for a Qwen3-style answer (a <think> block, prose, a Hermes call with a 100-word
argument) and for a Qwen3-Coder XML call with a 2,000-word parameter, best of 20 runs.
"""

from __future__ import annotations

import time

from qwen_stream.models.qwen_tokenizer import build_qwen_tokenizer
from qwen_stream.output.message import MessageParser, make_tool_parser
from qwen_stream.output.reasoning import ReasoningParser

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "note": {"type": "string"}}}}}]
HERMES = ("<think>\n" + "Let me reason about the weather in Paris and what the user wants. " * 20 + "\n</think>\n\n"
          + "Sure, here is some prose. " * 30 + '\n<tool_call>\n{"name": "get_weather", "arguments": {"city": '
          + '"Paris", "note": "' + "x y " * 100 + '"}}\n</tool_call>')
XML = ("Sure. " * 30 + "\n<tool_call>\n<function=get_weather>\n<parameter=city>\n" + "x y " * 2000
       + "\n</parameter>\n</function>\n</tool_call>")


def per_token_us(parser_name: str, text: str, tokenizer: object, runs: int = 20) -> tuple[int, float]:
    pieces = [tokenizer.decode([i]) for i in tokenizer.encode(text)]  # type: ignore[attr-defined]
    best = float("inf")
    for _ in range(runs):
        parser = MessageParser(reasoning=ReasoningParser(), tools=make_tool_parser(parser_name, TOOLS))
        start = time.perf_counter()
        for piece in pieces:
            parser.push(piece)
        parser.flush()
        best = min(best, time.perf_counter() - start)
        if [c.name for c in parser.calls] != ["get_weather"]:
            raise RuntimeError(f"{parser_name}: the call was not read")
    return len(pieces), best / len(pieces) * 1e6


def main() -> None:
    tokenizer = build_qwen_tokenizer()
    for name, text in (("hermes", HERMES), ("qwen3_coder", XML)):
        tokens, cost = per_token_us(name, text, tokenizer)
        print(f"{name:12s} {tokens:5d} tokens  {cost:5.1f} us per token (best of 20)")


if __name__ == "__main__":
    main()
