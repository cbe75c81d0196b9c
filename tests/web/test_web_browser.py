"""The Gradio chat page in a real headless Chromium (Playwright driving Debian's /usr/bin/chromium), against the
real app on loopback with the tiny random qwen2 model and the real Qwen tokenizer.

The page runs in this process, so the tests can look at the engine itself: after Stop it has no running request.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from qwen_stream.engine.loop import wait_idle

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
OUTPUT_DIR = Path(__file__).resolve().parents[2] / "test-output"
QUESTION = "请给我讲一个有趣的故事 🤖"
BOT = "#qs-chatbot .message-row.bot-row"  # Gradio 6 chatbot rows
USER = "#qs-chatbot .message-row.user-row"

if not os.path.exists(CHROMIUM):
    pytest.skip(f"no Chromium at {CHROMIUM} (Debian package `chromium`)", allow_module_level=True)
playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
pytest.importorskip("gradio", reason="gradio is not installed (pip install 'qwen-stream[web]')")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until(condition: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="module")
def web_model(tiny_model_dir: Path) -> Iterator[Any]:
    """Its own model with a long context, so an answer lasts long enough to be stopped by a click."""
    from qwen_stream.api import ChatModel

    model = ChatModel.load(str(tiny_model_dir), runner="torch", context_length=4096, progress=False)
    yield model
    model.close()


@pytest.fixture(autouse=True)
def no_leftover_answers(web_model: Any) -> Iterator[None]:
    """A test that fails mid-answer must not leave it running into the next test's counts."""
    yield
    if web_model.engine.abort_all():
        assert wait_idle(web_model.engine)


@pytest.fixture(scope="module")
def web_url(web_model: Any) -> Iterator[str]:
    from qwen_stream.web.app import build_demo, page_options

    demo = build_demo(web_model)
    demo.queue(default_concurrency_limit=None)
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **page_options())
    yield f"http://127.0.0.1:{port}/"
    demo.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def page(browser: Any, web_url: str) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    _open(tab, web_url)
    yield tab
    context.close()


def _open(tab: Any, url: str) -> None:
    tab.goto(url)
    tab.wait_for_selector("#qs-input textarea", timeout=60_000)


def _set_max_tokens(tab: Any, value: int) -> None:
    box = tab.locator("#qs-max-new-tokens input[type=number]")
    box.fill(str(value))
    box.press("Enter")
    box.blur()


def _ask(tab: Any, question: str, *, press_enter: bool = False) -> None:
    box = tab.locator("#qs-input textarea")
    box.fill(question)
    if press_enter:
        box.press("Enter")
    else:
        tab.locator("#qs-send").click()


def _bot_text(tab: Any) -> str:
    rows = tab.locator(BOT)
    return str(rows.last.inner_text()) if rows.count() else ""


def _running(model: Any) -> int:
    return int(model.engine.stats().running)


def test_answer_streams_in_and_stop_stops_the_engine(page: Any, web_model: Any) -> None:
    assert web_model.name in page.locator("#qs-header").inner_text()  # the model name is shown
    _set_max_tokens(page, 3500)
    _ask(page, QUESTION)
    _wait_until(lambda: _running(web_model) == 1, what="the request to reach the engine")
    first = _wait_until(lambda: len(_bot_text(page)) > 5 and _bot_text(page), what="the first words")
    _wait_until(lambda: len(_bot_text(page)) > len(first) + 10, what="the answer to grow")
    page.locator("#qs-stop").click()
    _wait_until(lambda: _running(web_model) == 0, timeout=5, what="the engine to drop the request")
    stopped = _bot_text(page)
    time.sleep(1.0)
    assert _bot_text(page) == stopped, "the answer kept growing after Stop"
    assert page.locator("#qs-input textarea").input_value() == ""
    assert QUESTION in page.locator(USER).last.inner_text()  # Chinese and emoji come back intact
    OUTPUT_DIR.mkdir(exist_ok=True)
    page.screenshot(path=str(OUTPUT_DIR / "web-chat.png"), full_page=True)
    page.locator("#qs-clear").click()
    _wait_until(lambda: page.locator(f"{BOT}, {USER}").count() == 0, timeout=5, what="Clear to empty the chat")


def test_a_second_question_waits_while_an_answer_streams(page: Any, web_model: Any) -> None:
    _set_max_tokens(page, 3500)
    _ask(page, "First, a long answer")
    _wait_until(lambda: _running(web_model) == 1 and len(_bot_text(page)) > 5, what="the answer to start")
    assert page.locator("#qs-send").is_disabled() and page.locator("#qs-regenerate").is_disabled()
    _ask(page, "Second question", press_enter=True)  # Enter still works in the box: it is refused, visibly
    time.sleep(1.0)
    assert _running(web_model) == 1, "a second answer started in the same tab"
    assert page.locator(USER).count() == 1
    assert page.locator("#qs-input textarea").input_value() == "Second question"  # kept to send later
    # generous: on a loaded machine the browser is busy re-rendering the growing answer
    page.get_by_text("still streaming").first.wait_for(timeout=20_000)
    # The page is re-rendering a long answer and a toast: a click's actionability checks (visible, stable, scrolled
    # into view) waited out their 30 s on a loaded machine, twice. The button's own click event, dispatched on it,
    # is what Gradio listens to; it can still reach Gradio late (once >5 s in CI); the engine's own abort takes one
    # step (tests/engine)
    page.locator("#qs-stop").dispatch_event("click")
    _wait_until(lambda: _running(web_model) == 0, timeout=15, what="Stop to end the answer")
    _wait_until(lambda: page.locator("#qs-send").is_enabled(), timeout=5, what="Send to open again after Stop")
    _set_max_tokens(page, 8)
    page.locator("#qs-send").click()
    _wait_until(lambda: page.locator(USER).count() == 2 and _running(web_model) == 0
                and page.locator("#qs-send").is_enabled(), what="the second question's short answer")
    assert "Second question" in page.locator(USER).last.inner_text()
    assert page.locator("#qs-regenerate").is_enabled()  # opened again by a normal end too


def test_undo_and_regenerate(page: Any, web_model: Any) -> None:
    _set_max_tokens(page, 12)
    page.locator("#qs-seed input").fill("7")
    _ask(page, "Undo me", press_enter=True)  # Enter sends
    _wait_until(lambda: page.locator(BOT).count() == 1 and _running(web_model) == 0 and _bot_text(page),
                what="a short answer")
    answer = _bot_text(page)
    page.locator("#qs-regenerate").click()
    time.sleep(0.5)
    _wait_until(lambda: _running(web_model) == 0 and page.locator(BOT).count() == 1, what="the regenerated answer")
    assert page.locator(USER).count() == 1
    assert _bot_text(page) == answer  # same seed, same question: the same answer again
    page.locator("#qs-undo").click()
    _wait_until(lambda: page.locator(f"{BOT}, {USER}").count() == 0, timeout=5, what="Undo to remove the turn")
    assert page.locator("#qs-input textarea").input_value() == "Undo me"  # back in the box to edit


def test_two_sessions_batch_and_stop_separately(browser: Any, web_url: str, web_model: Any) -> None:
    contexts = [browser.new_context() for _ in range(2)]
    try:
        tabs = [context.new_page() for context in contexts]
        for tab in tabs:
            tab.bring_to_front()
            _open(tab, web_url)
            _set_max_tokens(tab, 3500)
        for tab in tabs:
            tab.bring_to_front()
            _ask(tab, "Tell me a long story")
        _wait_until(lambda: _running(web_model) == 2, what="both answers in the engine at once")
        _wait_until(lambda: all(len(_bot_text(tab)) > 5 for tab in tabs), what="both answers to start")
        tabs[0].bring_to_front()  # a background tab gets no animation frames, which clicks wait for
        # the click event itself, as in the test above: a click's actionability checks timed out on a page busy
        # re-rendering two long answers (one full run in three on a loaded machine)
        tabs[0].locator("#qs-stop").dispatch_event("click")
        _wait_until(lambda: _running(web_model) == 1, timeout=15, what="only the first answer to stop")
        growing = len(_bot_text(tabs[1]))
        _wait_until(lambda: len(_bot_text(tabs[1])) > growing + 10, what="the other answer to keep growing")
        tabs[1].bring_to_front()
        tabs[1].locator("#qs-stop").dispatch_event("click")
        _wait_until(lambda: _running(web_model) == 0, timeout=15, what="the second answer to stop")
    finally:
        for context in contexts:
            context.close()


def test_closing_the_tab_aborts_its_answer(browser: Any, web_url: str, web_model: Any) -> None:
    context = browser.new_context()
    tab = context.new_page()
    _open(tab, web_url)
    _set_max_tokens(tab, 3500)
    _ask(tab, "A long answer nobody will read")
    _wait_until(lambda: _running(web_model) == 1 and len(_bot_text(tab)) > 5, what="the answer to start")
    context.close()
    _wait_until(lambda: _running(web_model) == 0, timeout=20, what="the engine to drop the abandoned answer")


def test_mounted_on_a_fastapi_app(browser: Any, web_model: Any) -> None:
    """`qwen-stream serve --web`: the page at /web on an existing FastAPI app, same model."""
    import uvicorn
    from fastapi import FastAPI

    from qwen_stream.web.app import mount_web

    app = FastAPI()
    mount_web(app, web_model, path="/web")
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        _wait_until(lambda: server.started, what="uvicorn to start")
        context = browser.new_context()
        tab = context.new_page()
        _open(tab, f"http://127.0.0.1:{port}/web/")
        _set_max_tokens(tab, 8)
        _ask(tab, "hi")
        _wait_until(lambda: _bot_text(tab) and _running(web_model) == 0, what="an answer through the mount")
        context.close()
        with pytest.raises(ValueError, match="must start with"):
            mount_web(FastAPI(), web_model, path="web")
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_the_web_command_serves_on_loopback(tiny_model_dir: Path) -> None:
    exe = shutil.which("qwen-stream", path=str(Path(sys.executable).parent)) or ""
    port = _free_port()
    command = [exe] if exe else [sys.executable, "-m", "qwen_stream.cli.main"]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    process = subprocess.Popen([*command, "web", "-c", str(tiny_model_dir), "--runner", "torch", "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        def page_up() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"qwen-stream web exited: {process.stdout.read() if process.stdout else ''}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                    return response.status == 200 and "qwen-stream chat" in response.read().decode()
            except OSError:
                return False

        _wait_until(page_up, timeout=180, what="qwen-stream web to serve its page")
        host_only = subprocess.run(["ss", "-ltn"], capture_output=True, text=True).stdout
        assert f"127.0.0.1:{port}" in host_only and f"0.0.0.0:{port}" not in host_only
    finally:
        process.terminate()
        process.wait(timeout=30)
