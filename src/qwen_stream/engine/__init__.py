"""The engine core: token ids in, token ids out. It knows nothing of text, HTTP or terminals."""
