"""The seed's "Handling Interruptions" example; only the imports and the checkpoint name changed.

    python examples/interruption.py [CHECKPOINT]      # press Ctrl-C while it writes
"""
import signal
import sys

from qwen_stream.compat import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

CHECKPOINT = sys.argv[1] if len(sys.argv) > 1 else "qwen2.5-coder-1.5b"

# Global flag for interruption
interrupted = False

def signal_handler(sig, frame):
    global interrupted
    interrupted = True
    print("\n[Interrupting generation...]")

signal.signal(signal.SIGINT, signal_handler)

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

query = "Write a very long story"
last_response = ""

try:
    for response in model.chat_stream(
        tokenizer, query, history=None, generation_config=config
    ):
        if interrupted:
            print("\n[Generation stopped by user]")
            break

        print(f"\rQwen: {response}", end="", flush=True)
        last_response = response
except KeyboardInterrupt:
    print("\n[Generation interrupted]")

print(f"\n\nLast response: {last_response[:100]}...")
