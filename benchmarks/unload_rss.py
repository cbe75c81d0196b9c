"""Memory given back when the server's model pool unloads a model: process RSS before loading, loaded (after one
answer, so the KV cache is touched), and after the pool's unload (engine closed, gc, malloc_trim), in one process.

    python benchmarks/unload_rss.py --model qwen2.5-coder-1.5b --cycles 2

It drives the pool as the server does (``acquire`` loads it in a thread, ``expire`` + the reaper unload it), so
what it measures is the server's own unload path. A second cycle shows whether a reload leaks.
"""

from __future__ import annotations

import argparse
import asyncio
import os

import psutil

from qwen_stream.api import ChatModel
from qwen_stream.server.pool.model_pool import EntryState, ModelPool, PoolEntry


def rss_mb() -> float:
    return psutil.Process(os.getpid()).memory_info().rss / 2**20


def answer_once(model: ChatModel | None) -> None:
    assert model is not None
    model.chat("Write a haiku about memory.", max_new_tokens=32, temperature=0.0)


async def cycle(pool: ModelPool, entry: PoolEntry) -> tuple[float, float]:
    await pool.acquire(entry.name)  # loads it (no request scope: nothing holds it afterwards)
    await asyncio.to_thread(answer_once, entry.model)
    loaded = rss_mb()
    pool.expire(entry.name)
    while entry.state is not EntryState.UNLOADED:
        await asyncio.sleep(0.05)
    return loaded, rss_mb()


async def main(args: argparse.Namespace) -> None:
    entry = PoolEntry(lambda: ChatModel.load(args.model, progress=False, kv_windows=4), args.model)
    pool = ModelPool([entry], load_wait_s=600)
    print(f"before loading: {rss_mb():.0f} MB")
    for i in range(args.cycles):
        loaded, unloaded = await cycle(pool, entry)
        print(f"cycle {i + 1}: loaded {loaded:.0f} MB -> unloaded {unloaded:.0f} MB "
              f"(given back {loaded - unloaded:.0f} MB)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--cycles", type=int, default=2)
    asyncio.run(main(parser.parse_args()))
