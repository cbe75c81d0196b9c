"""What computes logits: the runner contract, the slot KV cache, and the PyTorch and llama.cpp runners."""
