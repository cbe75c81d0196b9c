"""The seed's "Streaming with Callbacks" example; only the imports and the checkpoint name changed.

    python examples/callbacks.py [CHECKPOINT]
"""
import sys
from typing import Callable

from qwen_stream.compat import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

CHECKPOINT = sys.argv[1] if len(sys.argv) > 1 else "qwen2.5-coder-1.5b"

class StreamingCallback:
    def __init__(self, on_token: Callable[[str], None] = None):
        self.on_token = on_token or (lambda x: None)
        self.full_text = ""

    def __call__(self, text: str):
        # Calculate new tokens
        new_text = text[len(self.full_text):]
        if new_text:
            self.on_token(new_text)
        self.full_text = text

def main():
    tokenizer = AutoTokenizer.from_pretrained(
        CHECKPOINT,
        trust_remote_code=True
    )
    model = AutoModelForCausalLM.from_pretrained(
        CHECKPOINT,
        device_map="auto",
        trust_remote_code=True
    ).eval()

    config = GenerationConfig.from_pretrained(
        CHECKPOINT,
        trust_remote_code=True
    )

    # Define callback
    def on_new_token(token: str):
        print(token, end="", flush=True)

    callback = StreamingCallback(on_token=on_new_token)

    query = "Tell me about artificial intelligence"
    print("Assistant: ", end="", flush=True)

    for response in model.chat_stream(
        tokenizer, query, history=None, generation_config=config
    ):
        callback(response)

    print()

if __name__ == "__main__":
    main()
