"""What a served model can do, as the model lists say it (``/v1/models``, ``/api/tags``, ``/api/show``).

Ollama's names, which clients check before offering a feature: ``completion`` (it generates text), ``embedding``
(it makes embeddings), ``insert`` (fill-in-the-middle), ``tools``, ``thinking``. A request for something a model
cannot do is refused by the input processor with a 400 that says so; this list only lets clients know up front.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qwen_stream.output.message import template_thinks

if TYPE_CHECKING:
    from qwen_stream.client.loaded_model import LoadedModel


def model_capabilities(model: LoadedModel) -> list[str]:
    inputs = model.inputs
    if "generate" not in inputs.tasks:
        return ["embedding"] if "embed" in inputs.tasks else []
    prompter = inputs.prompter
    return ["completion", *(["tools"] if prompter.supports_tools else []),
            *(["thinking"] if template_thinks(prompter.template_text) else []),
            *(["insert"] if inputs.supports_fim else []),
            *(["embedding"] if "embed" in inputs.tasks else [])]
