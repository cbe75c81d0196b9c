"""`qwen-stream serve`: the OpenAI-compatible HTTP API on 127.0.0.1 (past loopback: HTTPS with --ssl-keyfile and
--ssl-certfile, API keys with --api-key or --api-key-file).

Only light imports at the top: torch, FastAPI and uvicorn load inside run(), so `qwen-stream --help` stays instant.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from qwen_stream.cli.model_args import SHARED_KV_WINDOWS, add_model_arguments, backend_options, load_model

if TYPE_CHECKING:
    from qwen_stream.client.loaded_model import LoadedModel

API_KEY_ENV = "QWEN_STREAM_API_KEY"
DEFAULT_HOST = "127.0.0.1"  # loopback: the API is not on the network unless asked for
DEFAULT_PORT = 8000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser, several=True)
    _add_pool_arguments(parser)
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help="address to listen on (default: %(default)s; 0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default: %(default)s)")
    parser.add_argument("--api-key", action="append", default=None, metavar="KEY",
                        help=f"require 'Authorization: Bearer KEY' (or 'x-api-key: KEY') on every API route; "
                             f"repeatable, any key opens (default: ${API_KEY_ENV} if set)")
    parser.add_argument("--api-key-file", default=None, metavar="FILE",
                        help="read API keys from FILE, one a line ('#' comments): keys on the command line show in "
                             "'ps'")
    parser.add_argument("--ssl-keyfile", default=None, metavar="FILE",
                        help="serve HTTPS with this private key (PEM), for use past loopback")
    parser.add_argument("--ssl-certfile", default=None, metavar="FILE",
                        help="serve HTTPS with this certificate (PEM, the chain after it)")
    parser.add_argument("--cors-origin", action="append", default=None, metavar="ORIGIN",
                        help="allow browser calls from ORIGIN (repeatable; '*' for any). CORS is off by default")
    parser.add_argument("--served-model-name", default=None,
                        help="model name reported by /v1/models and in responses (default: the model's name)")
    parser.add_argument("--max-waiting", type=int, default=64,
                        help="requests queued for a slot at most; beyond it requests get 429 (default: 64)")
    parser.add_argument("--responses-store-size", type=int, default=1024, metavar="N",
                        help="finished /v1/responses answers kept in memory for previous_response_id, least "
                             "recently used dropped first (default: %(default)s; 0 keeps none)")
    parser.add_argument("--model-alias", action="append", default=[], metavar="NAME",
                        help="another name requests may give as 'model' (repeatable); other names get 404")
    parser.add_argument("--max-tokens-cap", type=int, default=None, metavar="N",
                        help="every answer's length at most, on every route: a request without max_tokens gets "
                             "this, one asking more is cut here with finish reason 'length' (default: no cap; an "
                             "answer without max_tokens may take the rest of the context window, as OpenAI)")
    parser.add_argument("--max-request-bytes", type=int, default=8 * 1024 * 1024, metavar="BYTES",
                        help="request bodies larger than this get 413 (default: %(default)s)")
    parser.add_argument("--max-stop-strings", type=int, default=16, metavar="N",
                        help="stop strings per request at most (default: %(default)s)")
    parser.add_argument("--max-stop-chars", type=int, default=1024, metavar="N",
                        help="characters per stop string at most (default: %(default)s)")
    parser.add_argument("--shutdown-timeout", type=float, default=30.0, metavar="SECONDS",
                        help="on SIGTERM/Ctrl-C, running requests get this long to finish before they are ended "
                             "(finish_reason 'abort'); new ones get 503 meanwhile (default: %(default)s)")
    parser.add_argument("--web", action="store_true", help="also serve the Gradio chat page at /web")
    parser.add_argument("--tool-parser", choices=["hermes", "qwen3_coder"], default=None,
                        help="how the model writes tool calls (default: read from its chat template: "
                             "<tool_call> JSON is hermes, <function=...> XML is qwen3_coder)")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                        help="uvicorn log level (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    _check_args(args)
    import uvicorn

    from qwen_stream.server.app import create_app

    keys = _api_keys(args)
    if not keys and not _is_loopback(args.host):
        print(f"warning: listening on {args.host} without an API key (set --api-key or ${API_KEY_ENV})",
              file=sys.stderr)
    if keys and args.ssl_certfile is None and not _is_loopback(args.host):
        print(f"warning: listening on {args.host} over plain HTTP: API keys cross the network readable "
              f"(set --ssl-keyfile and --ssl-certfile)", file=sys.stderr)

    from qwen_stream.server.pipeline.limits import RequestLimits
    from qwen_stream.server.pool.model_pool import PoolEntry
    from qwen_stream.server.pool.specs import parse_model_specs, source_size

    specs = parse_model_specs(args.model, args.models_dir)
    several = len(specs) > 1
    if several and (args.served_model_name or args.model_alias or args.web):
        raise ValueError("--served-model-name, --model-alias and --web serve one model; with several, name each "
                         "one with -c NAME=PATH")

    limits = RequestLimits(max_body_bytes=args.max_request_bytes, max_stop_strings=args.max_stop_strings,
                           max_stop_chars=args.max_stop_chars)
    options: dict[str, Any] = {"api_key": keys, "cors_origins": args.cors_origin,
                               "response_store_size": args.responses_store_size, "limits": limits,
                               "max_tokens_cap": args.max_tokens_cap, "max_loaded_models": args.max_loaded_models,
                               "keep_alive_s": _keep_alive(args, several), "load_wait_s": args.load_wait}
    if args.web:
        # The web page needs the model when it is mounted, so load first, then serve (never unloaded).
        model = _loader(args, specs[0].source)()
        try:
            app = create_app(model, served_model_name=args.served_model_name,
                             model_aliases=[*args.model_alias, specs[0].name], **options)
            _mount_web(app, model)
            _serve(uvicorn, app, args)
        finally:
            model.close()
    else:
        # Load in the background: the port opens at once and /health answers 503 "loading" until ready.
        if several:
            entries = [PoolEntry(_loader(args, s.source), s.name, size=source_size(s.source)) for s in specs]
            print(f"serving {', '.join(s.name for s in specs)} (loaded on first use, {specs[0].name} now; at most "
                  f"{args.max_loaded_models} at once)", file=sys.stderr)
        else:
            # One model: named by --served-model-name or its own name, as before; its -c name is an alias.
            entries = [PoolEntry(_loader(args, specs[0].source), args.served_model_name,
                                 frozenset([*args.model_alias, specs[0].name]), size=source_size(specs[0].source))]
        _serve(uvicorn, create_app(entries, **options), args)
    return 0


def _add_pool_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models-dir", default=None, metavar="DIR",
                        help="also serve every .gguf file in DIR, each named by its file's stem")
    parser.add_argument("--max-loaded-models", type=int, default=3, metavar="N",
                        help="models loaded at once at most; loading another first unloads the least recently used "
                             "idle one (default: %(default)s)")
    parser.add_argument("--keep-alive", default=None, metavar="DURATION",
                        help="how long a model stays loaded after its last request, as Ollama's keep_alive: '5m', "
                             "'1h', seconds, 0 (unload at once) or negative (never); a request's keep_alive wins "
                             "(default: never with one model, 5m with several)")
    parser.add_argument("--load-wait", type=float, default=120.0, metavar="SECONDS",
                        help="how long a request waits for its model to load before a 503 with Retry-After "
                             "(default: %(default)s)")


def _loader(args: argparse.Namespace, source: str | None) -> Callable[[], LoadedModel]:
    """Load ``source`` with the launch options every model of this server shares."""
    options = argparse.Namespace(**{**vars(args), "model": source})

    def load() -> LoadedModel:
        return load_model(options, max_waiting=args.max_waiting, progress=True, kv_windows=SHARED_KV_WINDOWS,
                          tool_parser=args.tool_parser).loaded

    return load


def _api_keys(args: argparse.Namespace) -> list[str]:
    """--api-key (each), --api-key-file's keys, else $QWEN_STREAM_API_KEY; never printed."""
    from qwen_stream.server.auth import api_keys, read_key_file

    keys = list(args.api_key or [])
    if args.api_key_file is not None:
        keys += read_key_file(args.api_key_file)
    if not keys and os.environ.get(API_KEY_ENV):
        keys.append(os.environ[API_KEY_ENV])
    return list(api_keys(keys))


def _keep_alive(args: argparse.Namespace, several: bool) -> float:
    from qwen_stream.server.pool.keep_alive import FOREVER, parse_duration

    if args.keep_alive is None:
        return 300.0 if several else FOREVER
    return parse_duration(args.keep_alive)


def _check_args(args: argparse.Namespace) -> None:
    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be in 1..65535, got {args.port}")
    if args.max_waiting < 0:
        raise ValueError(f"--max-waiting must be >= 0, got {args.max_waiting}")
    if args.responses_store_size < 0:
        raise ValueError(f"--responses-store-size must be >= 0, got {args.responses_store_size}")
    # the model loads in the background: wrong backend options must fail now, not behind a 503
    if backend_options(args).get("backend") == "vllm":
        from qwen_stream.engine.vllm.backend import require_vllm

        require_vllm()
    for flag in ("max_request_bytes", "max_stop_strings", "max_stop_chars"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if args.max_tokens_cap is not None and args.max_tokens_cap < 1:
        raise ValueError(f"--max-tokens-cap must be >= 1, got {args.max_tokens_cap}")
    if args.shutdown_timeout < 0:
        raise ValueError(f"--shutdown-timeout must be >= 0, got {args.shutdown_timeout}")
    if args.max_loaded_models < 1:
        raise ValueError(f"--max-loaded-models must be >= 1, got {args.max_loaded_models}")
    if args.load_wait < 0:
        raise ValueError(f"--load-wait must be >= 0, got {args.load_wait}")
    _keep_alive(args, several=False)  # a bad duration fails now, with its message
    if (args.ssl_keyfile is None) != (args.ssl_certfile is None):
        raise ValueError("HTTPS needs both --ssl-keyfile and --ssl-certfile")
    for flag in ("ssl_keyfile", "ssl_certfile", "api_key_file"):
        path = getattr(args, flag)
        if path is not None and not os.path.isfile(path):
            raise ValueError(f"--{flag.replace('_', '-')} {path}: no such file")
    _api_keys(args)  # an empty key or key file fails now


def _serve(uvicorn: Any, app: Any, args: argparse.Namespace) -> None:
    base = f"{'https' if args.ssl_certfile else 'http'}://{args.host}:{args.port}"
    print(f"OpenAI-compatible API at {base}/v1 (docs: {base}/docs, health: {base}/health)"
          + (f", chat page: {base}/web" if args.web else ""), file=sys.stderr)
    # uvicorn waits for open connections after a signal; ours end within --shutdown-timeout (then aborted), and
    # the margin lets their last frames and [DONE] go out before uvicorn would cancel them mid-stream.
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level,
                            timeout_graceful_shutdown=args.shutdown_timeout + 5, ssl_keyfile=args.ssl_keyfile,
                            ssl_certfile=args.ssl_certfile)
    server = _draining_server_class(uvicorn)(config, app.state.server, args.shutdown_timeout)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()  # re-raises the signal that stopped it once done, as uvicorn.run does


def _draining_server_class(uvicorn: Any) -> Any:
    class DrainingServer(uvicorn.Server):  # type: ignore[misc,name-defined]
        """uvicorn's server, telling the app to drain (503 for new requests, a deadline for running ones) on the
        first SIGTERM or Ctrl-C; a second Ctrl-C still quits at once."""

        def __init__(self, config: Any, state: Any, timeout_s: float) -> None:
            super().__init__(config)
            self._state, self._timeout_s = state, timeout_s

        def handle_exit(self, sig: int, frame: Any) -> None:
            self._state.begin_drain(self._timeout_s)
            super().handle_exit(sig, frame)

    return DrainingServer


def _mount_web(app: Any, model: LoadedModel) -> None:
    try:
        from qwen_stream.web.app import mount_web
    except ImportError as exc:
        raise ValueError(f"--web needs the web extra (pip install 'qwen-stream[web]'): {exc}") from exc
    from qwen_stream.api import ChatModel  # the page speaks the Python API, over the same pair the server holds

    mount_web(app, ChatModel(model), path="/web")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
