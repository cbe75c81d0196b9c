"""A tiny random-weight chat model in Hugging Face format, for tests of every layer.

Real architecture classes, real tokenizer, random weights: the engine, server and front ends run exactly the
code paths of a real model in a fraction of a second, with no download.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

ARCHITECTURES = ("qwen2", "llama", "qwen3")
# Qwen2.5's recommended sampling, so a tiny model carries the same defaults the real ones do.
TINY_GENERATION_DEFAULTS: dict[str, Any] = {
    "do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05,
    "max_new_tokens": 512,
}


def make_tiny_model_dir(path: str | Path, tokenizer: Any, *, arch: str = "qwen2", seed: int = 0,
                        hidden_size: int = 64, num_layers: int = 2, num_heads: int = 4, num_kv_heads: int = 2,
                        intermediate_size: int = 128, max_positions: int = 4096, lm_head_std: float = 0.5) -> Path:
    """Build and save a tiny random ``arch`` model with ``tokenizer`` and a generation config into ``path``.

    ``lm_head_std`` is far larger than a trained model's init (0.02): with unit-RMS hidden states the logits then
    spread by ~sqrt(hidden) * std (~4 here), so the greedy choice is decided by the weights, not by float noise.
    """
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    if arch not in ARCHITECTURES:
        raise ValueError(f"arch must be one of {ARCHITECTURES}, got {arch!r}")
    if hidden_size % num_heads or num_heads % num_kv_heads:
        raise ValueError("hidden_size must be a multiple of num_heads, and num_heads of num_kv_heads")
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    config = _config(arch, tokenizer, hidden_size, num_layers, num_heads, num_kv_heads, intermediate_size,
                     max_positions)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        model.get_output_embeddings().weight.normal_(0.0, lm_head_std)
    model.eval()
    model.generation_config = GenerationConfig(eos_token_id=list(_eos_ids(tokenizer)),
                                               pad_token_id=_pad_id(tokenizer), **TINY_GENERATION_DEFAULTS)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _config(arch: str, tokenizer: Any, hidden: int, layers: int, heads: int, kv_heads: int, intermediate: int,
            max_positions: int) -> Any:
    from transformers import LlamaConfig, Qwen2Config, Qwen3Config

    eos = _eos_ids(tokenizer)
    common: dict[str, Any] = {
        "vocab_size": _round_up(len(tokenizer), 128),  # room for every added token; 151,936 for Qwen, as upstream
        "hidden_size": hidden, "intermediate_size": intermediate, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": kv_heads, "max_position_embeddings": max_positions,
        "rms_norm_eps": 1e-6, "tie_word_embeddings": False, "eos_token_id": eos[0], "pad_token_id": _pad_id(tokenizer),
        "bos_token_id": getattr(tokenizer, "bos_token_id", None),
    }
    # rope_theta as a plain kwarg: transformers 4.x reads it directly, 5.x folds it into rope_parameters
    common["rope_theta"] = 10_000.0 if arch == "llama" else 1_000_000.0
    if arch == "qwen3":
        common["head_dim"] = hidden // heads
    config_class = {"qwen2": Qwen2Config, "qwen3": Qwen3Config, "llama": LlamaConfig}[arch]
    return config_class(**common)


def _eos_ids(tokenizer: Any) -> tuple[int, ...]:
    from qwen_stream.models.sources import chat_stop_token_ids

    ids = chat_stop_token_ids(tokenizer)
    if not ids:
        raise ValueError("the tokenizer has no eos token, <|im_end|> or <|endoftext|>: a chat model needs one")
    return ids


def _pad_id(tokenizer: Any) -> int:
    pad = getattr(tokenizer, "pad_token_id", None)
    return int(pad) if pad is not None else _eos_ids(tokenizer)[-1]


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def make_tiny_embedding_dir(path: str | Path, tokenizer: Any, *, seed: int = 0, max_seq_length: int = 512,
                            **sizes: Any) -> Path:
    """A tiny random qwen3 laid out as Qwen3-Embedding is: a sentence-transformers folder (last-token pooling,
    Normalize, the query prompt ``"Instruct: <task>\\nQuery:"``) whose tokenizer ends every text with
    ``<|endoftext|>``. Both sentence-transformers and qwen-stream load it, so their vectors can be compared."""
    import json

    from tokenizers import processors
    from transformers import AutoTokenizer

    from qwen_stream.models.embedding_style import QWEN3_QUERY_PROMPT

    out = make_tiny_model_dir(path, tokenizer, arch="qwen3", seed=seed, **sizes)
    tokens = AutoTokenizer.from_pretrained(str(out))  # a copy: the caller's tokenizer stays as it was
    eos = tokens.convert_tokens_to_ids("<|endoftext|>")
    tokens.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="$A:0 <|endoftext|>:0", pair="$A:0 $B:1 <|endoftext|>:1", special_tokens=[("<|endoftext|>", eos)])
    tokens.save_pretrained(out)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
               {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]
    hidden = int(sizes.get("hidden_size", 64))
    files = {
        "modules.json": modules,
        "1_Pooling/config.json": {"word_embedding_dimension": hidden, "pooling_mode_cls_token": False,
                                  "pooling_mode_mean_tokens": False, "pooling_mode_lasttoken": True,
                                  "include_prompt": True},
        "config_sentence_transformers.json": {"prompts": {"query": QWEN3_QUERY_PROMPT, "document": ""},
                                              "default_prompt_name": None, "similarity_fn_name": "cosine"},
        "sentence_bert_config.json": {"max_seq_length": max_seq_length, "do_lower_case": False},
    }
    for name, content in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(json.dumps(content, indent=1))
    (out / "2_Normalize").mkdir(exist_ok=True)
    return out


_ENCODER_WORDS = tuple(" ".join((
    "the a an is are was of to and in on for with cat cats dog dogs sat mat ran park sun sky blue red",
    "man woman child eats eating food bread rice cooks cooking car drives road fast slow happy sad",
    "music plays guitar piano song reads book quiet loud river water fish swims")).split(" "))


def make_tiny_encoder_dir(path: str | Path, *, seed: int = 0, hidden_size: int = 32, num_layers: int = 2,
                          max_seq_length: int = 64) -> Path:
    """A tiny random BERT laid out as all-MiniLM-L6-v2 is (a sentence-transformers folder: mean pooling, Normalize,
    ``max_seq_length``), with a small WordPiece vocabulary of its own, so the encoder path runs with no download."""
    import json

    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast  # type: ignore[attr-defined]

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = [*specials, *_ENCODER_WORDS, *(f"##{c}" for c in letters), *letters, *".,?!"]
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(out / "vocab.txt"), do_lower_case=True, model_max_length=512)
    tokenizer.save_pretrained(out)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(vocab), hidden_size=hidden_size, num_hidden_layers=num_layers,
                        num_attention_heads=4, intermediate_size=2 * hidden_size, max_position_embeddings=128)
    BertModel(config).eval().save_pretrained(out)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
               {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]
    files = {"modules.json": modules,
             "1_Pooling/config.json": {"word_embedding_dimension": hidden_size, "pooling_mode_mean_tokens": True},
             "sentence_bert_config.json": {"max_seq_length": max_seq_length, "do_lower_case": False}}
    for name, content in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(json.dumps(content, indent=1))
    (out / "2_Normalize").mkdir(exist_ok=True)
    return out
