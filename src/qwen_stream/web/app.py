"""The Gradio chat page: one shared ChatModel, any number of browser sessions batched by its engine.

Handlers are async generators over `model.astream(...)`, so each answer is an asyncio task on Gradio's loop;
Stop, Clear and Undo cancel that task (Gradio's `cancels=`), the CancelledError reaches the stream and the
engine drops the request at its next step. Cancellation is per browser session: one user's Stop never touches
another's answer.

One answer at a time per browser session: while it streams, Send and Regenerate are disabled and Enter in the
box is refused with a notice (the text stays there to send later). A per-session State says "answering"; the
step that starts an answer sets it, and `.then(finish)` clears it, which Gradio runs after the answer ends,
fails or is cancelled (Stop, Clear, Undo, the chat's trash icon).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gradio as gr

from qwen_stream.errors import EngineError, EngineOverloadedError
from qwen_stream.web.chat_logic import (
    Message,
    StillAnsweringError,
    accept_query,
    pop_last_turn,
    sampling_overrides,
    start_turn,
    thinking_block,
    to_pairs,
)

if TYPE_CHECKING:
    from fastapi import FastAPI

    from qwen_stream.api import ChatModel

TITLE = "qwen-stream chat"
# System fonts only: the default theme fetches Google Fonts, which an offline machine cannot reach.
_FONTS = ["ui-sans-serif", "system-ui", "Noto Sans", "Noto Sans CJK SC", "sans-serif", "Noto Color Emoji"]
_MONO_FONTS = ["ui-monospace", "DejaVu Sans Mono", "monospace"]
_CSS = "#qs-chatbot { flex-grow: 1; } footer { display: none !important; }"


@dataclass(frozen=True, slots=True)
class WebDefaults:
    """Initial values of the page's controls (None: the model's own default)."""

    system: str = ""
    temperature: float | None = None
    top_p: float | None = None
    max_new_tokens: int | None = None
    seed: int = -1  # -1: a new random seed per answer


def page_options() -> dict[str, Any]:
    """Theme and CSS, given to launch() or mount_gradio_app() (Gradio 6 takes them there, not in Blocks)."""
    theme = gr.themes.Soft(font=_FONTS, font_mono=_MONO_FONTS)
    return {"theme": theme, "css": _CSS}


class WebChat:
    """The event handlers, bound to one model."""

    def __init__(self, model: ChatModel) -> None:
        self.model = model

    async def respond(self, query: str, messages: list[Message] | None, system: str, temperature: float,
                      top_p: float, max_new_tokens: float, seed: float | None,
                      thinking: bool = True) -> AsyncIterator[list[Message]]:
        """Stream the answer to `query` into the chat; cancelling this generator aborts the engine request.

        A thinking model's reasoning streams into a collapsible "Thinking" block above the answer."""
        query = (query or "").strip()
        if not query:
            return
        try:
            params = self.model.sampling_params(**sampling_overrides(temperature, top_p, max_new_tokens, seed))
            stream = self.model.astream(query, history=to_pairs(messages), system=system.strip() or None,
                                        params=params, thinking=bool(thinking))
        except EngineOverloadedError:
            raise gr.Error("The model is busy with other chats; try again in a moment.") from None
        except (ValueError, TypeError, EngineError) as exc:
            raise gr.Error(str(exc)) from None
        if stream.prompt_info.dropped_turns:
            gr.Info(f"{stream.prompt_info.dropped_turns} oldest turn(s) no longer fit the context window "
                    "and were left out.")
        chat = start_turn(messages, query)
        yield chat
        thought = None  # index of this answer's Thinking block, once reasoning arrives
        try:
            async for event in stream:
                if event.reasoning_delta:
                    if thought is None:
                        thought = len(chat) - 1
                        chat.insert(thought, thinking_block("", done=False))
                    chat[thought] = thinking_block(event.reasoning, done=False)
                if thought is not None and (event.delta or event.finished):
                    chat[thought] = thinking_block(event.reasoning, done=True)
                if event.delta:
                    chat[-1]["content"] = event.text
                if event.delta or event.reasoning_delta or event.finished:
                    yield chat
        finally:
            await stream.aclose()  # a no-op after a normal end; aborts on Stop, Clear, Undo or a closed tab

    @staticmethod
    def take_query(query: str, answering: bool) -> tuple[str, str, bool, Any, Any]:
        """Empty the input box at once and hand the question on; refuse while this tab's answer streams.

        Outputs: the box, the pending question, the answering flag, the Send and Regenerate buttons. Raising
        stops the chain (it continues with `.success`), so a refused question never reaches respond().
        """
        try:
            question = accept_query(query, answering)
        except StillAnsweringError as exc:
            raise gr.Error(str(exc), title="Still answering", print_exception=False) from None
        if not question:  # Enter on an empty box: nothing to do, and no notice either
            raise gr.Error("empty question", visible=False, print_exception=False)
        return "", question, True, *_buttons(interactive=False)

    @staticmethod
    def for_regenerate(messages: list[Message] | None, answering: bool) -> tuple[list[Message], str, bool, Any, Any]:
        if answering:  # the button is disabled then; this covers a click that raced the disabling
            raise gr.Error(str(StillAnsweringError()), title="Still answering", print_exception=False)
        rest, question = pop_last_turn(messages)
        if not question:
            raise gr.Error("Nothing to regenerate yet.")
        return rest, question, True, *_buttons(interactive=False)

    @staticmethod
    def finish() -> tuple[bool, Any, Any]:
        """The answer ended (or failed, or was stopped): sending is open again."""
        return False, *_buttons(interactive=True)

    @staticmethod
    def undo(messages: list[Message] | None, current_input: str) -> tuple[list[Message], str]:
        """Drop the last turn and give its question back to the input box to edit."""
        rest, question = pop_last_turn(messages)
        return rest, question or current_input

    @staticmethod
    def clear() -> tuple[list[Message], str]:
        return [], ""


def _buttons(*, interactive: bool) -> tuple[Any, Any]:
    """Updates for the Send and Regenerate buttons."""
    return gr.update(interactive=interactive), gr.update(interactive=interactive)


def _header(model: ChatModel) -> str:
    return (f"## {TITLE}\nModel **`{model.name}`** · context {model.context_length} tokens · "
            "answers stream in; **Stop** ends one at once.")


def build_demo(model: ChatModel, defaults: WebDefaults | None = None) -> gr.Blocks:
    """The chat page for `model`. Launch it, or mount it on a FastAPI app with `mount_web`."""
    defaults = defaults or WebDefaults()
    base = model.default_params
    handlers = WebChat(model)
    max_tokens_cap = model.inputs.longest_answer
    with gr.Blocks(title=TITLE, fill_height=True) as demo:
        gr.Markdown(_header(model), elem_id="qs-header")
        with gr.Row(equal_height=False):
            with gr.Column(scale=4):
                chatbot = gr.Chatbot(elem_id="qs-chatbot", label=model.name, height=520, buttons=["copy"])
                with gr.Row():
                    # lines=1 (growing to 10): Gradio then sends on Enter; with lines > 1 only Shift+Enter sends
                    query = gr.Textbox(placeholder="Ask something… (Enter sends, Shift+Enter for a new line)", lines=1,
                                       max_lines=10, show_label=False, scale=6, elem_id="qs-input",
                                       autofocus=True)
                    send = gr.Button("Send", variant="primary", scale=1, elem_id="qs-send")
                    stop = gr.Button("Stop", variant="stop", scale=1, elem_id="qs-stop")
                with gr.Row():
                    regenerate = gr.Button("Regenerate", elem_id="qs-regenerate")
                    undo = gr.Button("Undo", elem_id="qs-undo")
                    clear = gr.Button("Clear", elem_id="qs-clear")
            with gr.Column(scale=1, min_width=260):
                system = gr.Textbox(label="System prompt", value=defaults.system, lines=3,
                                    placeholder="(the model's default)", elem_id="qs-system")
                temperature = gr.Slider(0.0, 2.0, step=0.05, label="Temperature (0 = greedy)",
                                        value=_pick(defaults.temperature, base.temperature), elem_id="qs-temperature")
                top_p = gr.Slider(0.05, 1.0, step=0.05, label="Top-p", value=_pick(defaults.top_p, base.top_p),
                                  elem_id="qs-top-p")
                max_new_tokens = gr.Slider(1, max_tokens_cap, step=1, label="Max new tokens",
                                           value=min(max_tokens_cap, _pick(defaults.max_new_tokens,
                                                                           base.max_new_tokens)),
                                           elem_id="qs-max-new-tokens")
                seed = gr.Number(label="Seed (-1 = random)", value=defaults.seed, precision=0, elem_id="qs-seed")
                thinking = gr.Checkbox(label="Think before answering (Qwen3; others ignore it)", value=True,
                                       elem_id="qs-thinking")
        pending = gr.State("")  # the question being answered, handed from the input box to respond()
        answering = gr.State(False)  # this session has an answer streaming
        settings = [system, temperature, top_p, max_new_tokens, seed, thinking]
        gate = [answering, send, regenerate]  # what starting and finishing an answer switch
        answer_events = []
        # No concurrency limit: every session's answer runs at once and the engine batches them; past its queue
        # it refuses with EngineOverloadedError, shown as an error toast.
        for trigger in (query.submit, send.click):
            # queued (not queue=False): Gradio shows a handler's error as a notice only for queued events
            event = trigger(handlers.take_query, [query, answering], [query, pending, *gate],
                            concurrency_limit=None, show_progress="hidden")
            answer_events.append(event.success(handlers.respond, [pending, chatbot, *settings], [chatbot],
                                               concurrency_limit=None, show_progress="hidden"))
        regen = regenerate.click(handlers.for_regenerate, [chatbot, answering], [chatbot, pending, *gate],
                                 concurrency_limit=None, show_progress="hidden")
        answer_events.append(regen.success(handlers.respond, [pending, chatbot, *settings], [chatbot],
                                           concurrency_limit=None, show_progress="hidden"))
        for answer in answer_events:  # runs after the answer ends, fails, or is cancelled by any of the below
            answer.then(handlers.finish, None, gate, queue=False)
        stop.click(handlers.finish, None, gate, cancels=answer_events, queue=False)
        chatbot.clear(None, None, None, cancels=answer_events)  # the chat's own trash icon stops the answer too
        undo.click(handlers.undo, [chatbot, query], [chatbot, query], cancels=answer_events)
        clear.click(handlers.clear, None, [chatbot, query], cancels=answer_events)
    return demo


def _pick(value: Any, fallback: Any) -> Any:
    return fallback if value is None else value


def mount_web(app: FastAPI, model: ChatModel, path: str = "/web", defaults: WebDefaults | None = None) -> FastAPI:
    """Serve the chat page at `path` of an existing FastAPI app (`qwen-stream serve --web`), sharing its model."""
    if not path.startswith("/"):
        raise ValueError(f"path must start with '/', got {path!r}")
    return gr.mount_gradio_app(app, build_demo(model, defaults), path=path, **page_options())
