"""Run the shipped nginx site (config/nginx/sora-proxy.conf) in front of a test gunicorn."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from servers import REPO, free_port, wait_for_port

SITE = REPO / "config" / "nginx" / "sora-proxy.conf"


def nginx_binary() -> str:
    """The nginx executable; the tests never skip for want of it."""
    found = shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None
    )
    if found is None:
        raise RuntimeError("nginx is not installed; `make test` installs it (Debian package nginx)")
    return found


def site_config(
    upstream: str, port: int, log_dir: Path, archive_dir: Path, streams_per_caller: int
) -> str:
    """The shipped site with its documented substitutions (see the file's header)."""
    text = SITE.read_text()
    for pattern, new in (
        (r"^(\s*)listen 80;", rf"\1listen 127.0.0.1:{port};"),
        (r"^(\s*)server 127\.0\.0\.1:8000;", rf"\1server {upstream};"),
        (r"^(\s*)alias /var/lib/sora-proxy/archive/;", rf"\1alias {archive_dir}/;"),
    ):
        text, count = re.subn(pattern, new, text, flags=re.MULTILINE)
        if count != 1:
            raise AssertionError(f"{SITE.name}: expected one line matching {pattern!r}")
    # One per hand-off location; 0 (no cap) leaves nginx nothing to count by, whatever the number.
    cap = rf"\1limit_conn sora_proxy_streams {streams_per_caller or 8};"
    text, count = re.subn(r"^(\s+)limit_conn sora_proxy_streams 8;", cap, text, flags=re.M)
    if count != 3:
        raise AssertionError(f"{SITE.name}: expected limit_conn in each hand-off location")
    return text.replace("/var/log/nginx/", f"{log_dir}/")


class Nginx:
    """nginx (master + one worker) serving the shipped site, everything under ``directory``.

    :param upstream: the gunicorn address, ``host:port``.
    :param directory: an empty directory for the config, pid, logs and temporary files.
    :param archive_dir: the proxy's local archive folder (``SORA_PROXY_ARCHIVE_URL``), which
        the hand-off location serves; a folder under ``directory`` when the test has none.
    :param streams_per_caller: the site's ``limit_conn`` number, as the proxy's
        ``SORA_PROXY_STREAMS_PER_CALLER`` (0: no cap, the proxy then sends no key).
    """

    def __init__(
        self,
        upstream: str,
        directory: Path,
        *,
        archive_dir: Path | None = None,
        streams_per_caller: int = 0,
    ) -> None:
        self.directory = directory
        self.port = free_port()
        self.access_log = directory / "sora-proxy.access.log"
        self.error_log = directory / "error.log"
        site = site_config(
            upstream, self.port, directory, archive_dir or directory / "archive", streams_per_caller
        )
        (directory / "site.conf").write_text(site)
        (directory / "nginx.conf").write_text(self._main_config())
        self._out = open(directory / "nginx.out", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                nginx_binary(),
                "-p",
                str(directory),
                "-c",
                str(directory / "nginx.conf"),
                "-e",
                str(self.error_log),
            ],
            stdout=self._out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: a fallback kill reaches the worker
        )
        try:
            wait_for_port(self.port, self.process, timeout=15)
        except RuntimeError as error:
            self.stop()
            raise RuntimeError(f"nginx did not start: {error}\n{self.logs()}") from None

    def _main_config(self) -> str:
        tmp = self.directory
        mime = "include /etc/nginx/mime.types;" if Path("/etc/nginx/mime.types").exists() else ""
        # As root, workers would run as "nobody", which cannot enter pytest's 0700 temp
        # directories (buffered request bodies go there); as anyone else "user" is ignored.
        user = "user root;" if os.geteuid() == 0 else ""
        return f"""\
{user}
daemon off;
master_process on;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {self.error_log} info;
events {{ worker_connections 256; }}
http {{
    {mime}
    default_type application/octet-stream;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    access_log {tmp}/access.log;
    include {tmp}/site.conf;
}}
"""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def access_entries(self) -> list[dict[str, Any]]:
        """The site's access log so far, one JSON object per finished request."""
        if not self.access_log.exists():
            return []
        entries = []
        for line in self.access_log.read_text().splitlines():
            try:
                entries.append(json.loads(line))
            except ValueError:  # a line still being written
                continue
        return entries

    def access_entry(self, timeout: float = 5.0, **fields: Any) -> dict[str, Any]:
        """The one access log entry with these field values. nginx logs a request after its
        last byte went out, so a client may see the answer a moment before the line exists."""
        deadline = time.monotonic() + timeout
        while True:
            found = [
                entry
                for entry in self.access_entries()
                if all(entry.get(key) == value for key, value in fields.items())
            ]
            if found or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert len(found) == 1, f"expected one nginx access log entry with {fields}, got {found}"
        return found[0]

    def logs(self) -> str:
        parts = [
            path.read_text(errors="replace")
            for path in (self.directory / "nginx.out", self.error_log)
            if path.exists()
        ]
        return "\n".join(parts)

    def stop(self) -> None:
        """Graceful stop (SIGQUIT: finish open requests), then SIGKILL the group after 10 s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._out.close()

    def __enter__(self) -> Nginx:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
