"""Background servers for the benchmark: started in their own process group, always stopped.

Every server runs under coreutils ``timeout``, so even if this script is killed outright
nothing outlives :data:`LIFETIME_S`; :meth:`Service.stop` sends the server's own graceful
signal and, after a grace period, SIGKILLs the whole process group (workers included).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

#: Hard ceiling on any server's life: `make bench` takes well under this.
LIFETIME_S = 1800


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (read from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, depth first."""
    out: list[int] = []
    for child in children(pid):
        out.append(child)
        out.extend(descendants(child))
    return out


def command_name(pid: int) -> str:
    """The short command name of ``pid`` (``comm``), or ``""`` once it is gone."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


class Service:
    """One server process (and its workers), output to ``log_path``.

    :param name: what the report calls it.
    :param argv: the command; it is wrapped in ``timeout`` so it ends by itself.
    :param port: the port it will listen on (127.0.0.1); start-up waits for it.
    :param stop_signal: the server's graceful-stop signal (SIGQUIT for nginx).
    """

    def __init__(
        self,
        name: str,
        argv: list[str],
        port: int,
        log_path: Path,
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        stop_signal: int = signal.SIGTERM,
        start_timeout: float = 60.0,
    ) -> None:
        self.name = name
        self.port = port
        self.log_path = log_path
        self.stop_signal = stop_signal
        self._log = open(log_path, "wb")
        wrapped = ["timeout", "--kill-after=10", str(LIFETIME_S), *argv]
        self.process = subprocess.Popen(
            wrapped,
            env=env,
            cwd=cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            self._wait_for_port(start_timeout)
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    def _wait_for_port(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(
            f"{self.name}: nothing listening on {self.port} after {timeout:.0f}s:"
            f"\n{self.log_tail()}"
        )

    def pids(self) -> list[int]:
        """The server's own processes: everything below the ``timeout`` wrapper."""
        return descendants(self.process.pid)

    def exited(self) -> bool:
        """Whether the server has exited."""
        return self.process.poll() is not None

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the server's output."""
        self._log.flush()
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float = 15.0) -> None:
        """Graceful signal, then SIGKILL to the process group after ``grace`` seconds."""
        if self.process.poll() is None:
            try:
                self.process.send_signal(self.stop_signal)
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # stragglers (workers) too
        except ProcessLookupError:
            pass
        if self.process.poll() is None:
            self.process.wait()
        self._log.close()


class ServiceGroup:
    """Several services measured as one system (nginx in front of gunicorn): the first is the
    front, whose port and URL are the group's; :meth:`pids` are all of theirs."""

    def __init__(self, name: str, services: list[Service]) -> None:
        self.name = name
        self.services = services

    @property
    def port(self) -> int:
        """The front's port."""
        return self.services[0].port

    @property
    def url(self) -> str:
        """The front's URL."""
        return self.services[0].url

    def pids(self) -> list[int]:
        """Every process of every service."""
        return [pid for service in self.services for pid in service.pids()]

    def exited(self) -> bool:
        """Whether any of the services has exited."""
        return any(service.exited() for service in self.services)

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of each service's output."""
        return "\n".join(f"{s.name}:\n{s.log_tail(lines)}" for s in self.services)

    def stop(self, grace: float = 15.0) -> None:
        """Stop every service, the front first."""
        for service in self.services:
            service.stop(grace)
