"""Running one request on an engine to its end, and prompts that invite drafts: shared by the engine tests."""

from __future__ import annotations

import queue

from qwen_stream.engine.loop import Engine, wait_idle
from qwen_stream.types import SamplingParams, TokenOutput
from tests.support.tiny_models import tokens

PROMPTS = [tokens(24, seed=s) * 2 for s in range(4)]  # a prompt that repeats itself invites drafts


def run(engine: Engine, prompt: list[int], params: SamplingParams) -> tuple[list[int], list[TokenOutput]]:
    """The request's tokens and every output it got, once the engine is idle again."""
    outputs: queue.SimpleQueue[TokenOutput] = queue.SimpleQueue()
    engine.submit(prompt, params, outputs.put)
    got, seen = [], []
    while True:
        out = outputs.get(timeout=30)
        seen.append(out)
        got += out.new_token_ids
        if out.finish_reason is not None:
            assert wait_idle(engine)
            return got, seen
