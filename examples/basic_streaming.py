"""The seed's "Basic Streaming" example; only the imports and the checkpoint name changed.

    python examples/basic_streaming.py [CHECKPOINT]
"""
import sys

from qwen_stream.compat import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

CHECKPOINT = sys.argv[1] if len(sys.argv) > 1 else "qwen2.5-coder-1.5b"

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

# Stream responses
query = "请给我讲一个有趣的故事"
for response in model.chat_stream(tokenizer, query, history=None, generation_config=config):
    print(f"\rQwen: {response}", end="", flush=True)

print()  # New line after completion
