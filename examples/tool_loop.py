"""A tool loop with the Python API: the model calls a tool, we run it, the model answers with its result.

    python examples/tool_loop.py [MODEL] [--runner auto|llamacpp|torch] [--dtype bfloat16]

Runs on the default model (Qwen2.5-Coder-1.5B-Instruct). Its tool calls stream as events too:
``event.tool_call_deltas`` while the call is written, ``event.tool_calls`` once it is.
"""
import argparse
import json

from qwen_stream import ChatModel

TOOLS = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city, e.g. Paris"}},
            "required": ["city"],
        },
    },
}]


def get_weather(city: str) -> dict:
    """Our "tool": a real program would call a weather service here."""
    return {"city": city, "temperature_c": 18, "sky": "sunny"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", nargs="?", default=None, help="model alias or path (default: the default model)")
    parser.add_argument("--runner", default="auto")
    parser.add_argument("--dtype", default=None, help="for the PyTorch runner: float32 (default), bfloat16")
    args = parser.parse_args()

    with ChatModel.load(args.model, runner=args.runner, dtype=args.dtype, max_batch_size=2,
                        context_length=4096) as model:
        messages = [{"role": "user", "content": "What is the weather in Paris?"}]
        answer, _ = model.chat(messages=messages, tools=TOOLS, temperature=0, max_new_tokens=128)
        if not answer.tool_calls:
            print("The model answered without calling the tool:", answer)
            return
        messages.append(answer.message())  # the assistant turn with its tool calls
        for call in answer.tool_calls:
            arguments = call.parsed_arguments()
            print(f"-> {call.name}({arguments})")
            result = get_weather(**arguments)
            messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)})
        print("Qwen: ", end="", flush=True)
        # tool_choice="none": answer from the results now (a small model may otherwise call the tool again)
        for event in model.stream(messages=messages, tools=TOOLS, tool_choice="none", temperature=0,
                                  max_new_tokens=128):
            print(event.delta, end="", flush=True)
        print()


if __name__ == "__main__":
    main()
