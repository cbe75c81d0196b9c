"""The seed's "Multi-turn Streaming Chat" example; only the imports and the checkpoint name changed.

    python examples/multi_turn.py [CHECKPOINT]        # type 'quit' to leave
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

history = []

while True:
    query = input("\nYou: ").strip()

    if not query:
        continue
    if query.lower() in ['quit', 'exit']:
        break

    print("Assistant: ", end="", flush=True)

    response = ""
    try:
        for response in model.chat_stream(
            tokenizer,
            query,
            history=history,
            generation_config=config
        ):
            print(f"\rAssistant: {response}", end="", flush=True)
    except KeyboardInterrupt:
        print("\n[Interrupted]")
        continue

    print()  # Newline
    history.append((query, response))

    # Optional: limit history length
    if len(history) > 10:
        history = history[-10:]

print("Goodbye!")
