"""A throwaway redis-server on 127.0.0.1, for tests that need a real Redis."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from types import TracebackType

from servers import free_port

MISSING = "redis-server is not installed; `make test` installs it (Debian package redis-server)"


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """``redis-server`` on a free port, stopped and its files removed on exit.

    ``stop()`` then ``start()`` is a restart on the same port with the data kept (``stop``
    saves a snapshot, as a Redis with persistence would); ``pause()`` and ``resume()`` freeze
    it with SIGSTOP/SIGCONT, so connections open but nothing answers.
    """

    def __init__(self) -> None:
        self.executable = shutil.which("redis-server")
        if self.executable is None:
            raise RuntimeError(MISSING)
        self.port = free_port()
        self.directory = tempfile.mkdtemp(prefix="redis-test-")
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        """Start (or restart) the server on ``self.port`` and wait until it answers PING."""
        assert self.executable is not None
        self.process = subprocess.Popen(
            [
                self.executable,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
                self.directory,
                "--dbfilename",
                "dump.rdb",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while not _ping(self.port):
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer on {self.port} in {timeout}s")
            time.sleep(0.02)

    def stop(self) -> None:
        """Save a snapshot and shut down; the port and data are kept for :meth:`start`."""
        if self.process is None:
            return
        self.resume()
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as conn:
                conn.sendall(b"SHUTDOWN SAVE\r\n")
                conn.recv(64)  # the server closes the connection once it has saved
        except OSError:
            self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def pause(self) -> None:
        """Freeze the server: the kernel still accepts connections, nothing answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Undo :meth:`pause`."""
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
