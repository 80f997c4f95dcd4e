"""Run the proxy the way users deploy it: gunicorn with config/gunicorn.conf.py."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from werkzeug.serving import make_server

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def free_run(count: int) -> int:
    """The first of ``count`` consecutive ports that are all free now."""
    for _ in range(50):
        first = free_port()
        try:
            for port in range(first, first + count):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first
    raise RuntimeError(f"no {count} consecutive free ports")


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listening on {port} after {timeout}s")


class Gunicorn:
    """gunicorn serving ``wsgi:app`` with the shipped config, stderr captured to a file."""

    def __init__(self, settings: dict[str, str], log_path: Path, *, workers: int = 2) -> None:
        self.port = free_port()
        self.log_path = log_path
        env = {k: v for k, v in os.environ.items() if not k.startswith("SORA_PROXY_")}
        # Records and the spool beside the log, never in the checkout's instance folder.
        env["SORA_PROXY_STORE_URL"] = f"sqlite:///{log_path.parent}/gunicorn-store.sqlite3"
        env["SORA_PROXY_SPOOL_DIR"] = str(log_path.parent / "gunicorn-spool")
        env["SORA_PROXY_INSTANCE_PATH"] = str(log_path.parent / "gunicorn-instance")
        env.update(settings)
        env.update({"SORA_PROXY_BIND": f"127.0.0.1:{self.port}", "WEB_CONCURRENCY": str(workers)})
        self._log = open(log_path, "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.conf.py", "wsgi:app"],
            cwd=REPO,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        wait_for_port(self.port, self.process)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> str:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def served(app: Any) -> Iterator[str]:
    """``app`` on a real loopback socket (werkzeug's threaded server) for the block; its URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
