"""The ``sora-proxy`` command: serve the proxy under gunicorn, run the simulator, check config.

``sora-proxy serve`` is what ``make serve`` runs: when no upstream is set it first starts the
built-in simulator on 127.0.0.1 (port ``SORA_PROXY_SIMULATOR_PORT``, default 8001) and points
the proxy at it, so the proxy can be tried with no account; it also turns the playground page
on unless ``SORA_PROXY_PLAYGROUND`` says otherwise. Configuration is checked before anything
starts, so a bad setting ends the command with one line naming the key.
"""

from __future__ import annotations

import argparse
import errno
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from .errors import ConfigError
from .preflight import DEFAULT_SIMULATOR_PORT, check_environment, deployment, report_config_error
from .simulator.fleet import MEMBERS as FLEET
from .simulator.fleet import upstreams_toml

_REPO_CONFIG = Path(__file__).resolve().parent.parent / "config" / "gunicorn.conf.py"
#: Where the simulator says which process it is (``sora_proxy.simulator.app.IDENTITY_PATH``).
_SIMULATOR_IDENTITY = "/_simulator/identity"
_SIMULATOR_START_SECONDS = 15.0
_STOP_SECONDS = 35.0  # gunicorn's graceful_timeout (30) and a little


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``sora-proxy`` console script."""
    parser = argparse.ArgumentParser(prog="sora-proxy", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the proxy under gunicorn")
    serve.add_argument("--bind", default=None, help="default: SORA_PROXY_BIND or 127.0.0.1:8000")
    serve.add_argument(
        "--simulator-port",
        type=int,
        default=None,
        help=f"default: SORA_PROXY_SIMULATOR_PORT or {DEFAULT_SIMULATOR_PORT}",
    )
    serve.add_argument("--config", type=Path, default=None, help="gunicorn config file")
    simulator = commands.add_parser("simulator", help="run only the simulator upstream")
    simulator.add_argument("--host", default="127.0.0.1")
    simulator.add_argument(
        "--port",
        type=int,
        default=None,
        help=f"default: SORA_PROXY_SIMULATOR_PORT or {DEFAULT_SIMULATOR_PORT}",
    )
    commands.add_parser("check", help="check the SORA_PROXY_* settings and exit")
    commands.add_parser(
        "tracker", help="follow videos to their end (polls, archive, webhooks) in this process"
    )
    args = parser.parse_args(argv)

    if args.command == "check":
        return _check(dict(os.environ))
    if args.command == "tracker":
        return _run_tracker()
    try:
        knobs = deployment(os.environ)
    except ConfigError as error:
        report_config_error(error)
        return 2
    if args.command == "simulator":
        from .simulator import main as simulator_main

        port = args.port if args.port is not None else knobs.simulator_port
        simulator_main(["--host", args.host, "--port", str(port)])
        return 0
    bind = args.bind or knobs.bind
    port = args.simulator_port if args.simulator_port is not None else knobs.simulator_port
    return _serve(bind, port, args.config)


def _run_tracker() -> int:
    """Run a tracker on its own, with the proxy's settings, until SIGTERM or Ctrl-C.

    For deployments that keep background work apart from the web workers (which then run
    with ``SORA_PROXY_TRACKER=external``); it shares their store and archive.
    """
    from . import create_app
    from .extension import proxy_state

    try:
        app = create_app({"SORA_PROXY_TRACKER": "workers"})
    except ConfigError as error:
        report_config_error(error)
        return 2
    with app.app_context():
        state = proxy_state()
    if state.records is None:
        print("sora-proxy tracker: no store is kept (one anonymous upstream); nothing to follow")
        return 2
    assert state.tracker is not None  # built with SORA_PROXY_TRACKER=workers
    tracker = state.tracker
    signal.signal(signal.SIGTERM, lambda *_: tracker.stop())
    try:
        tracker.run_in_foreground(state)
    except KeyboardInterrupt:
        tracker.stop()
    return 0


def _check(environ: dict[str, str]) -> int:
    """Build the app as start-up would; print warnings, then "ok" (0) or the error (2)."""
    try:
        warnings = check_environment(environ)
    except ConfigError as error:
        report_config_error(error)
        return 2
    for warning in warnings:
        print(f"sora-proxy: warning: {warning}", file=sys.stderr)
    print("sora-proxy: configuration ok")
    return 0


def _serve(bind: str, simulator_port: int, config: Path | None) -> int:
    environ = _serve_environment(os.environ)
    use_simulator = not environ.get("SORA_PROXY_UPSTREAM_URL") and not environ.get(
        "SORA_PROXY_UPSTREAMS_FILE"
    )
    if not use_simulator:
        return _serve_with(environ, bind, simulator_port, config, use_simulator=False)
    folder = Path(tempfile.mkdtemp(prefix="sora-proxy-serve-"))
    try:
        environ.update(_simulated_upstreams(simulator_port, folder))
        return _serve_with(environ, bind, simulator_port, config, use_simulator=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _serve_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment ``serve`` gives gunicorn: ``environ``, with the playground on and a
    signing key for its content URLs unless they are set.

    The key is new on every run (nothing to configure for a first try); signed URLs from an
    earlier run then stop working, as they should. All workers of one run share it.
    """
    served = dict(environ)
    served.setdefault("SORA_PROXY_PLAYGROUND", "true")
    served.setdefault("SORA_PROXY_SIGNING_KEY", secrets.token_urlsafe(32))
    return served


def _serve_with(
    environ: dict[str, str],
    bind: str,
    simulator_port: int,
    config: Path | None,
    *,
    use_simulator: bool,
) -> int:
    # In a child: building the app may start background work that has no place in this
    # long-lived parent, which only watches its children.
    check = [sys.executable, "-m", "sora_proxy.cli", "check"]
    if subprocess.run(check, env=environ, check=False).returncode != 0:  # noqa: S603
        return 2
    _refuse_taken(bind, "the proxy's address (SORA_PROXY_BIND or --bind)")
    if use_simulator:
        _refuse_overlap(bind, simulator_port)
    # SIGTERM unwinds like Ctrl-C, so the children are stopped whenever it arrives.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    children: list[subprocess.Popen[bytes]] = []
    try:
        simulator = None
        if use_simulator:
            simulator = _launch_simulator(simulator_port)
            children.append(simulator)
            _await_simulator(simulator, simulator_port)
            print(
                f"sora-proxy: no upstream set; using the simulated upstreams on 127.0.0.1 ports "
                f"{simulator_port}-{simulator_port + len(FLEET) - 1} (one per dialect; "
                f"GET /v1/videos/models lists their models)",
                file=sys.stderr,
            )
        command = [sys.executable, "-m", "gunicorn", "--bind", bind]
        config = config or (_REPO_CONFIG if _REPO_CONFIG.exists() else None)
        if config is not None:
            command += ["--config", str(config)]
        else:
            command += ["--worker-class", "gthread", "--threads", "16", "--preload"]
        gunicorn = subprocess.Popen(  # noqa: S603
            [*command, "sora_proxy.wsgi_entry:app"], env=environ
        )
        children.append(gunicorn)
        return _watch(gunicorn, simulator)
    except KeyboardInterrupt:
        return 0
    finally:
        for child in reversed(children):
            _stop(child)


def _watch(gunicorn: subprocess.Popen[bytes], simulator: subprocess.Popen[bytes] | None) -> int:
    """Wait for gunicorn; stop it on Ctrl-C or SIGTERM, or when the simulator dies under it."""
    stopping = False
    while True:
        try:
            return gunicorn.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            if stopping or simulator is None or simulator.poll() is None:
                continue
            print(
                f"sora-proxy: the simulator exited (status {simulator.returncode}); "
                f"stopping the proxy",
                file=sys.stderr,
            )
            _stop(gunicorn)
            return 1
        except KeyboardInterrupt:
            stopping = True
            gunicorn.terminate()


def _stop(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is not None:
        return
    child.terminate()
    try:
        child.wait(timeout=_STOP_SECONDS)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def _refuse_taken(bind: str, what: str) -> None:
    """Exit with one line if ``host:port`` cannot be bound (other bind forms are gunicorn's)."""
    host, sep, port = bind.rpartition(":")
    if not sep or not port.isdigit() or bind.startswith(("unix:", "fd://")):
        return
    host = host.strip("[]") or "0.0.0.0"  # noqa: S104  (only probed, then closed)
    if not _can_bind(host, int(port)):
        raise SystemExit(f"sora-proxy: {host}:{port}, {what}, is already in use")


def _refuse_overlap(bind: str, simulator_port: int) -> None:
    """Exit with one line if the proxy's port is one the simulated upstreams will take."""
    port = bind.rpartition(":")[2]
    last = simulator_port + len(FLEET) - 1
    if port.isdigit() and simulator_port <= int(port) <= last:
        raise SystemExit(
            f"sora-proxy: the proxy's port {port} (SORA_PROXY_BIND or --bind) is among the "
            f"simulated upstreams' ports {simulator_port}-{last}; move one of them"
        )


def _can_bind(host: str, port: int) -> bool:
    """False only if something already holds ``host:port``; other bind errors (an unknown
    host, a privileged port) are left to the server, which names them itself."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As the servers themselves do, so a port left in TIME_WAIT still counts as free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            return error.errno != errno.EADDRINUSE
    return True


def _simulated_upstreams(port: int, folder: Path) -> dict[str, str]:
    """Settings for the simulated fleet: its upstreams file (written to ``folder``) and URL
    fetches from loopback, where the gateways' result host listens."""
    upstreams = folder / "upstreams.toml"
    upstreams.write_text(upstreams_toml(port), encoding="utf-8")
    return {
        "SORA_PROXY_UPSTREAMS_FILE": str(upstreams),
        "SORA_PROXY_FETCH_ALLOW_PRIVATE": os.environ.get("SORA_PROXY_FETCH_ALLOW_PRIVATE", "true"),
    }


def _launch_simulator(port: int) -> subprocess.Popen[bytes]:
    """Start the simulator on 127.0.0.1:``port``, without access lines; refuse a taken port."""
    # Checked first so a program already there is named as the cause, not found answering
    # in the simulator's place.
    for taken in range(port, port + len(FLEET)):
        if not _can_bind("127.0.0.1", taken):
            raise SystemExit(
                f"sora-proxy: port {taken} is already in use, so the simulator cannot start "
                f"there (it takes ports {port}-{port + len(FLEET) - 1}); stop what holds it or "
                f"set SORA_PROXY_SIMULATOR_PORT (or --simulator-port)"
            )
    return subprocess.Popen(  # noqa: S603
        [
            sys.executable,
            "-m",
            "sora_proxy.simulator",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--quiet",
            "--all",
        ],
        stdout=subprocess.DEVNULL,
    )


def _await_simulator(process: subprocess.Popen[bytes], port: int) -> None:
    """Return once ``process`` itself answers on ``port``: alive, and reporting its own pid."""
    deadline = time.monotonic() + _SIMULATOR_START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(
                f"sora-proxy: the simulator exited (status {process.returncode}) before it "
                f"answered on port {port}"
            )
        pid = _simulator_pid(port)
        if pid == process.pid:
            return
        if pid is not None:
            raise SystemExit(f"sora-proxy: another simulator answers on port {port}, not ours")
        time.sleep(0.1)
    raise SystemExit(f"sora-proxy: the simulator did not answer on port {port} in time")


def _simulator_pid(port: int) -> int | None:
    """The pid the simulator on ``port`` reports, or None while nothing (or no simulator)
    answers there."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        connection.request("GET", _SIMULATOR_IDENTITY)
        response = connection.getresponse()
        body = json.loads(response.read()) if response.status == 200 else None
    except (OSError, http.client.HTTPException, ValueError):
        return None
    finally:
        connection.close()
    if isinstance(body, dict) and body.get("object") == "sora_simulator":
        pid = body.get("pid")
        return pid if isinstance(pid, int) else None
    return None


if __name__ == "__main__":
    raise SystemExit(main())
