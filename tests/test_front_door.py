"""The front door: ``sora-proxy check`` and ``serve``, the gunicorn entry points, the simulator
that ``serve`` starts. Everything runs as the user runs it: real subprocesses on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import http.server
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from servers import REPO, free_port, free_run, wait_for_port

from sora_proxy.settings import Settings, known_setting_names
from sora_proxy.simulator import SimulatorServer
from sora_proxy.simulator.fleet import MEMBERS as FLEET

CLI = [sys.executable, "-m", "sora_proxy.cli"]
ANSI = re.compile(r"\x1b\[[0-9;]*m")
# werkzeug's access line: 127.0.0.1 - - [03/Dec/2026 08:00:00] "POST /v1/videos HTTP/1.1" 200 -
WERKZEUG_ACCESS = re.compile(r'" \d{3} ')
KEYED = {
    "SORA_PROXY_UPSTREAM_URL": "http://127.0.0.1:9/v1",
    "SORA_PROXY_UPSTREAM_API_KEY": "sk-upstream",
    "SORA_PROXY_API_KEYS": "alice:sk-alice",
}


_INSTANCE = tempfile.mkdtemp(prefix="sora-proxy-front-door-")


def environment(**settings: str) -> dict[str, str]:
    """This process's environment without any SORA_PROXY_* (or worker count), plus ``settings``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SORA_PROXY_") and k != "WEB_CONCURRENCY"
    }
    # The default store and archive of `check` and `serve`: never the checkout's instance/.
    env.update(PYTHONUNBUFFERED="1", SORA_PROXY_INSTANCE_PATH=_INSTANCE, **settings)
    return env


def run(
    command: list[str], env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess:
    return subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


# --- sora-proxy check -----------------------------------------------------------------------


@pytest.mark.parametrize("store_url", ["mysql://x", "sqlite://rel.db", "redis://h:notaport/0"])
def test_check_builds_the_store_as_start_up_would(store_url):
    result = run([*CLI, "check"], environment(**KEYED, SORA_PROXY_STORE_URL=store_url))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "configuration ok" not in result.stdout
    assert lines(result.stderr) == [
        line
        for line in lines(result.stderr)
        if line.startswith("sora-proxy: configuration error: ")
    ]
    assert len(lines(result.stderr)) == 1 and "SORA_PROXY_STORE_URL" in result.stderr


def test_check_warns_without_failing():
    env = environment(
        SORA_PROXY_UPSTREAM_URL="http://127.0.0.1:9/",
        SORA_PROXY_STOR_URL="redis://localhost:6379/0",
        SORA_PROXY_THREADS="64",
        SORA_PROXY_POOL_MAXSIZE="32",
        SORA_PROXY_STORE_PREFIX="mine:",
        SORA_PROXY_ACCESS_LOG="-",
        SORA_PROXY_SIMULATOR_PORT="8123",
    )
    result = run([*CLI, "check"], env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "sora-proxy: configuration ok"
    warnings = lines(result.stderr)
    assert all(line.startswith("sora-proxy: warning: ") for line in warnings), warnings
    unknown = [w for w in warnings if "is not a sora_proxy setting" in w]
    assert len(unknown) == 1 and "SORA_PROXY_STOR_URL" in unknown[0]
    assert "did you mean SORA_PROXY_STORE_URL?" in unknown[0]
    assert any("SORA_PROXY_UPSTREAM_URL has no version prefix" in w for w in warnings)
    assert any(
        "SORA_PROXY_THREADS (64) is more than SORA_PROXY_POOL_MAXSIZE (32)" in w for w in warnings
    )
    assert len(warnings) == 3, warnings


@pytest.mark.parametrize(
    "url",
    [
        "https://api.example.com/v1",
        "https://gw.example.com/openai/v1",
        "https://gw.example.com/v1beta/",
    ],
)
def test_check_accepts_versioned_upstream_urls(url):
    result = run([*CLI, "check"], environment(SORA_PROXY_UPSTREAM_URL=url))
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_every_settings_field_is_a_known_name():
    names = {f"SORA_PROXY_{field.name.upper()}" for field in dataclasses.fields(Settings)}
    fed = {"SORA_PROXY_API_KEYS_FILE", "SORA_PROXY_WEBHOOK_URL", "SORA_PROXY_WEBHOOK_SECRET"}
    assert names | fed == known_setting_names()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SORA_PROXY_LOG_LEVEL", "loud"),
        ("SORA_PROXY_THREADS", "many"),
        ("SORA_PROXY_SIMULATOR_PORT", "70000"),
    ],
)
def test_check_refuses_deployment_knobs_gunicorn_cannot_use(name, value):
    result = run(
        [*CLI, "check"], environment(SORA_PROXY_UPSTREAM_URL="http://h/v1", **{name: value})
    )
    assert result.returncode == 2
    assert lines(result.stderr) == [lines(result.stderr)[0]]
    assert lines(result.stderr)[0].startswith(f"sora-proxy: configuration error: {name}: ")


# --- gunicorn entry points and serve: one line for a bad setting ----------------------------


@pytest.mark.parametrize(
    "entry", ["wsgi:app", "sora_proxy.wsgi_entry:app", "examples.host_app:gunicorn_app()"]
)
def test_a_bad_setting_under_gunicorn_is_one_line(entry):
    env = environment(
        **KEYED, SORA_PROXY_STORE_URL="mysql://x", SORA_PROXY_BIND=f"127.0.0.1:{free_port()}"
    )
    result = run([sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.conf.py", entry], env)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert lines(result.stdout + result.stderr) == [
        "sora-proxy: configuration error: SORA_PROXY_STORE_URL: unsupported store URL scheme "
        "'mysql'; use sqlite:///path, redis://, rediss:// or unix://"
    ]


def test_serve_with_a_bad_setting_is_one_line_and_starts_nothing():
    bind = free_port()
    env = environment(
        **KEYED, SORA_PROXY_STORE_URL="sqlite://rel.db", SORA_PROXY_BIND=f"127.0.0.1:{bind}"
    )
    result = run([*CLI, "serve"], env)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "gunicorn" not in result.stderr.lower()
    assert lines(result.stderr) == [
        "sora-proxy: configuration error: SORA_PROXY_STORE_URL: a SQLite URL is "
        "sqlite:///relative/path or sqlite:////absolute/path"
    ]


# --- the simulator serve starts --------------------------------------------------------------


@pytest.fixture
def foreign_server() -> Iterator[int]:
    """Another program on a port: a plain HTTP server that answers every path with 200."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b'{"status": "ok"}')

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_serve_refuses_a_taken_simulator_port(foreign_server):
    bind = free_port()
    env = environment(
        SORA_PROXY_BIND=f"127.0.0.1:{bind}", SORA_PROXY_SIMULATOR_PORT=str(foreign_server)
    )
    result = run([*CLI, "serve"], env)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    refusal = [line for line in lines(result.stderr) if "configuration ok" not in line]
    assert len(refusal) == 1 and f"port {foreign_server} is already in use" in refusal[0]
    assert "SORA_PROXY_SIMULATOR_PORT" in refusal[0]
    with socket.socket() as probe:  # no proxy was started
        assert probe.connect_ex(("127.0.0.1", bind)) != 0


def test_serve_refuses_a_taken_proxy_address_before_starting_the_simulator(foreign_server):
    sim_port = free_port()
    env = environment(
        SORA_PROXY_BIND=f"127.0.0.1:{foreign_server}", SORA_PROXY_SIMULATOR_PORT=str(sim_port)
    )
    result = run([*CLI, "serve"], env)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert lines(result.stderr)[-1] == (
        f"sora-proxy: 127.0.0.1:{foreign_server}, the proxy's address (SORA_PROXY_BIND or "
        "--bind), is already in use"
    )
    with socket.socket() as probe:  # no simulator was started
        assert probe.connect_ex(("127.0.0.1", sim_port)) != 0


def test_only_the_simulator_itself_passes_the_identity_check(foreign_server):
    from sora_proxy import cli

    assert cli._simulator_pid(foreign_server) is None
    with SimulatorServer() as sim:
        port = int(sim.base_url.rsplit(":", 1)[1].split("/")[0])
        assert cli._simulator_pid(port) == os.getpid()
    assert cli._simulator_pid(port) is None


def test_the_simulator_on_a_taken_port_says_so_in_one_line(foreign_server):
    result = run(
        [sys.executable, "-m", "sora_proxy.simulator", "--port", str(foreign_server)],
        environment(),
        timeout=30,
    )
    assert result.returncode == 1
    assert lines(result.stderr) == [
        f"sora simulator: cannot listen on 127.0.0.1:{foreign_server}: Address already in use"
    ]


def test_the_simulator_command_reads_its_port_setting():
    port = free_port()
    process = subprocess.Popen(
        [*CLI, "simulator"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=environment(SORA_PROXY_SIMULATOR_PORT=str(port)),
    )
    try:
        wait_for_port(port, process)
        from sora_proxy import cli

        assert cli._simulator_pid(port) == process.pid
    finally:
        process.terminate()
        process.wait(timeout=10)


# --- sora-proxy serve, end to end ------------------------------------------------------------


def wait_gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_serve_runs_quietly_relays_and_stops_cleanly(tmp_path: Path):
    sim_port = free_run(len(FLEET))
    bind = free_port()
    while sim_port <= bind < sim_port + len(FLEET):  # serve's simulators take consecutive ports
        bind = free_port()
    env = environment(
        SORA_PROXY_BIND=f"127.0.0.1:{bind}",
        SORA_PROXY_SIMULATOR_PORT=str(sim_port),
        WEB_CONCURRENCY="1",
        # The simulated gateways keep proxy-owned records: not in the checkout's instance folder.
        SORA_PROXY_STORE_URL=f"sqlite:///{tmp_path}/serve.sqlite3",
        SORA_PROXY_SPOOL_DIR=str(tmp_path / "spool"),
    )
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [*CLI, "serve"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_for_port(bind, process, timeout=60)
        simulator_pid = requests.get(
            f"http://127.0.0.1:{sim_port}/_simulator/identity", timeout=5
        ).json()["pid"]
        proxy = f"http://127.0.0.1:{bind}/v1/videos"
        created = requests.post(proxy, json={"prompt": "A paper boat in the rain"}, timeout=30)
        assert created.status_code == 200, created.text
        video = created.json()
        assert video["object"] == "video" and video["status"] == "queued"
        assert requests.get(f"{proxy}/{video['id']}", timeout=30).json()["id"] == video["id"]
        assert requests.get(f"http://127.0.0.1:{bind}/readyz", timeout=30).status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
    output = log_path.read_text(errors="replace")
    assert code == 0, output
    assert not ANSI.search(output), output
    assert not [line for line in output.splitlines() if WERKZEUG_ACCESS.search(line)], output
    assert "Traceback" not in output
    # The proxy's own JSON line for the create is there, so the output was really captured.
    entries = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert any(e["route"] == "/v1/videos" and e["status"] == 200 for e in entries), output
    assert wait_gone(simulator_pid), "the simulator outlived serve"
    for port in (bind, sim_port):
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0, port


def test_serve_refuses_a_proxy_port_among_the_simulators_ports():
    sim_port = free_port()
    env = environment(
        SORA_PROXY_BIND=f"127.0.0.1:{sim_port + 2}", SORA_PROXY_SIMULATOR_PORT=str(sim_port)
    )
    result = run([*CLI, "serve"], env)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert lines(result.stderr)[-1] == (
        f"sora-proxy: the proxy's port {sim_port + 2} (SORA_PROXY_BIND or --bind) is among the "
        f"simulated upstreams' ports {sim_port}-{sim_port + len(FLEET) - 1}; move one of them"
    )
