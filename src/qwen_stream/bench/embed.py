"""The ``embed`` workload: embeddings on the one engine, against llama-server and sentence-transformers, in one run.

1. Throughput on the GGUF: 256 texts of ~60 tokens in one ``POST /v1/embeddings``, `qwen-stream serve` against
   `llama-server --embeddings` on the same GGUF, pooling, slots and threads, taken in turns (the order swapped each
   round) so a busy machine slows both alike; texts/s and the ratio, and how close the two systems' vectors are.
2. p50 latency of one short input on each server.
3. all-MiniLM-L6-v2 in this process: our ``model.embed`` against sentence-transformers' ``encode``, same texts.
4. The ITL check: 16 chat streams' inter-token latency p99 alone and while 256 embedding inputs run on the same
   engine (ours, in this process, 32 slots): the ratio should stay <= 1.5x.

Ratios are ours / peer for time (latency, ITL) and ours / peer for texts/s; every figure is from this one run.
"""

from __future__ import annotations

import os
import random
import statistics
import threading
import time
from pathlib import Path
from typing import Any

from qwen_stream.bench.config import BenchConfig
from qwen_stream.bench.metrics import StreamTrace, percentile
from qwen_stream.bench.server import SERVED_NAME, HttpServerSystem, free_port, serve_command

EMBED_INPUTS = 256
EMBED_CONTEXT = 512  # per slot: an input of ~60 tokens and a chat stream's prompt and answer fit
EMBED_SLOTS = 16
ITL_STREAMS = 16
EMBED_TIMEOUT_S = 3600.0  # 256 texts on a busy 2-core machine took minutes on either server
_WORDS = tuple(" ".join((
    "the a of and to in is that for it as was with be by on not he this are or his from at which but have an they",
    "you were her she there been one all we their has would when if so no what up out more about into them can",
    "only other new some could time these two may first then do any like my now over such our man me even most",
    "made after also did many before must through back years where much your way well down should because each",
    "just those people how too little state good very make world still own see men work long get here between",
    "both life being under never day same another know while last might us great old year off come since",
    "against go came right used take three")).split(" "))


def embed_texts(n: int = EMBED_INPUTS, words: int = 53, seed: int = 0) -> list[str]:
    """``n`` distinct texts of ``words`` common English words (~60 tokens with Qwen's tokenizer)."""
    rng = random.Random(seed)
    return [f"Document {i}: " + " ".join(rng.choice(_WORDS) for _ in range(words)) + "." for i in range(n)]


class EmbedServer(HttpServerSystem):
    """A server answering ``/v1/embeddings``: ``embed`` times one request and returns its vectors."""

    def embed(self, texts: list[str] | str) -> tuple[float, list[list[float]]]:
        with self.talking():
            started = time.perf_counter()
            response = self.client.post("/v1/embeddings", json={"model": SERVED_NAME, "input": texts,
                                                                 "encoding_format": "float"}, timeout=EMBED_TIMEOUT_S)
            seconds = time.perf_counter() - started
        if response.status_code != 200:
            raise RuntimeError(f"{self.name} answered {response.status_code}: {response.text[:300]}")
        return seconds, [item["embedding"] for item in response.json()["data"]]


class OursEmbed(EmbedServer):
    name = "ours-server"

    def __init__(self, config: BenchConfig, pooling: str) -> None:
        port = free_port()
        command = serve_command(config, port, "--max-batch-size", str(EMBED_SLOTS), "--context-length",
                                str(EMBED_CONTEXT), "--pooling", pooling,
                                "--kv-budget", str(EMBED_SLOTS * EMBED_CONTEXT),  # llama-server's -c
                                "--model-alias", SERVED_NAME)
        super().__init__(config, command, port)


class LlamaServerEmbed(EmbedServer):
    name = "llama-server"
    keepalive = False  # see LlamaServerSystem

    def __init__(self, config: BenchConfig, pooling: str) -> None:
        port = free_port()
        super().__init__(config, llama_embedding_command(config, port, pooling), port)


def llama_embedding_command(config: BenchConfig, port: int, pooling: str) -> list[str]:
    """`llama-server --embeddings` on the bench's GGUF: the same slots, context per slot, threads and pooling."""
    from qwen_stream.bench.llama_server import binary_and_gguf
    from qwen_stream.cpu import has_amx, physical_cores

    binary, gguf = binary_and_gguf(config)
    threads = str(config.threads or physical_cores())
    command = [str(binary), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port), "--embeddings",
               "--pooling", pooling, "-np", str(EMBED_SLOTS), "-c", str(EMBED_SLOTS * EMBED_CONTEXT),
               "-ub", str(EMBED_CONTEXT), "-t", threads, "-tb", threads, "--no-webui", "--alias", SERVED_NAME]
    return [*command, "--no-repack"] if has_amx() else command


def run_embed(config: BenchConfig, *, pooling: str = "last", rounds: int = 1, latency_requests: int = 8,
              with_minilm: bool = True, with_itl: bool = True) -> dict[str, Any]:
    """Every part of the workload; a part whose peer is missing (no llama-server, no sentence-transformers) says
    why in ``skipped``."""
    texts = embed_texts()
    payload: dict[str, Any] = {"workload": "embed", "model": config.model, "pooling": pooling, "inputs": len(texts),
                               "load": os.getloadavg(), "skipped": {}}
    payload["gguf"] = _servers(config, pooling, texts, rounds, latency_requests, payload["skipped"])
    if with_minilm:
        payload["minilm"] = _minilm(texts, rounds, latency_requests, payload["skipped"])
    if with_itl:
        payload["itl"] = itl_check(config, pooling, texts)
    payload["load_after"] = os.getloadavg()
    return payload


def _servers(config: BenchConfig, pooling: str, texts: list[str], rounds: int, latency_requests: int,
             skipped: dict[str, str]) -> dict[str, Any]:
    servers: list[EmbedServer] = []
    try:
        servers.append(OursEmbed(config, pooling))
        try:
            servers.append(LlamaServerEmbed(config, pooling))
        except (FileNotFoundError, ValueError, RuntimeError) as exc:
            skipped["llama-server"] = str(exc)
        for server in servers:
            server.embed(texts[:4])  # warm-up: first-request costs out of the figures
        seconds: dict[str, list[float]] = {s.name: [] for s in servers}
        vectors: dict[str, list[list[float]]] = {}
        for k in range(rounds):
            for server in servers if k % 2 == 0 else servers[::-1]:
                took, vectors[server.name] = server.embed(texts)
                seconds[server.name].append(took)
        latency: dict[str, list[float]] = {s.name: [] for s in servers}
        for k in range(latency_requests):
            for server in servers if k % 2 == 0 else servers[::-1]:
                latency[server.name].append(1000 * server.embed("How do I reverse a list in Python?")[0])
    finally:
        for server in servers:
            server.close()
    return _compare(seconds, latency, vectors, len(texts))


def _compare(seconds: dict[str, list[float]], latency: dict[str, list[float]],
             vectors: dict[str, list[list[float]]], n: int) -> dict[str, Any]:
    import numpy as np

    rows: dict[str, dict[str, Any]] = {name: {"texts_per_s": n / min(times), "best_s": min(times), "all_s": times,
                   "p50_single_ms": statistics.median(latency[name])} for name, times in seconds.items()}
    result: dict[str, Any] = {"systems": rows}
    if "llama-server" in rows:
        ours, peer = rows["ours-server"], rows["llama-server"]
        result["throughput_ratio"] = ours["texts_per_s"] / peer["texts_per_s"]
        result["p50_ratio"] = ours["p50_single_ms"] / peer["p50_single_ms"]
        a, b = np.array(vectors["ours-server"]), np.array(vectors["llama-server"])
        result["cosine_to_peer_min"] = float(np.min(np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) *
                                                                             np.linalg.norm(b, axis=1))))
    return result


def _minilm(texts: list[str], rounds: int, latency_requests: int, skipped: dict[str, str]) -> dict[str, Any]:
    """Ours against sentence-transformers on all-MiniLM-L6-v2, both in this process, in turns."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        skipped["sentence-transformers"] = f"not installed ({exc}): pip install sentence-transformers"
        return {}
    import numpy as np

    from qwen_stream.api import ChatModel
    from qwen_stream.models.registry import ensure_alias

    folder = ensure_alias("all-minilm-l6-v2", progress=True)
    with ChatModel.load("all-minilm-l6-v2", progress=False, max_batch_size=32) as ours:
        peer = SentenceTransformer(str(folder), device="cpu")
        systems = {"ours": lambda t: ours.embed(t), "sentence-transformers": lambda t: peer.encode(t, batch_size=32)}
        seconds: dict[str, list[float]] = {name: [] for name in systems}
        outputs: dict[str, Any] = {}
        for run in systems.values():
            run(texts[:8])  # warm-up
        for k in range(rounds):
            for name in list(systems) if k % 2 == 0 else list(systems)[::-1]:
                started = time.perf_counter()
                outputs[name] = run(texts)
                seconds[name].append(time.perf_counter() - started)
        latency = {name: [_timed(run, ["How do I reverse a list in Python?"]) for _ in range(latency_requests)]
                   for name, run in systems.items()}
    rows: dict[str, dict[str, Any]] = {name: {"texts_per_s": len(texts) / min(times), "all_s": times,
                   "p50_single_ms": statistics.median(latency[name])} for name, times in seconds.items()}
    return {"systems": rows, "throughput_ratio": rows["ours"]["texts_per_s"] / rows["sentence-transformers"][
        "texts_per_s"], "max_abs_diff": float(np.abs(outputs["ours"] - outputs["sentence-transformers"]).max())}


def _timed(run: Any, texts: list[str]) -> float:
    started = time.perf_counter()
    run(texts)
    return 1000 * (time.perf_counter() - started)


def itl_check(config: BenchConfig, pooling: str, texts: list[str]) -> dict[str, Any]:
    """16 greedy chat streams alone, then beside 256 embedding inputs, on one engine with 32 slots; ITL p99 each,
    in turns (alone, beside, alone, beside) and the worse of each kind reported. The embedding request starts once
    the streams decode and is cancelled when they end: what counts is the streams' latency while it is pending."""
    from qwen_stream.api import ChatModel

    slots = 2 * ITL_STREAMS  # the streams' and as many for embedding inputs
    with ChatModel.load(config.model, progress=False, max_batch_size=slots, context_length=EMBED_CONTEXT,
                        kv_budget=slots * EMBED_CONTEXT, threads=config.threads, pooling=pooling) as model:
        _streams(model, config.max_tokens, None)  # warm-up (and the step-cost table's first entries)
        alone, beside, embedded = [], [], []
        for _ in range(2):
            alone.append(_streams(model, config.max_tokens, None)[0])
            p99, done = _streams(model, config.max_tokens, texts)
            beside.append(p99)
            embedded.append(done)
    return {"streams": ITL_STREAMS, "max_tokens": config.max_tokens, "itl_p99_alone_ms": alone,
            "itl_p99_beside_embeddings_ms": beside, "embedded_meanwhile": embedded,
            "ratio": max(beside) / max(alone)}


def _streams(model: Any, max_tokens: int, texts: list[str] | None) -> tuple[float, int]:
    """ITL p99 (ms) of ITL_STREAMS greedy streams, with ``texts`` pending as one embedding request meanwhile; and
    how many of the texts were embedded before the streams ended."""
    traces = [StreamTrace(time.perf_counter()) for _ in range(ITL_STREAMS)]
    started = threading.Barrier(ITL_STREAMS + 1)

    def stream(i: int) -> None:
        started.wait()
        for event in model.stream(f"Write a short story about the number {i}.", max_new_tokens=max_tokens,
                                  temperature=0.0, ignore_eos=True):
            if event.token_ids:
                traces[i].add_tokens(time.perf_counter(), len(event.token_ids))

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(ITL_STREAMS)]
    for thread in threads:
        thread.start()
    started.wait()
    flood = _Flood(model, texts) if texts is not None else None
    for thread in threads:
        thread.join()
    done = flood.stop() if flood is not None else 0
    gaps = [gap for trace in traces for gap in trace.gaps if gap > 0]
    return 1000 * percentile(gaps, 99), done


class _Flood:
    """One embedding request of many texts on its own event loop, started once the streams decode; ``stop``
    cancels it (its engine requests are aborted) and says how many texts were embedded."""

    def __init__(self, model: Any, texts: list[str]) -> None:
        import asyncio

        from qwen_stream.engine.backend import OutputSink

        self.done = 0
        requests = model.inputs.embed(texts).requests
        self.loop = asyncio.new_event_loop()
        engine = model.engine

        class Counting:  # the engine, counting what finishes (a pooled request ends with one output)
            def __getattr__(self, name: str) -> Any:
                return getattr(engine, name)

            def submit(inner, prompt_ids: list[int], params: Any, output: OutputSink, request_id: Any = None) -> str:
                def counted(out: Any) -> None:
                    self.done += out.embedding is not None
                    output(out)

                return engine.submit(prompt_ids, params, counted, request_id)

        from qwen_stream.client.pooled import arun_pooled

        self.task = self.loop.create_task(arun_pooled(Counting(), requests))
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        import contextlib

        with contextlib.suppress(BaseException):
            self.loop.run_until_complete(self.task)

    def stop(self) -> int:
        self.loop.call_soon_threadsafe(self.task.cancel)
        self.thread.join(60)
        self.loop.close()
        return self.done


def print_embed(payload: dict[str, Any]) -> None:
    load = payload["load"]
    print(f"embed workload: {payload['model'] or 'default model'}, {payload['inputs']} texts of ~60 tokens, "
          f"pooling {payload['pooling']}; load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
          f"(a shared machine: compare ratios, not absolute figures)")
    for part in ("gguf", "minilm"):
        rows = payload.get(part, {}).get("systems", {})
        for name, row in rows.items():
            print(f"  {part:<7} {name:<22} {row['texts_per_s']:8.1f} texts/s   p50 one short input "
                  f"{row['p50_single_ms']:8.1f} ms")
    gguf = payload.get("gguf", {})
    if "throughput_ratio" in gguf:
        print(f"  ours / llama-server: {gguf['throughput_ratio']:.2f}x texts/s (>= 1.0 is the target), "
              f"p50 latency {gguf['p50_ratio']:.2f}x; lowest cosine between the two systems' vectors "
              f"{gguf['cosine_to_peer_min']:.5f}")
    minilm = payload.get("minilm", {})
    if "throughput_ratio" in minilm:
        print(f"  ours / sentence-transformers (MiniLM): {minilm['throughput_ratio']:.2f}x texts/s, largest "
              f"difference of a vector value {minilm['max_abs_diff']:.2e}")
    itl = payload.get("itl")
    if itl:
        print(f"  ITL p99 of {itl['streams']} streams: alone {_ms(itl['itl_p99_alone_ms'])}, beside "
              f"{payload['inputs']} pending embedding inputs {_ms(itl['itl_p99_beside_embeddings_ms'])} "
              f"(embedded while the streams ran: {itl['embedded_meanwhile']}): {itl['ratio']:.2f}x "
              f"(<= 1.5 is the target)")
    for name, why in payload["skipped"].items():
        print(f"  skipped {name}: {why}")
    after = payload.get("load_after")
    if after:
        print(f"  load average at the end {after[0]:.2f} {after[1]:.2f} {after[2]:.2f}")


def _ms(values: list[float]) -> str:
    return "/".join(f"{v:.0f}" for v in values) + " ms"


def write_embed(payload: dict[str, Any], out: Path) -> Path:
    from qwen_stream.bench.report import write_json

    path = out / "bench-embed.json"
    write_json(path, payload)
    return path
