"""Known slips in the chat templates models ship with, corrected before the model is shown the text.

Qwen2.5's template (the Instruct and Coder models and their GGUFs, e.g. the default qwen2.5-coder-1.5b alias;
tests/fixtures/chat_templates/qwen2_5.jinja) writes its tool-call example inside a Jinja string literal as
``{{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}}``. Braces in a string literal are plain text,
so the model reads the doubled braces as the format to follow, and Qwen2.5-Coder-1.5B then answers with
``{{"name": ...}}`` (mostly after a tool result). Qwen3's template writes the same line with single braces; that is
the correction made here. The tool-call parser still reads doubled braces (output/tool_calls.py) for a template
passed in by hand.
"""

from __future__ import annotations

__all__ = ["corrected_template"]

# (the template source as shipped, its correction): exact substrings of the template's own source text
_FIXES: tuple[tuple[str, str], ...] = (
    ('{{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}}',
     '{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}'),
)


def corrected_template(template: str) -> str:
    """``template`` with the known slips above corrected; unchanged when it has none."""
    for wrong, right in _FIXES:
        template = template.replace(wrong, right)
    return template
