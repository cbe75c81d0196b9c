"""llama.cpp's ``POST /infill`` (what llama.vscode and llama.vim send): its body, the fields of ``/completion``
(protocols/llamacpp/protocol.py: sampling, ``grammar``, ``json_schema``, ``n_probs``, the editor's rules, ...) and
the gap to fill.

Fields of its own: ``input_prefix``, ``input_suffix``, ``input_extra`` (``[{filename, text}]``, other files as
context), ``prompt`` (the text before the cursor on its line, put after the prefix as llama.cpp does).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from pydantic import Field

from qwen_stream.inputs.fim import ExtraFile, FimInput
from qwen_stream.server.pipeline.bodies import Refused, StrictBody
from qwen_stream.server.protocols.llamacpp.protocol import LLAMA_REFUSED, LlamaSampling


class InputChunk(StrictBody):
    text: str
    filename: str = "tmp"  # llama.cpp's name for a chunk without one


class InfillRequest(LlamaSampling):
    REFUSED: ClassVar[Mapping[str, Refused]] = {
        **LLAMA_REFUSED, "spm_infill": Refused("the suffix-prefix-middle order is not supported", (False,))}

    input_prefix: str
    input_suffix: str
    input_extra: list[InputChunk] = Field(default_factory=list)
    prompt: str = ""

    def fim_input(self) -> FimInput:
        """llama.cpp's layout: the other files as context, then the current file with ``prompt`` after the prefix."""
        extra = tuple(ExtraFile(c.filename, c.text) for c in self.input_extra)
        return FimInput(self.input_prefix, self.input_suffix, repo_level=True, prompt=self.prompt, extra=extra)
