"""Choosing tokens from logits: per-sequence state, the batched sampler for a whole step, penalties and grammar masks."""
