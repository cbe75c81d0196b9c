"""`qwen-stream bench`: our engine against its peers, in one process, on the same model and prompts.

Light at import time: torch, transformers and llama_cpp are imported only when a system is set up.
"""
