"""Which sequences run each step: admission into KV slots, prefill chunks, batched decode, prefix reuse, the KV budget."""
