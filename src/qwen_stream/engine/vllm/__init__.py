"""vLLM's engine behind our seam: the backend over its AsyncLLM and the plain data that crosses to it."""
