"""Ranking: the Jina/Cohere rerank API (`/v1/rerank`, `/rerank`) and vLLM's `/score`."""
