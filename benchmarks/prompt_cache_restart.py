"""An agent's first request after a restart: time to first token with the prompt cache on disk (`--prompt-cache-dir`)
against a cold prefill (issue 26: a cached 2.4k-token prefix after a restart should take <= 0.1x the cold TTFT).

The prompt is a coding agent's: a system prompt, tool schemas, a source file the agent read (an earlier turn) and a
question, about ``--prompt-tokens`` tokens in all. Each round, in one process, on a fresh temporary cache directory:

1. cold: a fresh engine on the empty directory answers the prompt (greedy: a request with a seed of its own loads
   only whole prefill chunks computed cold, engine/sched/chunk_grid.py); closing it finishes the save;
2. restart, same prompt: a fresh engine on the same directory answers the very same request (loaded from disk, and
   recalled: no forward; the text must be the cold one's);
3. restart, same prefix: another fresh engine answers the same conversation with another final question (the saved
   prefix is loaded, only the new question is prefilled).

TTFT is the time from the request to its first token, on an engine that has just loaded (model load not counted,
for every row alike). Each round's system prompt carries a fresh nonce, so nothing is shared between rounds.

    python benchmarks/prompt_cache_restart.py --model qwen2.5-coder-1.5b --rounds 3
    python benchmarks/prompt_cache_restart.py --model smollm2-135m --prompt-tokens 400 --rounds 1   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

TOOLS = [
    {"type": "function", "function": {
        "name": name, "description": description,
        "parameters": {"type": "object", "properties": properties, "required": list(properties)}}}
    for name, description, properties in [
        ("read_file", "Read a file of the repository.", {"path": {"type": "string", "description": "relative path"}}),
        ("edit_file", "Replace a unique snippet of a file with new text.",
         {"path": {"type": "string"}, "old": {"type": "string"}, "new": {"type": "string"}}),
        ("run_tests", "Run the test suite, or the tests matching a keyword.",
         {"keyword": {"type": "string", "description": "pytest -k expression"}}),
        ("search", "Search the repository for a regular expression.",
         {"pattern": {"type": "string"}, "glob": {"type": "string"}}),
    ]
]
SYSTEM = ("You are a coding agent (session {nonce}) working in a Python repository. Read before you edit, make the "
          "smallest change that fixes the problem, keep functions short and typed, and run the tests after every "
          "edit. Answer with a tool call when you need to act, else with a short explanation.")
QUESTIONS = ("Why can order_total return a negative amount, and how would you fix it?",
             "Add a docstring to apply_discount that says what each argument means.")


def source_file(functions: int) -> str:
    return "\n".join(
        f"def step_{i}(orders: list[dict[str, float]], rate: float = 0.{i % 9 + 1}) -> float:\n"
        f"    \"\"\"Sum the orders of kind {i} after a discount of `rate`.\"\"\"\n"
        f"    total = sum(o['amount'] * (1 - rate) for o in orders if o.get('kind') == {i})\n"
        f"    return round(total, 2)\n" for i in range(functions))


def conversation(functions: int, nonce: int, question: str, *, inline_tools: bool) -> list[dict[str, str]]:
    """The agent's messages; ``inline_tools``: the tool schemas written into the system prompt as JSON (a model whose
    chat template cannot show ``tools``, such as SmolLM2)."""
    system = SYSTEM.format(nonce=nonce)
    if inline_tools:
        system += "\n\nTools (answer with {\"name\": ..., \"arguments\": ...}):\n" + json.dumps(TOOLS, indent=1)
    return [{"role": "system", "content": system},
            {"role": "user", "content": f"Here is src/shop/orders.py:\n```python\n{source_file(functions)}```"},
            {"role": "assistant", "content": "I have read src/shop/orders.py."},
            {"role": "user", "content": question}]


def tool_options(model: Any) -> dict[str, Any]:
    """``tools=TOOLS`` where the model's chat template shows tools, else nothing (they go into the system prompt)."""
    return {"tools": TOOLS} if model.inputs.prompter.supports_tools else {}


def sized(model: Any, target: int, nonce: int, tools: dict[str, Any]) -> tuple[int, int]:
    """How many functions the file needs for a prompt of about ``target`` tokens, and the prompt's length."""
    functions, tokens = 1, 0
    while True:
        messages = conversation(functions, nonce, QUESTIONS[0], inline_tools=not tools)
        tokens = model.inputs.count_chat_tokens(messages, **tools)
        if tokens >= target or functions > 2000:
            return functions, tokens
        functions += 1


def load(name: str, cache: Path, threads: int | None) -> Any:
    from qwen_stream.api import ChatModel

    return ChatModel.load(name, prompt_cache_dir=str(cache), threads=threads, max_batch_size=2, progress=False)


def ttft(model: Any, messages: list[dict[str, str]], tools: dict[str, Any], max_tokens: int
         ) -> tuple[float, str, int]:
    """(seconds to the first token, the answer's text, prompt tokens served from a cache)."""
    started, first = time.perf_counter(), None
    events = []
    for event in model.stream(messages=messages, temperature=0.0, max_new_tokens=max_tokens, **tools):
        if first is None:
            first = time.perf_counter() - started
        events.append(event)
    last = events[-1]
    return first if first is not None else float("nan"), last.text + str(last.tool_calls), last.num_cached_tokens


def one_round(args: argparse.Namespace, r: int) -> tuple[float, float, float, bool, int]:
    """One round's (cold, restart same prompt, restart same prefix) TTFTs, whether the text matched, bytes saved."""
    with tempfile.TemporaryDirectory(prefix="prompt-cache-") as folder:
        cache = Path(folder)
        model = load(args.model, cache, args.threads)
        tools = tool_options(model)
        functions, tokens = sized(model, args.prompt_tokens, 1000 + r, tools)
        same = conversation(functions, 1000 + r, QUESTIONS[0], inline_tools=not tools)
        other = conversation(functions, 1000 + r, QUESTIONS[1], inline_tools=not tools)
        print(f"round {r + 1}: prompt {tokens} tokens (system, {len(TOOLS)} tools, a {functions}-function file, a "
              f"question)", flush=True)
        cold, cold_text, _ = ttft(model, same, tools, args.max_tokens)
        model.close()  # finishes the save
        saved = sum(p.stat().st_size for p in cache.glob("*/*.qsp"))
        print(f"  cold (empty cache dir):          TTFT {cold:.3f} s; saved {saved / 1e6:.1f} MB "
              f"({saved / max(tokens, 1) / 1e3:.1f} KB a token)", flush=True)
        model = load(args.model, cache, args.threads)
        again, again_text, cached = ttft(model, same, tools, args.max_tokens)
        model.close()
        print(f"  restart, same prompt:            TTFT {again:.3f} s ({again / cold:.3f}x cold), {cached} tokens "
              f"from disk, same text as cold: {again_text == cold_text}", flush=True)
        model = load(args.model, cache, args.threads)
        prefix, _, cached = ttft(model, other, tools, args.max_tokens)
        model.close()
        print(f"  restart, same prefix, new ask:   TTFT {prefix:.3f} s ({prefix / cold:.3f}x cold), {cached} tokens "
              f"from disk", flush=True)
        return cold, again, prefix, again_text == cold_text, saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-coder-1.5b", help="an alias or a .gguf file (llama.cpp runner)")
    parser.add_argument("--prompt-tokens", type=int, default=2400, help="the agent prompt's length (default 2400)")
    parser.add_argument("--max-tokens", type=int, default=8, help="tokens each answer generates (default 8)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="default: one per physical core")
    args = parser.parse_args()
    rounds = [one_round(args, r) for r in range(args.rounds)]
    cold, again, prefix = (statistics.median(row[i] for row in rounds) for i in range(3))
    print(f"\n{args.model}, {args.prompt_tokens}-token agent prompt, median of {args.rounds} round(s):")
    print(f"  TTFT cold {cold:.3f} s; after a restart: same prompt {again:.3f} s ({again / cold:.3f}x), same "
          f"prefix with a new question {prefix:.3f} s ({prefix / cold:.3f}x); goal <= 0.1x")
    print(f"  entry on disk {statistics.median(row[4] for row in rounds) / 1e6:.1f} MB; the restart gave the cold "
          f"text in {sum(row[3] for row in rounds)} of {args.rounds} round(s)")


if __name__ == "__main__":
    main()
