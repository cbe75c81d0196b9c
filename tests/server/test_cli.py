"""`qwen-stream serve`'s arguments, parsed and checked before anything loads (the process itself: tests/cold)."""

from __future__ import annotations

import pytest

from qwen_stream.cli.main import build_parser


def test_serve_defaults_to_loopback_and_port_8000() -> None:
    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port, args.api_key, args.cors_origin, args.web) == ("127.0.0.1", 8000, None, None, False)
    args = build_parser().parse_args(["serve", "--cors-origin", "http://a", "--cors-origin", "http://b"])
    assert args.cors_origin == ["http://a", "http://b"]


def test_serve_refuses_a_bad_keep_alive_or_model_limit() -> None:
    from qwen_stream.server.cli import _check_args

    with pytest.raises(ValueError, match="5 minutes"):
        _check_args(build_parser().parse_args(["serve", "--keep-alive", "5 minutes"]))
    with pytest.raises(ValueError, match="--max-loaded-models must be >= 1"):
        _check_args(build_parser().parse_args(["serve", "--max-loaded-models", "0"]))
