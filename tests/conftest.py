"""Shared fixtures: a real simulator upstream on 127.0.0.1, proxy apps, local file servers."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from flask import Flask
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response

from sora_proxy import create_app
from sora_proxy.simulator import SimulatorServer

UPSTREAM_KEY = "sk-upstream-DO-NOT-LEAK-7f3a9c"
CALLER_KEY = "sk-caller-ALSO-SECRET-41b2"


@pytest.fixture(autouse=True)
def instance_folder(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Every Flask app a test builds (proxy, host app, simulator) gets its own instance folder,
    so no default SQLite store or spool lands in the checkout."""
    folder = tmp_path_factory.mktemp("instance")
    monkeypatch.setattr(Flask, "auto_find_instance_path", lambda self: str(folder))
    return folder


@pytest.fixture(autouse=True)
def stop_trackers() -> Iterator[None]:
    """Every proxy app a test builds starts a tracker thread on its first request; stop them
    when the test ends, as a host app stops them at shutdown, so none outlives its store."""
    yield
    from sora_proxy.tracker import stop_all

    stop_all()


@pytest.fixture
def upstream() -> Iterator[SimulatorServer]:
    """A fresh simulator, the real upstream, recording every request it receives."""
    with SimulatorServer(seconds_per_step=0.05) as server:
        yield server


@pytest.fixture
def make_app(upstream: SimulatorServer) -> Callable[..., Flask]:
    """Build a proxy app pointed at the simulator; keyword args become SORA_PROXY_* keys."""

    def build(**settings: Any) -> Flask:
        config = {"SORA_PROXY_UPSTREAM_URL": upstream.base_url, "TESTING": True}
        config.update({f"SORA_PROXY_{key.upper()}": value for key, value in settings.items()})
        return create_app(config)

    return build


@pytest.fixture
def client(make_app: Callable[..., Flask]):
    """A test client of a pass-through proxy that may fetch from loopback (test servers)."""
    return make_app(fetch_allow_private=True).test_client()


@dataclass
class FileServer:
    """A tiny HTTP server on 127.0.0.1 serving fixed bodies, recording each hit."""

    routes: dict[str, tuple[int, dict[str, str], bytes]] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)
    server: BaseWSGIServer | None = None

    @property
    def base_url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_port}"

    def add(self, path: str, body: bytes, status: int = 200, **headers: str) -> str:
        self.routes[path] = (status, headers, body)
        return self.base_url + path

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        self.hits.append(request.path)
        status, headers, body = self.routes.get(request.path, (404, {}, b"not found"))
        return Response(body, status=status, headers=headers)(environ, start_response)


@pytest.fixture
def file_server() -> Iterator[FileServer]:
    files = FileServer()
    files.server = make_server("127.0.0.1", 0, files, threaded=True)
    thread = threading.Thread(target=files.server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield files
    files.server.shutdown()
    files.server.server_close()


@pytest.fixture(params=["sqlite", "redis"])
def store(request, tmp_path):
    """Each store, for the tests of the store's contract: SQLite, and a real redis-server."""
    import uuid

    from sora_proxy.store import open_store

    if request.param == "sqlite":
        opened = open_store(f"sqlite:///{tmp_path}/store.sqlite3")
    else:
        server = request.getfixturevalue("redis_server")
        opened = open_store(server.url, prefix=f"t{uuid.uuid4().hex}:")
    yield opened
    opened.close()


@pytest.fixture(params=["sqlite", "redis"])
def unreachable_store(request, tmp_path):
    """Each store where it cannot be reached: a SQLite path that is a directory, a Redis port
    nothing listens on."""
    from servers import free_port

    from sora_proxy.store import open_store

    if request.param == "sqlite":
        (tmp_path / "store.sqlite3").mkdir()  # a directory where the file should be
        return open_store(f"sqlite:///{tmp_path}/store.sqlite3")
    return open_store(f"redis://127.0.0.1:{free_port()}/0")


@pytest.fixture
def trickler() -> Iterator[str]:
    """A server that sends its status line a byte every 0.2 s: no single read times out
    (webhook deliveries and URL fetches must still end at their deadline)."""
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        connection, _ = server.accept()
        with connection:
            connection.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n":
                if stop.wait(0.2):
                    return
                try:
                    connection.sendall(bytes([byte]))
                except OSError:
                    return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/hook"
    stop.set()
    thread.join(5)
    server.close()


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on 127.0.0.1 for the whole session."""
    from moto.server import ThreadedMotoServer
    from s3_server import S3Server
    from servers import free_port

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    try:
        yield S3Server(f"http://127.0.0.1:{server._port}")
    finally:
        server.stop()


@pytest.fixture
def aws_env(monkeypatch, tmp_path):
    """Dummy credentials from the environment, and no profile or config from the host."""
    from s3_server import ACCESS_KEY, SECRET_KEY

    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


@pytest.fixture(scope="session")
def redis_server():
    """A throwaway redis-server on 127.0.0.1 for the whole session (installed by make test)."""
    from redis_server import RedisServer

    with RedisServer() as server:
        yield server
