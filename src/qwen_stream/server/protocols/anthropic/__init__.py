"""Anthropic's Messages API: messages and count_tokens."""
