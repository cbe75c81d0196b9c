"""The web page's event handlers called as Gradio calls them (real gradio, no browser, no model): one answer at
a time per session, and the buttons that say so."""

from __future__ import annotations

from typing import Any

import pytest

gr = pytest.importorskip("gradio", reason="gradio is not installed (pip install 'qwen-stream[web]')")

from qwen_stream.web.app import WebChat  # noqa: E402  (after the importorskip)

CHAT: list[dict[str, Any]] = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]


def _interactive(update: Any) -> bool:
    return bool(update["interactive"])


def test_a_question_starts_an_answer_and_locks_sending() -> None:
    box, pending, answering, send, regenerate = WebChat.take_query("  2+2?  ", False)
    assert (box, pending, answering) == ("", "2+2?", True)
    assert not _interactive(send) and not _interactive(regenerate)


def test_a_question_while_answering_is_refused_and_stays_in_the_box() -> None:
    with pytest.raises(gr.Error, match="still streaming") as refused:
        WebChat.take_query("a second question", True)
    assert refused.value.title == "Still answering" and refused.value.visible
    # raising is what keeps the box as typed: Gradio applies no outputs, and `.success` skips respond()


def test_an_empty_box_starts_nothing_and_says_nothing() -> None:
    with pytest.raises(gr.Error) as empty:
        WebChat.take_query("   ", False)
    assert not empty.value.visible


def test_regenerate_is_refused_while_answering_and_locks_sending_otherwise() -> None:
    with pytest.raises(gr.Error, match="still streaming"):
        WebChat.for_regenerate(CHAT, True)
    rest, question, answering, send, _ = WebChat.for_regenerate(CHAT, False)
    assert (rest, question, answering) == ([], "2+2?", True)
    assert not _interactive(send)
    with pytest.raises(gr.Error, match="Nothing to regenerate"):
        WebChat.for_regenerate([], False)


def test_finish_opens_sending_again() -> None:
    answering, send, regenerate = WebChat.finish()
    assert answering is False and _interactive(send) and _interactive(regenerate)
