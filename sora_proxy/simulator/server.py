"""Running the simulator: in a background thread for tests, or in the foreground from the CLI."""

from __future__ import annotations

import argparse
import socket
import sys
import threading
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from flask import Flask
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from .app import create_simulator_app
from .content import STREAM_ENVIRON_KEY, ContentStream
from .state import SimulatorState

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment


class SimulatorRequestHandler(WSGIRequestHandler):
    """Werkzeug's handler, ending a content stream when its client goes away.

    werkzeug closes the body iterable itself after a failed write, but only after draining the
    socket, and on a reset connection that drain can raise and skip the close. Ending the stream
    here as well keeps ``state.content_streams`` truthful (``closed_early``) either way.
    """

    def connection_dropped(
        self, error: BaseException, environ: WSGIEnvironment | None = None
    ) -> None:
        """Close the request's :class:`ContentStream`, if it had one."""
        stream = (environ or {}).get(STREAM_ENVIRON_KEY)
        if isinstance(stream, ContentStream):
            stream.close()


class _QuietRequestHandler(SimulatorRequestHandler):
    """Werkzeug's handler without the one-line-per-request access log (errors still log)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Log nothing: test output, and the proxy's own log under ``serve``, stay readable."""


class SimulatorServer:
    """The simulator on a real socket on 127.0.0.1, served from a daemon thread.

    Use it as a context manager (``with SimulatorServer(seconds_per_step=0.05) as sim:``) or
    call :meth:`start` and :meth:`stop`. It uses werkzeug's threaded server, which closes the
    connection after each response.

    :param app: a simulator app; by default one is built with ``create_kwargs``.
    :param port: the port to listen on; 0 picks a free one.
    :param create_kwargs: passed to :func:`create_simulator_app` when ``app`` is not given.
    """

    def __init__(self, app: Flask | None = None, *, port: int = 0, **create_kwargs: Any) -> None:
        if app is not None and create_kwargs:
            raise TypeError("pass either an app or create_simulator_app() arguments, not both")
        self.app = app if app is not None else create_simulator_app(**create_kwargs)
        self.port = port
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def state(self) -> SimulatorState:
        """The app's :class:`SimulatorState` (recorded requests, videos, armed failures)."""
        state: SimulatorState = self.app.extensions["sora_simulator"]
        return state

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``, the URL to configure as the upstream."""
        if self._server is None:
            raise RuntimeError("the simulator is not running; call start() first")
        return f"http://127.0.0.1:{self._server.server_port}/v1"

    def start(self) -> SimulatorServer:
        """Bind the socket and start serving in a daemon thread; return ``self``."""
        if self._server is not None:
            raise RuntimeError("the simulator is already running")
        self._server = make_server(
            "127.0.0.1", self.port, self.app, threaded=True, request_handler=_QuietRequestHandler
        )
        # A short poll interval makes stop() (and so each test's teardown) quick.
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name="sora-simulator",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket; requests still being answered are abandoned."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the simulator in the foreground: ``python -m sora_proxy.simulator --port 8001``."""
    parser = argparse.ArgumentParser(
        prog="python -m sora_proxy.simulator",
        description="A local OpenAI-format video upstream for trying sora_proxy with no account.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8001, help="port to bind (default 8001)")
    parser.add_argument("--api-key", default=None, help="require this key from callers")
    parser.add_argument(
        "--auth-header",
        choices=("authorization", "api-key"),
        default="authorization",
        help="how callers present the key: 'Authorization: Bearer' or an 'api-key' header",
    )
    parser.add_argument(
        "--seconds-per-step",
        type=float,
        default=1.0,
        help="a video is queued 1 step, in progress 2, then completed (default 1.0)",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no access line per request (errors are still logged)",
    )
    parser.add_argument(
        "--all",
        action="store_true",
        help="every simulated dialect on consecutive ports from --port (see fleet.py)",
    )
    args = parser.parse_args(argv)
    handler = _QuietRequestHandler if args.quiet else SimulatorRequestHandler
    if args.all:
        _serve_fleet(args.host, args.port, args.seconds_per_step, handler)
        return
    app = create_simulator_app(
        api_key=args.api_key,
        seconds_per_step=args.seconds_per_step,
        auth_header=args.auth_header,
    )
    try:
        _probe(args.host, args.port)
        server = make_server(args.host, args.port, app, threaded=True, request_handler=handler)
    except OSError as error:
        reason = error.strerror or str(error)
        print(
            f"sora simulator: cannot listen on {args.host}:{args.port}: {reason}",
            file=sys.stderr,
        )
        raise SystemExit(1) from None
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"sora simulator listening on http://{host}:{server.server_port}/v1", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def _serve_fleet(
    host: str, port: int, seconds_per_step: float, handler: type[WSGIRequestHandler]
) -> None:
    from .fleet import MEMBERS, serve_all

    try:
        for offset in range(len(MEMBERS)):
            _probe(host, port + offset)
    except OSError as error:
        reason = error.strerror or str(error)
        last = port + len(MEMBERS) - 1
        print(f"sora simulator: cannot listen on {host}:{port}-{last}: {reason}", file=sys.stderr)
        raise SystemExit(1) from None
    try:
        serve_all(
            host,
            port,
            seconds_per_step=seconds_per_step,
            handler=handler,
            announce=lambda line: print(line, flush=True),
        )
    except KeyboardInterrupt:
        pass


def _probe(host: str, port: int) -> None:
    """Bind ``host:port`` once and let go, raising its OSError: werkzeug would answer a taken
    port with two lines of its own and exit, without saying which address it tried."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
