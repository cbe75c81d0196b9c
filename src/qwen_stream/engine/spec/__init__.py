"""Speculative decoding: drafts from the text itself or a draft model, the step's plan, and checking drafts."""
