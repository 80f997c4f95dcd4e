"""The ``sora-proxy`` command: serve the proxy under gunicorn, run the simulator, check config.

``sora-proxy serve`` is what ``make serve`` runs: when ``SORA_PROXY_UPSTREAM_URL`` is unset it
first starts the built-in simulator on 127.0.0.1 and points the proxy at it, so the proxy can
be tried with no account. Configuration is checked before gunicorn starts, so a bad setting
ends the command with one line naming the key.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from .errors import ConfigError
from .settings import environment_config, load_settings
from .upstreams import load_catalog, refuse_open_relay

_REPO_CONFIG = Path(__file__).resolve().parent.parent / "config" / "gunicorn.conf.py"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``sora-proxy`` console script."""
    parser = argparse.ArgumentParser(prog="sora-proxy", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the proxy under gunicorn")
    serve.add_argument("--bind", default=os.environ.get("SORA_PROXY_BIND", "127.0.0.1:8000"))
    serve.add_argument("--simulator-port", type=int, default=8001)
    serve.add_argument("--config", type=Path, default=None, help="gunicorn config file")
    simulator = commands.add_parser("simulator", help="run only the simulator upstream")
    simulator.add_argument("--host", default="127.0.0.1")
    simulator.add_argument("--port", type=int, default=8001)
    commands.add_parser("check", help="check the SORA_PROXY_* settings and exit")
    args = parser.parse_args(argv)

    if args.command == "simulator":
        from .simulator import main as simulator_main

        simulator_main(["--host", args.host, "--port", str(args.port)])
        return 0
    if args.command == "check":
        return _check(dict(os.environ))
    return _serve(args)


def _check(environ: dict[str, str]) -> int:
    try:
        settings = load_settings(environment_config(environ))
        refuse_open_relay(
            load_catalog(settings), settings, identifies_callers=bool(settings.api_keys)
        )
    except ConfigError as error:
        print(f"sora-proxy: configuration error: {error}", file=sys.stderr)
        return 2
    print("sora-proxy: configuration ok")
    return 0


def _serve(args: argparse.Namespace) -> int:
    environ = dict(os.environ)
    children: list[subprocess.Popen[bytes]] = []
    try:
        if not environ.get("SORA_PROXY_UPSTREAM_URL") and not environ.get(
            "SORA_PROXY_UPSTREAMS_FILE"
        ):
            children.append(_start_simulator(args.simulator_port))
            environ["SORA_PROXY_UPSTREAM_URL"] = f"http://127.0.0.1:{args.simulator_port}/v1"
            print(f"sora-proxy: no upstream set; using the simulator at "
                  f"{environ['SORA_PROXY_UPSTREAM_URL']}", file=sys.stderr)
        if _check(environ) != 0:
            return 2
        command = [sys.executable, "-m", "gunicorn", "--bind", args.bind]
        config = args.config or (_REPO_CONFIG if _REPO_CONFIG.exists() else None)
        if config is not None:
            command += ["--config", str(config)]
        else:
            command += ["--worker-class", "gthread", "--threads", "16"]
        gunicorn = subprocess.Popen([*command, "sora_proxy:create_app()"], env=environ)  # noqa: S603
        children.append(gunicorn)
        signal.signal(signal.SIGTERM, lambda *_: gunicorn.terminate())
        try:
            return gunicorn.wait()
        except KeyboardInterrupt:
            gunicorn.terminate()
            return gunicorn.wait()
    finally:
        for child in reversed(children):
            if child.poll() is None:
                child.terminate()
                child.wait(timeout=15)


def _start_simulator(port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "sora_proxy.simulator", "--host", "127.0.0.1", "--port", str(port)]
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"sora-proxy: the simulator failed to start on port {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return process
        except OSError:
            time.sleep(0.1)
    process.terminate()
    raise SystemExit(f"sora-proxy: the simulator did not start listening on port {port}")


if __name__ == "__main__":
    raise SystemExit(main())
