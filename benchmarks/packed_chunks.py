"""What packing a step's drafted chunks into one forward saves on the native PyTorch runner.

16 sequences, each holding a prompt at its own length, each feed a chunk of 8 tokens (the last token and 7 drafts,
as a speculative step does, a logits row after every one). Timed alternately, several rounds:

- packed: ONE ``forward`` of the 16 chunks (one pass over the weights, attention split by chunk);
- separate: 16 ``forward`` calls of one chunk each (what the runner did before: a pass per chunk).

Every round rewrites the same positions (the chunks start where the prompts end), so each round does the same work.

    python benchmarks/packed_chunks.py --model smollm2-135m --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from qwen_stream.engine.runners.base import ModelRunner, SeqChunk

TEXT = Path(__file__).resolve().parent.parent / "README.md"


def timed(runner: ModelRunner, calls: list[list[SeqChunk]]) -> tuple[float, torch.Tensor]:
    """Seconds for the calls one after another, and their logits rows together."""
    start = time.perf_counter()
    rows = torch.cat([runner.forward(chunks) for chunks in calls])
    if rows.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", help="alias, local HF directory or .gguf file")
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--chunk", type=int, default=8, help="tokens per chunk (default: 8)")
    parser.add_argument("--prompt", type=int, default=64, help="tokens held by the first slot; each next one 8 more")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    from qwen_stream.devices import configure_threads
    from qwen_stream.engine.runners.torch_native import build_torch_runner
    from qwen_stream.models import sources

    configure_threads()
    source = sources.resolve_source(args.model, progress=True)
    ids = sources.load_tokenizer(source, progress=False)(TEXT.read_text(encoding="utf-8"))["input_ids"]
    longest = args.prompt + 8 * (args.streams - 1) + args.chunk
    model = sources.load_hf_model(source, dtype="float32", device=args.device, progress=False)
    runner = build_torch_runner(model, max_slots=args.streams, max_seq_len=longest, device=args.device)
    print(f"{args.model} on {runner.name} ({args.device}, {torch.get_num_threads()} threads): {args.streams} chunks "
          f"of {args.chunk} tokens at positions {args.prompt}..{longest - args.chunk}")
    starts = [args.prompt + 8 * b for b in range(args.streams)]
    for slot, start in enumerate(starts):
        runner.forward([SeqChunk(slot, ids[:start], 0, want_logits=False)])
    chunks = [SeqChunk(slot, ids[start : start + args.chunk], start, n_logits=args.chunk)
              for slot, start in enumerate(starts)]
    timed(runner, [chunks])  # warm-up, both ways
    timed(runner, [[c] for c in chunks])
    packed, separate, diff = [], [], 0.0
    for _ in range(args.rounds):
        seconds, one = timed(runner, [chunks])
        packed.append(seconds)
        seconds, many = timed(runner, [[c] for c in chunks])
        separate.append(seconds)
        diff = max(diff, (one - many).abs().max().item())
    p, s = statistics.median(packed), statistics.median(separate)
    print(f"packed (1 forward):     median {p * 1000:8.1f} ms  {[round(t * 1000, 1) for t in packed]}")
    print(f"separate ({args.streams} forwards): median {s * 1000:8.1f} ms  {[round(t * 1000, 1) for t in separate]}")
    print(f"ratio separate / packed: {s / p:.2f}x   (largest logit difference between the two: {diff:.2e})")
    runner.close()


if __name__ == "__main__":
    main()
