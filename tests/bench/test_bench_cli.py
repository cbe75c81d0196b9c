"""`qwen-stream bench` refuses bad arguments before loading anything (the runs end to end: tests/cold/test_bench.py)."""

from __future__ import annotations

import pytest

from qwen_stream.cli.main import main


def test_bad_arguments_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--which", "ours-torch,nope"])
    assert exc.value.code == 2
    assert "unknown system" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "--concurrency", "0,4"])
    assert main(["bench", "--which", "hf", "--max-tokens", "1"]) == 2
    assert main(["bench", "--which", "hf", "--repeats", "0"]) == 2
