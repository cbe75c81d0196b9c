"""xgrammar against llguidance on our tokenizers: compile time and per-step token-mask cost at N streams.

Each of N streams walks its own valid JSON answer to one schema (different values, so the matchers sit in
different states), one token per step, as a constrained batch would; a step fills every stream's row of one
bitmask and applies it to [N, vocab] float32 logits with the library's own apply function. llguidance is not a
dependency:

    pip install llguidance && python benchmarks/grammar_engines.py --streams 16 --steps 40
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import torch

from qwen_stream.bench.grammar_cost import SCHEMA, sample_answers


def answers(tokenizer: Any, n: int, eos: int) -> list[list[int]]:
    return [[*tokenizer.encode(t, add_special_tokens=False), eos] for t in sample_answers(n)]


class XGrammar:
    name = "xgrammar"

    def __init__(self, tokenizer: Any, vocab: int, eos: int) -> None:
        import xgrammar as xgr

        self.xgr = xgr
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab, stop_token_ids=[eos])
        self.compiler = xgr.GrammarCompiler(info, cache_enabled=False)
        self.batch = xgr.BatchGrammarMatcher()

    def compile(self, schema: str) -> Any:
        return self.compiler.compile_json_schema(schema, any_whitespace=False)

    def matcher(self, compiled: Any) -> Any:
        return self.xgr.GrammarMatcher(compiled)

    def accept(self, matcher: Any, token: int) -> bool:
        return bool(matcher.accept_token(token))

    def fill_loop(self, matchers: list[Any], bitmask: torch.Tensor) -> None:
        for i, m in enumerate(matchers):
            m.fill_next_token_bitmask(bitmask, i)

    def apply(self, logits: torch.Tensor, bitmask: torch.Tensor) -> None:
        self.xgr.apply_token_bitmask_inplace(logits, bitmask)

    def fill_batch(self, matchers: list[Any], bitmask: torch.Tensor) -> None:
        self.batch.batch_fill_next_token_bitmask(matchers, bitmask)


class LLGuidance:
    name = "llguidance"

    def __init__(self, tokenizer: Any, vocab: int, eos: int) -> None:
        import llguidance
        import llguidance.hf
        import llguidance.torch

        self.ll = llguidance
        self.tok = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab, eos_token=eos)
        self.executor = llguidance.LLExecutor()

    def compile(self, schema: str) -> Any:
        grammar = self.ll.LLMatcher.grammar_from_json_schema(
            schema, defaults={"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "})
        self.ll.LLMatcher(self.tok, grammar)  # validates; llguidance compiles lazily, per matcher
        return grammar

    def matcher(self, compiled: Any) -> Any:
        return self.ll.LLMatcher(self.tok, compiled)

    def accept(self, matcher: Any, token: int) -> bool:
        return bool(matcher.consume_token(token))

    def fill_loop(self, matchers: list[Any], bitmask: torch.Tensor) -> None:
        for i, m in enumerate(matchers):
            self.ll.torch.fill_next_token_bitmask(m, bitmask, i)

    def apply(self, logits: torch.Tensor, bitmask: torch.Tensor) -> None:
        self.ll.torch.apply_token_bitmask_inplace(logits, bitmask)

    def fill_batch(self, matchers: list[Any], bitmask: torch.Tensor) -> None:
        self.ll.torch.fill_next_token_bitmask_par(self.executor, [(m, i) for i, m in enumerate(matchers)], bitmask)


def run(engine: Any, tokenizer: Any, vocab: int, eos: int, streams: int, steps: int) -> dict[str, float]:
    schema = json.dumps(SCHEMA)
    started = time.perf_counter()
    compiled = engine.compile(schema)
    compile_ms = 1000 * (time.perf_counter() - started)
    result: dict[str, float] = {"compile_ms": compile_ms}
    for mode in ("loop", "batch"):
        fill = getattr(engine, f"fill_{mode}")
        matchers = [engine.matcher(compiled) for _ in range(streams)]
        paths = answers(tokenizer, streams, eos)
        bitmask = torch.full((streams, (vocab + 31) // 32), -1, dtype=torch.int32)
        fills, applies, rejected = [], [], 0
        for step in range(min(steps, min(len(p) for p in paths))):
            t0 = time.perf_counter()
            fill(matchers, bitmask)
            t1 = time.perf_counter()
            logits = torch.randn(streams, vocab)
            t2 = time.perf_counter()
            engine.apply(logits, bitmask)
            t3 = time.perf_counter()
            fills.append(t1 - t0)
            applies.append(t3 - t2)
            for i, (m, path) in enumerate(zip(matchers, paths, strict=True)):
                if not bool(logits[i, path[step]] > float("-inf")) or not engine.accept(m, path[step]):
                    rejected += 1
        result[f"fill_{mode}_ms"] = 1000 * statistics.median(fills[1:])
        result["apply_ms"] = 1000 * statistics.median(applies[1:])
        result[f"fill_{mode}_min_ms"] = 1000 * min(fills[1:])  # on a busy machine the minimum is the cost itself
        result["apply_min_ms"] = 1000 * min(applies[1:])
        result[f"rejected_{mode}"] = rejected
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    from qwen_stream.models import sources
    from qwen_stream.models.qwen_tokenizer import build_qwen_tokenizer

    smol = sources.load_tokenizer(sources.resolve_source("smollm2-135m", progress=False), progress=False)
    tokenizers = {"smollm2-135m (49k)": (smol, 49152, smol.eos_token_id),
                  "Qwen (151k)": (build_qwen_tokenizer(), 151936, 151645)}
    for label, (tok, vocab, eos) in tokenizers.items():
        for cls in (XGrammar, LLGuidance):
            started = time.perf_counter()
            engine = cls(tok, vocab, eos)
            setup_ms = 1000 * (time.perf_counter() - started)
            r = run(engine, tok, vocab, eos, args.streams, args.steps)
            print(f"{label:20} {cls.name:10} tokenizer setup {setup_ms:7.0f} ms  compile {r['compile_ms']:7.1f} ms  "
                  f"fill {args.streams} rows (median/min): loop {r['fill_loop_ms']:.2f}/{r['fill_loop_min_ms']:.2f} ms, "
                  f"batch {r['fill_batch_ms']:.2f}/{r['fill_batch_min_ms']:.2f} ms  "
                  f"apply {r['apply_ms']:.2f}/{r['apply_min_ms']:.2f} ms  "
                  f"rejected {r['rejected_loop']}/{r['rejected_batch']}", flush=True)


if __name__ == "__main__":
    main()
