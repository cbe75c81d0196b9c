"""How closely ``--quantize int8`` follows float32: teacher-forced next-token agreement and KL on the same text.

Both runs are the native PyTorch runner on the same float32 weights: the first half of the text is prefilled as one
chunk, the second half is fed token by token (decode), and the logits of every position after the prefill are
compared (top-1 agreement and mean KL(float32 || int8)).

    python benchmarks/int8_agreement.py --model smollm2-135m --tokens 500
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from qwen_stream.models.sources import ModelSource

TEXT = Path(__file__).resolve().parent.parent / "README.md"


def teacher_forced_logits(source: ModelSource, ids: list[int], quantize: str | None) -> torch.Tensor:
    from tqdm import tqdm

    from qwen_stream.engine.runners.base import SeqChunk
    from qwen_stream.engine.runners.torch_native import build_torch_runner
    from qwen_stream.models import sources

    model = sources.load_hf_model(source, dtype="float32", progress=False)
    runner = build_torch_runner(model, max_slots=1, max_seq_len=len(ids) + 1, quantize=quantize)
    half = len(ids) // 2
    rows = [runner.forward([SeqChunk(0, ids[:half], 0)])[0].clone()]
    for pos in tqdm(range(half, len(ids) - 1), desc=quantize or "float32", unit="tok"):
        rows.append(runner.forward([SeqChunk(0, [ids[pos]], pos)])[0].clone())
    runner.close()
    return torch.stack(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", help="alias, local HF directory or .gguf file")
    parser.add_argument("--tokens", type=int, default=500, help="tokens of README text to use (default: 500)")
    args = parser.parse_args()

    from qwen_stream.devices import configure_threads
    from qwen_stream.models import sources

    configure_threads()
    source = sources.resolve_source(args.model, progress=True)
    tokenizer = sources.load_tokenizer(source, progress=False)
    ids = tokenizer(TEXT.read_text(encoding="utf-8"))["input_ids"][: args.tokens]
    if len(ids) < 4:
        raise SystemExit(f"--tokens {args.tokens} leaves nothing to compare")
    reference = teacher_forced_logits(source, ids, None)
    int8 = teacher_forced_logits(source, ids, "int8")
    agree = (reference.argmax(-1) == int8.argmax(-1)).float().mean().item()
    kl = torch.nn.functional.kl_div(int8.log_softmax(-1), reference.log_softmax(-1), log_target=True,
                                    reduction="batchmean").item()
    print(f"{args.model}: {len(reference)} positions, top-1 agreement with float32 {agree:.1%}, mean KL {kl:.4f}")


if __name__ == "__main__":
    main()
