"""Ollama's API: chat, generate, tags, show, ps, version."""
