"""OpenAI's API: chat completions, completions (and FIM with suffix), models, tokenize."""
