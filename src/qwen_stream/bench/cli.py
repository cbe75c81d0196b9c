"""`qwen-stream bench`: our engine against HF generate() and llama-cpp-python, in one process and one run.

Only light imports here: the systems import torch, transformers or llama_cpp when they are set up.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import platform
import sys
import time
from pathlib import Path
from typing import Any

from qwen_stream.bench.config import BenchConfig
from qwen_stream.bench.sampling import SAMPLINGS
from qwen_stream.bench.systems import SYSTEMS
from qwen_stream.bench.workloads import WORKLOADS

DEFAULT_CONCURRENCY = "1,4,16"


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    return sorted(set(values))


def _systems(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in SYSTEMS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown system(s) {', '.join(unknown) or text!r}; "
                                         f"choose from {', '.join(SYSTEMS)}")
    return list(dict.fromkeys(names))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-m", "--model", default=None,
                        help="built-in alias, local HF directory or .gguf file (default: the default alias)")
    parser.add_argument("--which", type=_systems, default=None,
                        help=f"systems to run, comma separated, from {', '.join(SYSTEMS)} (default: all that apply)")
    parser.add_argument("--concurrency", type=_int_list, default=_int_list(DEFAULT_CONCURRENCY),
                        help=f"numbers of concurrent streams (default: {DEFAULT_CONCURRENCY})")
    parser.add_argument("--workload", choices=[*WORKLOADS, "fim", "embed", "long"], default="free",
                        help="free: answers to short varied questions; edit: rewrite a 2.6 kB Python module with "
                             "one class renamed, where the answer repeats its prompt; fim: editor completion "
                             "latency on /infill, ours vs llama-server without and with --cache-reuse, keystroke by "
                             "keystroke; embed: texts/s of 256 embedding inputs vs llama-server --embeddings and "
                             "sentence-transformers, and 16 streams' ITL beside them; long: a coding agent's first "
                             "request (system prompt, code, question: ~2,400 tokens) cold, TTFT and decode speed of "
                             "serve --prefill int8 vs --prefill llamacpp, llama-server and llama-cpp-python's server "
                             "(default: free)")
    parser.add_argument("--pooling", choices=["mean", "cls", "last"], default="last",
                        help="embed workload: the pooling both servers use on the GGUF (default: last)")
    parser.add_argument("--keystrokes", type=int, default=12,
                        help="fim workload: completion requests after the warm-up, one per typed character "
                             "(default: 12)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="long workload: timed rounds, each a fresh prompt sent to every server (default: 3)")
    parser.add_argument("--prompt-tokens", type=int, default=2400,
                        help="long workload: about how long the prompt is, in tokens (default: 2400)")
    parser.add_argument("--max-tokens", type=int, default=None,
                        help="new tokens per answer (default: 64; 16 for the fim workload)")
    parser.add_argument("--sampling", choices=SAMPLINGS, default="greedy",
                        help="greedy, or qwen: Qwen's defaults (temperature 0.7, top_p 0.8, top_k 20, repetition "
                             "penalty 1.05 over prompt + output) with a seed per prompt, every system alike "
                             "(default: greedy)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="requests served one after another for the single-stream level, whose TTFT and decode "
                             "speed are medians over them (default: 3)")
    parser.add_argument("--natural-stop", action="store_true",
                        help="let answers end at end-of-turn (default: every system generates exactly --max-tokens)")
    parser.add_argument("--no-prefix-cache", action="store_true",
                        help="every request computes its whole prompt: our prefix reuse and sharing off, "
                             "llama-cpp-python's cache emptied before each request (default: each system's cache "
                             "on, emptied before each measurement)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: physical cores)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                        help="weights dtype for the PyTorch systems (default: float32)")
    parser.add_argument("--context-length", type=int, default=None,
                        help="context window per stream (default: 1024; 2048 for the edit workload)")
    parser.add_argument("--server", action="store_true",
                        help="also drive a real `qwen-stream serve` over HTTP with concurrent streaming clients")
    parser.add_argument("--out", type=Path, default=None, help="directory for bench.json and bench.png")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def default_systems(model: str | None) -> list[str]:
    """Every system that applies: the llama.cpp ones for a GGUF model when llama-cpp-python is importable."""
    from qwen_stream.bench.llama_server import find_llama_server
    from qwen_stream.models import sources

    source = sources.resolve_source(model, progress=True)
    chosen = []
    if source.kind == "gguf" and importlib.util.find_spec("llama_cpp") is not None:
        chosen += ["ours-llamacpp", "llama-cpp-python"]
    if source.kind == "gguf" and find_llama_server() is not None:
        chosen += ["llama-server", "llama-server-ngram"]
    return [*chosen, "ours-torch", "ours-torch-int8", "hf"]


def run(args: argparse.Namespace) -> int:
    if args.max_tokens is None:
        args.max_tokens = 16 if args.workload == "fim" else 64
    if args.max_tokens < 2:
        raise ValueError(f"--max-tokens must be >= 2 (inter-token latency needs two tokens), got {args.max_tokens}")
    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
    if args.workload == "fim":
        return _run_fim(args)
    if args.workload == "embed":
        return _run_embed(args)
    if args.workload == "long":
        return _run_long(args)
    if args.context_length is None:
        args.context_length = 2048 if args.workload == "edit" else 1024
    if args.context_length <= args.max_tokens + 16:
        raise ValueError(f"--context-length {args.context_length} leaves no room for a prompt")
    systems = list(args.which or default_systems(args.model))  # resolves (and fetches) the model: fail early
    if args.which:
        from qwen_stream.models import sources

        sources.resolve_source(args.model, progress=True)
    if args.server:
        systems.append("ours-server")
    config = BenchConfig(model=args.model, max_tokens=args.max_tokens, threads=args.threads,
                         max_batch_size=max(args.concurrency), context_length=args.context_length,
                         force_length=not args.natural_stop, dtype=args.dtype, prefix_cache=not args.no_prefix_cache,
                         workload=args.workload, sampling=args.sampling)
    payload = run_bench(systems, args.concurrency, config, progress=not args.no_progress, single_repeats=args.repeats)
    _report(payload, args.out)
    return 0 if payload["results"] else 1


def _run_fim(args: argparse.Namespace) -> int:
    """The fim workload: its own runner (three servers, sequential editor requests), its own table."""
    from qwen_stream.bench.fim import CONTEXT_LENGTH, print_fim, run_fim
    from qwen_stream.bench.report import write_json
    from qwen_stream.models import sources

    if args.keystrokes < 1:
        raise ValueError(f"--keystrokes must be >= 1, got {args.keystrokes}")
    sources.resolve_source(args.model, progress=True)  # fetch the model before any server starts
    config = BenchConfig(model=args.model, max_tokens=args.max_tokens, threads=args.threads, max_batch_size=1,
                         context_length=args.context_length or CONTEXT_LENGTH, workload="fim")
    payload = run_fim(config, args.keystrokes)
    print_fim(payload)
    if args.out is not None:
        write_json(args.out / "bench-fim.json", payload)
        print(f"wrote {args.out / 'bench-fim.json'}")
    return 0


def _run_embed(args: argparse.Namespace) -> int:
    """The embed workload: its own runner (two servers, MiniLM in process, the ITL check), its own table."""
    from qwen_stream.bench.embed import print_embed, run_embed, write_embed
    from qwen_stream.models import sources

    sources.resolve_source(args.model, progress=True)  # fetch the model before any server starts
    config = BenchConfig(model=args.model, max_tokens=args.max_tokens, threads=args.threads, max_batch_size=16,
                         context_length=args.context_length or 512, workload="embed")
    payload = run_embed(config, pooling=args.pooling)
    print_embed(payload)
    if args.out is not None:
        print(f"wrote {write_embed(payload, args.out)}")
    return 0


def _run_long(args: argparse.Namespace) -> int:
    """The long workload: its own runner (four servers, one cold long prompt per round), its own table."""
    from qwen_stream.bench.long_prompt import CONTEXT_LENGTH, print_long, run_long
    from qwen_stream.bench.report import write_json
    from qwen_stream.models import sources

    if args.rounds < 1:
        raise ValueError(f"--rounds must be >= 1, got {args.rounds}")
    context = args.context_length or CONTEXT_LENGTH
    if args.prompt_tokens < 300 or args.prompt_tokens + args.max_tokens + 64 > context:
        raise ValueError(f"--prompt-tokens {args.prompt_tokens} must be >= 300 and leave room for --max-tokens "
                         f"{args.max_tokens} in a context of {context}")
    sources.resolve_source(args.model, progress=True)  # fetch the model before any server starts
    config = BenchConfig(model=args.model, max_tokens=args.max_tokens, threads=args.threads, max_batch_size=1,
                         context_length=context, workload="long")
    payload = run_long(config, args.rounds, args.prompt_tokens)
    print_long(payload)
    if args.out is not None:
        write_json(args.out / "bench-long.json", payload)
        print(f"wrote {args.out / 'bench-long.json'}")
    return 0 if {"ours-int8", "ours"} <= {r["system"] for r in payload["results"]} else 1


def run_bench(systems: list[str], levels: list[int], config: BenchConfig, *, progress: bool = True,
              single_repeats: int = 1) -> dict[str, Any]:
    """Every system through every level; returns the JSON payload (summaries, ratios, overhead, skips)."""
    from tqdm import tqdm

    from qwen_stream.bench.harness import bench_system, requests_per_system

    results: list[Any] = []
    overhead: dict[str, Any] = {}
    grammar: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    load_s: dict[str, float] = {}
    per_system = requests_per_system(levels, single_repeats)
    with tqdm(total=len(systems) * per_system, unit="req", disable=not progress, file=sys.stderr) as bar:
        for name in systems:
            bar.set_description(f"{name}: loading")
            try:
                started = time.perf_counter()
                system = _make(name, config)
                load_s[name] = time.perf_counter() - started
            except (ImportError, ValueError, RuntimeError, OSError) as exc:
                skipped[name] = str(exc)
                bar.write(f"bench: skipping {name}: {exc}", file=sys.stderr)
                bar.update(per_system)
                continue
            try:
                bar.set_description(name)
                try:
                    levels_done = bench_system(system, levels, lambda: bar.update(1), single_repeats,
                                               config.workload)
                except (RuntimeError, OSError) as exc:  # a peer that crashes must not cost the other systems' figures
                    skipped[name] = f"failed during the run: {exc}"
                    bar.write(f"bench: {name} failed: {exc}", file=sys.stderr)
                    continue
                results += [lr.summary for lr in levels_done]
                if name.startswith("ours-") and name not in ("ours-server", "ours-vllm"):  # in-process only
                    overhead[name] = _overhead(system, levels_done)
                    grammar[name] = _grammar_overhead(system, levels_done)
            finally:
                system.close()
                del system
                gc.collect()
    return {"config": _config_dict(config, systems, levels), "results": results, "streaming_overhead": overhead,
            "grammar_overhead": grammar, "skipped": skipped, "load_s": load_s}


def _make(name: str, config: BenchConfig) -> Any:
    if name == "ours-server":
        from qwen_stream.bench.server import ServerSystem

        return ServerSystem(config)
    from qwen_stream.bench.systems import make_system

    return make_system(name, config)


def _overhead(system: Any, levels_done: list[Any]) -> dict[str, float]:
    """Streaming-layer cost per token vs the decode step, from the lowest concurrency level's first stream."""
    from qwen_stream.bench.overhead import streaming_overhead

    first = levels_done[0]
    extra = first.summary.extra
    ids = first.traces[0].token_ids
    if not extra.get("steps") or not ids:
        return {}
    return streaming_overhead(system.model.tokenizer, ids, extra["step_s"] / extra["steps"])


def _grammar_overhead(system: Any, levels_done: list[Any]) -> dict[str, float]:
    """Grammar-mask cost at the highest concurrency level, vs that level's mean engine step."""
    from qwen_stream.bench.grammar_cost import grammar_overhead
    from qwen_stream.inputs.grammars import GrammarError

    top = levels_done[-1].summary
    if not top.extra.get("steps"):
        return {}
    try:
        return grammar_overhead(system.model, top.concurrency, top.extra["step_s"] / top.extra["steps"])
    except GrammarError:  # xgrammar not installed: no structured output to cost
        return {}


def _config_dict(config: BenchConfig, systems: list[str], levels: list[int]) -> dict[str, Any]:
    return {"model": config.model, "systems": systems, "concurrency": levels, "max_tokens": config.max_tokens,
            "force_length": config.force_length, "threads": config.threads, "dtype": config.dtype,
            "context_length": config.context_length, "workload": config.workload,
            "sampling": config.sampling,
            "python": platform.python_version(), "machine": platform.machine(),
            "time": time.strftime("%Y-%m-%d %H:%M:%S")}


def _report(payload: dict[str, Any], out: Path | None) -> None:
    from qwen_stream.bench.report import draw_chart, print_tables, ratios, write_json

    summaries = payload["results"]
    rows = ratios(summaries)
    cfg = payload["config"]
    title = (f"qwen-stream bench: {cfg['model'] or 'default model'}, {cfg['workload']} workload, "
             f"{cfg['max_tokens']} tokens, {cfg.get('sampling', 'greedy')} sampling")
    print_tables(summaries, rows, title)
    for name, seconds in payload.get("load_s", {}).items():
        print(f"{name}: model loaded in {seconds:.1f} s")
    for name, o in payload["streaming_overhead"].items():
        if o:
            print(f"{name}: streaming layer {o['per_token_us']:.0f} us/token = {100 * o['share_of_step']:.2f}% "
                  f"of a {o['decode_step_ms']:.1f} ms decode step")
    for name, g in payload.get("grammar_overhead", {}).items():
        if g:
            print(f"{name}: JSON-schema masks for {g['streams']:.0f} streams {g['mask_ms_per_step']:.2f} ms/step = "
                  f"{100 * g['share_of_step']:.1f}% of a {g['step_ms']:.1f} ms engine step at that concurrency")
    for s in summaries:
        drafted, accepted = s.extra.get("draft_n"), s.extra.get("draft_n_accepted")
        if drafted:
            print(f"{s.system}, {s.concurrency} streams: {accepted:.0f} of {drafted:.0f} drafted tokens accepted "
                  f"({100 * accepted / drafted:.0f}%)")
    for name, why in payload["skipped"].items():
        print(f"skipped {name}: {why}")
    if out is not None:
        data = dict(payload, results=[s.to_dict() for s in summaries], ratios=rows)
        write_json(out / "bench.json", data)
        try:
            if summaries:
                draw_chart(out / "bench.png", summaries, title)
        except ImportError:  # .venv-vllm has no matplotlib: the figures are in the JSON all the same
            print(f"wrote {out / 'bench.json'} (no chart: pip install 'qwen-stream[bench]' for matplotlib)")
            return
        print(f"wrote {out / 'bench.json'} and {out / 'bench.png'}")
