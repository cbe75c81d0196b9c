"""A `ModelRunner` on llama.cpp (through llama-cpp-python's low-level C API) for GGUF files.

One llama.cpp context holds every slot's KV cache: slot ``s`` is llama.cpp sequence id ``s``. A step's chunks
(prefill chunks and decode tokens of many sequences) go into ONE ``llama_decode`` call, split only when the step
holds more than ``n_batch`` tokens; the logits rows that are asked for come back as one float32 tensor.

KV layout: one KV stream per sequence (llama.cpp's non-unified cache, ``max_seq_len`` cells for each slot), so
``max_seq_len`` is a real per-slot guarantee and a sequence's attention reads only its own cells. The unified pool
(one set of cells shared by all sequences) makes every token attend over every sequence's cells, masked: with
prefix reuse keeping finished conversations in their slots, 12 idle slots of 800 tokens made SmolLM2's one-stream
decode step 16.1 ms instead of 10.1 (12 streams without cached slots: 64.6 vs 63.5 ms, no loss). The price:
llama.cpp splits a step that mixes a prefill with decodes into micro-batches of equal token counts, so such a step
(one per admitted prompt chunk) runs two or more graphs instead of one.

With ``kv_budget`` the context is llama.cpp's unified cache instead: one pool of ``kv_budget`` cells that every
slot draws from (``llama-server -c N`` sizes the same pool), so memory follows the total the work needs rather than
slots x window; the scheduler keeps the cells in use within the pool, evicting idle slots' cached prefixes first.
``kv_type="q8_0"`` stores keys and values as 8-bit blocks (half of f16), as ``llama-server -ctk q8_0 -ctv q8_0``.

Cache reuse (``shift_kv``, llamacpp_shift.py): a slot's cached runs move to new positions (``can_shift_kv``: what
``llama_memory_can_shift`` says of the model), and on the unified cache tokens can also be computed in a gap before
them (``can_fill_kv``), on one scratch sequence id past the slots'.

The fast prefill (``attach_prefill``, llamacpp_prefill.py): on the unified cache, prompt chunks marked ``fast`` get
their K/V from int8 GEMMs in PyTorch (int8_prefill.py), written into the slot's cells before the step's decode.

Embeddings (``forward_with_hidden``): the chunks of pooled requests go through their own ``llama_decode`` calls in
the same step, with the context's embeddings output switched on (``llama_set_embeddings``) and its pooling set to
none, so llama.cpp hands back every token's final hidden state (``llama_get_embeddings``, batch order) and the
engine pools them itself, across chunks (llama.cpp's own pooling sees one micro-batch only). In that mode every
token is an output, so those calls never carry a generating request's chunk.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from qwen_stream.cpu import has_amx, physical_cores
from qwen_stream.engine.runners.base import KVShift, SeqChunk, check_kv_shift
from qwen_stream.engine.runners.kv_cache import SlotTable
from qwen_stream.engine.runners.llamacpp_batch import BatchBuffers, decode_groups, flatten
from qwen_stream.engine.runners.llamacpp_prefill import FastPrefill
from qwen_stream.engine.runners.llamacpp_setup import gguf_pooling, init_backend, quiet_logs
from qwen_stream.engine.runners.llamacpp_shift import drop_and_move, fill_gap
from qwen_stream.engine.runners.llamacpp_state import SavedStates

if TYPE_CHECKING:
    from qwen_stream.engine.runners.int8_prefill import Int8Prefill

# KV cache element types: enum ggml_type F16 = 1 (llama.cpp's default), Q8_0 = 8 (half the memory)
KV_TYPES: dict[str | None, int] = {None: 1, "f16": 1, "q8_0": 8}
_INSTALL_HINT = (
    "llama-cpp-python is not installed, so GGUF files cannot run on llama.cpp: "
    "pip install 'qwen-stream[llama]' (it builds from source, about 8-9 minutes on 2 cores)"
)


def import_llama_cpp() -> ModuleType:
    """The low-level binding module ``llama_cpp.llama_cpp``; ImportError with an install hint if missing."""
    try:
        from llama_cpp import llama_cpp as ll
    except ImportError as exc:  # also covers a broken shared library (OSError is wrapped by llama_cpp)
        raise ImportError(_INSTALL_HINT) from exc
    return ll


def safe_model_params(make_default: Callable[[], Any]) -> Any:
    """llama.cpp's default model parameters (from ``make_default``), less what crashes on this CPU.

    llama.cpp's AMX buffer type (chosen on AMX CPUs for repacked weights) crashes in ggml_backend_amx_mul_mat on the
    first multi-token batch (llama-cpp-python 0.3.36, a 2-core Sapphire Rapids VM, SmolLM2 Q4_1 and Qwen Q4_K_M
    alike); plain CPU buffers run correctly."""
    params = make_default()
    if has_amx():
        params.use_extra_bufts = False
    return params


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


class LlamaCppRunner(SavedStates):
    """Runs a GGUF model on llama.cpp; see the module docstring for the KV layout.

    ``forward`` returns a view of a buffer the runner reuses: the logits stay valid until the next ``forward``.
    ``threads`` defaults to the physical cores; ``flash_attn`` None lets llama.cpp decide; with
    ``limit_torch_threads`` (default) torch's intra-op pool is set to one thread (process-wide), because its
    spinning workers steal the cores ggml needs while torch only samples here.
    """

    name = "llamacpp"
    can_rewind = True  # a chunk may start inside a slot's cached part: the scheduler reuses prefixes
    prefill_always = False  # with a fast prefill attached: every eligible chunk takes it (prefill_setup.py)
    fast_prefill_coming = False  # a fast prefill is attached or being built for this runner (prefill_setup.py)

    def __init__(self, gguf_path: str | os.PathLike[str], *, max_slots: int = 16, max_seq_len: int = 4096,
                 threads: int | None = None, n_batch: int = 512, flash_attn: bool | None = None,
                 limit_torch_threads: bool = True, verbose: bool = False, kv_budget: int | None = None,
                 kv_type: str | None = None) -> None:
        self.max_slots = _positive_int("max_slots", max_slots)
        requested_len = _positive_int("max_seq_len", max_seq_len)
        # kv_budget: one pool of that many KV cells shared by every slot (llama.cpp's unified cache, as
        # `llama-server -c N`); the scheduler keeps the cells in use within it. None: one stream of max_seq_len
        # cells per slot, allocated up front (max_slots x max_seq_len).
        self.kv_budget = None if kv_budget is None else _positive_int("kv_budget", kv_budget)
        if kv_type not in KV_TYPES:
            raise ValueError(f"kv_type must be one of {', '.join(k for k in KV_TYPES if k)}, got {kv_type!r}")
        self.kv_type = kv_type
        self.n_batch = _positive_int("n_batch", n_batch)
        self.threads = physical_cores() if threads is None else _positive_int("threads", threads)
        self.flash_attn = flash_attn  # None: llama.cpp decides (on for the CPU backend)
        path = Path(gguf_path)
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file not found: {path}")
        self.gguf_path = path
        self._ll = import_llama_cpp()
        most = int(self._ll.llama_max_parallel_sequences())
        if self.max_slots > most:
            raise ValueError(f"max_slots must be <= {most} (llama.cpp's sequence limit), got {self.max_slots}")
        # the unified cache fills gaps on a scratch sequence id past the slots' (llamacpp_shift.py)
        self._scratch = self.kv_budget is not None and self.max_slots < most  # its id: max_slots
        quiet_logs(self._ll, verbose)
        init_backend(self._ll)
        self._model: Any = None
        self._ctx: Any = None
        self._model = self._load_model(path)
        try:
            self.n_ctx_train = int(self._ll.llama_model_n_ctx_train(self._model))
            # positions past the training window give garbage, so the window we promise stops there
            self.max_seq_len = min(requested_len, self.n_ctx_train) if self.n_ctx_train > 0 else requested_len
            self.max_seq_len = min(self.max_seq_len, self.kv_budget or self.max_seq_len)
            self._ctx = self._new_context()
            self._mem = self._ll.llama_get_memory(self._ctx)
            self.can_shift_kv = bool(self._ll.llama_memory_can_shift(self._mem))  # cache reuse: move cached runs
            self.can_fill_kv = self.can_shift_kv and self._scratch  # ... and compute gaps before them
            self.vocab_size = int(self._ll.llama_vocab_n_tokens(self._ll.llama_model_get_vocab(self._model)))
            self.embedding_width = int(self._ll.llama_model_n_embd(self._model))
            # an embedding GGUF says how it pools (and its architecture tells Qwen3-Embedding's conventions)
            self.architecture, self.default_pooling = gguf_pooling(self._ll, self._model)
        except BaseException:
            self.close()
            raise
        self._torch_threads_before: int | None = None
        if limit_torch_threads:
            # torch only samples rows of logits next to this runner, and its idle intra-op workers spin on the
            # cores ggml computes on: measured on 2 cores, 1 ggml thread, 30 -> 19 ms CPU per SmolLM2 step.
            # close() gives the old setting back.
            self._torch_threads_before = torch.get_num_threads()
            torch.set_num_threads(1)
        self._buffers = BatchBuffers(self._ll, self.n_batch, self.max_slots + 1)  # + the scratch sequence
        self._slots = SlotTable(self.max_slots, self.max_seq_len)  # positions held in each slot's KV cache
        self._logits = torch.empty(self.max_slots, self.vocab_size, dtype=torch.float32)
        self._fast: FastPrefill | None = None  # attach_prefill: prompt chunks' K/V from int8 GEMMs

    # --- set-up ---------------------------------------------------------------------------------------------

    def _load_model(self, path: Path) -> Any:
        params = safe_model_params(self._ll.llama_model_default_params)
        model = self._ll.llama_model_load_from_file(str(path).encode(), params)
        if not model:
            raise ValueError(f"llama.cpp could not load {path} (not a GGUF file, or an unsupported architecture)")
        return model

    def _new_context(self) -> Any:
        params = self._ll.llama_context_default_params()
        params.n_ctx = self.kv_budget or self.max_slots * self.max_seq_len
        params.n_seq_max = self.max_slots + int(self._scratch)
        params.kv_unified = self.kv_budget is not None  # else one KV stream per slot: see the module docstring
        if self.kv_type is not None:
            params.type_k = params.type_v = KV_TYPES[self.kv_type]
        params.n_batch = self.n_batch
        params.n_ubatch = self.n_batch  # one graph per llama_decode when the step fits in n_batch
        params.n_threads = self.threads
        params.n_threads_batch = self.threads
        params.no_perf = True
        params.pooling_type = 0  # LLAMA_POOLING_TYPE_NONE: hidden states per token; the engine pools (docstring)
        if self.flash_attn is not None:
            params.flash_attn_type = int(self.flash_attn)  # LLAMA_FLASH_ATTN_TYPE_DISABLED = 0, ENABLED = 1
        ctx = self._ll.llama_init_from_model(self._model, params)
        if not ctx:
            raise MemoryError(f"llama.cpp could not create a context of {params.n_ctx} KV cells "
                              f"({self.max_slots} slots x {self.max_seq_len} positions): lower them")
        return ctx

    # --- ModelRunner ----------------------------------------------------------------------------------------

    def forward(self, chunks: Sequence[SeqChunk]) -> torch.Tensor:
        """One step for every chunk; float32 logits [rows, vocab] in chunk order (a reused buffer); a chunk owns
        ``logit_rows`` rows, its last n_logits positions in order."""
        return self._step(chunks)[0]

    def forward_with_hidden(self, chunks: Sequence[SeqChunk]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``forward``'s logits, and for each ``hidden`` chunk (chunk order) its tokens' final hidden states,
        float32 [len(token_ids), embedding_width], from a decode in embeddings mode (see the module docstring)."""
        return self._step(chunks)

    def _step(self, chunks: Sequence[SeqChunk]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if self._ctx is None:
            raise RuntimeError("LlamaCppRunner is closed")
        if not chunks:
            return self._logits[:0], []
        self._slots.check(chunks, self.vocab_size)
        self._trim(chunks)
        if self._fast is not None and any(c.fast for c in chunks):
            chunks = self._fast.run(chunks, self._slots)  # fast chunks' K/V computed into their slots
            if not chunks:
                return self._logits[:0], []
        rows = [c.logit_rows for c in chunks]
        first_row = np.cumsum(rows) - rows  # a chunk's first logits row in what we return
        n_out = int(sum(rows))
        if n_out > self._logits.shape[0]:
            self._logits = torch.empty(n_out, self.vocab_size, dtype=torch.float32)
        states: dict[int, torch.Tensor] = {}
        for group, embeddings in decode_groups(chunks):
            self._run_group(chunks, group, first_row, embeddings, states)
        for chunk in chunks:
            self._slots.advance(chunk)
        return self._logits[:n_out], [states[i] for i, c in enumerate(chunks) if c.hidden]

    def _run_group(self, chunks: Sequence[SeqChunk], group: list[int], first_row: np.ndarray, embeddings: bool,
                   states: dict[int, torch.Tensor]) -> None:
        """Decode the chunks ``group`` (indices, in slot order) in n_batch pieces; with ``embeddings`` every token
        is an output and the hidden states of the group's ``hidden`` chunks go into ``states``."""
        picked = [chunks[i] for i in group]
        tokens, pos, seq, want = flatten(picked)
        dest = torch.tensor([int(first_row[i]) + j for i in group for j in range(chunks[i].logit_rows)],
                            dtype=torch.long)
        hidden = torch.empty(len(tokens), self.embedding_width, dtype=torch.float32) if embeddings else None
        if embeddings:
            self._ll.llama_set_embeddings(self._ctx, True)
        try:
            row = 0
            for start in range(0, len(tokens), self.n_batch):
                end = start + self.n_batch
                row = self._decode(tokens[start:end], pos[start:end], seq[start:end], want[start:end], row, dest,
                                   None if hidden is None else hidden[start:end])
        finally:
            if embeddings:
                self._ll.llama_set_embeddings(self._ctx, False)
        if hidden is not None:
            parts = torch.split(hidden, [len(c.token_ids) for c in picked])
            states.update((i, part) for i, part in zip(group, parts, strict=True) if chunks[i].hidden)

    def free_slot(self, slot: int) -> None:
        """Drop the slot's KV cells; the next sequence in this slot starts at position 0."""
        self._slots.check_slot(slot)
        if self._ctx is None:
            return
        self._ll.llama_memory_seq_rm(self._mem, slot, -1, -1)  # removing a whole sequence never fails
        self._slots.free(slot)

    def copy_prefix(self, src: int, dst: int, length: int) -> None:
        """Slot dst takes the first ``length`` positions of slot src's KV (a shared system prompt, say).

        With one KV stream per slot llama.cpp copies the whole stream (a memcpy of max_seq_len cells per layer,
        queued until the next llama_decode); the positions past ``length`` are then dropped from dst.
        """
        if self._ctx is None:
            raise RuntimeError("LlamaCppRunner is closed")
        self._slots.copy_prefix(src, dst, length)  # checks, then records dst's new length
        self._ll.llama_memory_seq_rm(self._mem, dst, -1, -1)
        self._ll.llama_memory_seq_cp(self._mem, src, dst, -1, -1)  # cross-stream copies must be whole
        self._ll.llama_memory_seq_rm(self._mem, dst, length, -1)

    # --- the fast prefill (llamacpp_prefill.py) ------------------------------------------------------------------

    @property
    def can_fast_prefill(self) -> bool:
        """Whether computed K/V can be handed to this cache: the unified cache (a scratch sequence) in float16."""
        return self._scratch and self.kv_type in (None, "f16")

    @property
    def n_params(self) -> int:
        return int(self._ll.llama_model_n_params(self._model))

    @property
    def fast_prefill_ready(self) -> bool:
        """Whether chunks marked ``fast`` run on the int8 prefill now (attached, and its layout not refused)."""
        return self._fast is not None and self._fast.broken is None

    def attach_prefill(self, compute: Int8Prefill) -> None:
        """From the next step, chunks marked ``fast`` get their K/V from ``compute`` (may be called from another
        thread: one assignment the engine's thread sees whole)."""
        if not self.can_fast_prefill:
            raise ValueError("the fast prefill needs the unified KV cache (kv_budget) in float16")
        if self._ctx is not None:
            self._fast = FastPrefill(self._ll, self._ctx, self._mem, self.max_slots, compute)
            self.fast_prefill_coming = True

    def shift_kv(self, shift: KVShift) -> None:
        """Cache reuse: the slot keeps ``shift.keep`` positions, its cached runs move to their new places and the
        fills are computed in the gaps before them (llamacpp_shift.py); it then holds ``shift.served`` positions."""
        if self._ctx is None:
            raise RuntimeError("LlamaCppRunner is closed")
        if not self.can_shift_kv or (shift.fills and not self.can_fill_kv):
            raise ValueError("this llama.cpp context cannot move KV cells" if not self.can_shift_kv else
                             "only the unified cache (kv_budget) computes tokens in a gap of a slot's KV")
        self._slots.check_slot(shift.slot)
        check_kv_shift(shift, self._slots.lengths[shift.slot], self.max_seq_len)
        drop_and_move(self._ll, self._mem, shift)
        for fill in sorted(shift.fills, key=lambda f: f.start_pos):
            fill_gap(self._ll, self._mem, fill, self.max_slots, self._decode_on)
        self._slots.lengths[shift.slot] = shift.served

    def _decode_on(self, chunk: SeqChunk, seq_id: int) -> None:
        """Decode a chunk that wants no logits on llama.cpp sequence ``seq_id``, in n_batch pieces."""
        tokens, pos, _, want = flatten([chunk])
        seq = np.full(len(tokens), seq_id, dtype=np.int32)
        nowhere = torch.empty(0, dtype=torch.long)
        for start in range(0, len(tokens), self.n_batch):
            end = start + self.n_batch
            self._decode(tokens[start:end], pos[start:end], seq[start:end], want[start:end], 0, nowhere)

    def close(self) -> None:
        """Free the context and the weights (idempotent)."""
        self._fast = None
        if self._ctx is not None:
            self._ll.llama_free(self._ctx)
            self._ctx = None
        if self._model is not None:
            self._ll.llama_model_free(self._model)
            self._model = None
        before = getattr(self, "_torch_threads_before", None)
        if before:
            torch.set_num_threads(before)
            self._torch_threads_before = None

    # --- helpers --------------------------------------------------------------------------------------------

    def slot_length(self, slot: int) -> int:
        """How many positions the slot's KV cache holds (what the next chunk's start_pos must not exceed)."""
        self._slots.check_slot(slot)
        return self._slots.lengths[slot]

    def _trim(self, chunks: Sequence[SeqChunk]) -> None:
        """When a chunk restarts inside a slot's cached part (prefix reuse), drop the cells it replaces."""
        for chunk in chunks:
            if chunk.start_pos < self._slots.lengths[chunk.slot]:
                self._ll.llama_memory_seq_rm(self._mem, chunk.slot, chunk.start_pos, -1)
                self._slots.lengths[chunk.slot] = chunk.start_pos

    def _decode(self, tokens: np.ndarray, pos: np.ndarray, seq: np.ndarray, want: np.ndarray, row: int,
                dest: torch.Tensor, hidden: torch.Tensor | None = None) -> int:
        """One llama_decode. Its logits rows are rows ``row``, ``row + 1``, ... of the step in slot order; each is
        copied to ``self._logits[dest[i]]``, its place in chunk order. Returns the step's next row. With ``hidden``
        (embeddings mode: every token an output) every token's hidden state is copied there too."""
        self._buffers.fill(tokens, pos, seq, want if hidden is None else np.ones(len(tokens), np.int8))
        self._check_status(self._ll.llama_decode(self._ctx, self._buffers.batch), len(tokens))
        n = int(want.sum())
        if n:
            # llama.cpp packs the output rows contiguously in batch order; its buffer is overwritten by the
            # next decode, so copy it out now (one memcpy-like copy into our reused tensor)
            pointer = self._ll.llama_get_logits(self._ctx)
            if hidden is None:
                rows = np.ctypeslib.as_array(pointer, shape=(n, self.vocab_size))
            else:  # every token has a row: keep the wanted ones
                rows = np.ctypeslib.as_array(pointer, shape=(len(tokens), self.vocab_size))[want.astype(bool)]
            self._logits.index_copy_(0, dest[row:row + n], torch.from_numpy(rows))
        if hidden is not None:
            pointer = self._ll.llama_get_embeddings(self._ctx)
            hidden.copy_(torch.from_numpy(np.ctypeslib.as_array(pointer, shape=(len(tokens), self.embedding_width))))
        return row + n

    @staticmethod
    def _check_status(status: int, n_tokens: int) -> None:
        if status != 0:
            reason = "no free KV cells" if status == 1 else f"status {status}"
            raise RuntimeError(f"llama_decode failed ({reason}) on a batch of {n_tokens} tokens")

    def __enter__(self) -> LlamaCppRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown: the binding may already be gone
            self.close()
