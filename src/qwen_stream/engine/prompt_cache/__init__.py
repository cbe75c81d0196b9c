"""The prompt cache on disk: long prompts' KV saved under a model's key, so a restarted engine skips their prefill."""
