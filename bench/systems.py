"""The systems under test, each started on 127.0.0.1 against one shared fast upstream.

* ``upstream``: the upstream alone (see :mod:`nginx_sites`), the baseline;
* ``sora_proxy``: gunicorn with ``config/gunicorn.conf.py`` (2 gthread workers x 16 threads),
  pass-through mode (the caller's ``Authorization`` goes upstream, nothing stored);
* ``sora_proxy_keyed``: the same with caller keys, an upstream key and the SQLite store, so
  every by-id call checks ownership and every answer is recorded;
* ``sora_proxy_nginx``: the documented deployment, the shipped nginx site
  (``config/nginx/sora-proxy.conf``) in front of the keyed gunicorn with the hand-off to
  nginx; its downloads are of a video it archived (nginx serving that file by itself is the
  upstream alone's download: the same bytes by ``sendfile``);
* ``nginx``: a plain ``proxy_pass`` (2 workers, no buffering, keep-alive upstream);
* ``litellm``: LiteLLM's proxy (uvicorn, 2 workers) from ``bench/.litellm-venv``, one
  ``openai/sora-2`` model pointing at the upstream.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nginx_sites import documented_site, plain_proxy, upstream_front
from procs import Service, ServiceGroup, children, free_port

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
LITELLM_BIN = BENCH / ".litellm-venv" / "bin" / "litellm"
CALLER_KEY = "sk-bench-caller-0123456789abcdef"
UPSTREAM_KEY = "sk-bench-upstream-0123456789abcdef"
LITELLM_MASTER_KEY = "sk-bench-litellm-0123456789abcdef0123456789abcdef"
WORKERS = 2
#: Any stray call to the internet (LiteLLM's cost map, an unrouted model) dies on this
#: loopback port instead of leaving the machine.
_NO_EGRESS = {
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "http_proxy": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "ALL_PROXY": "http://127.0.0.1:9",
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
}

ORDER = (
    "upstream",
    "sora_proxy",
    "sora_proxy_keyed",
    "sora_proxy_nginx",
    "nginx",
    "litellm",
    "litellm_1w",
)
LABELS = {
    "upstream": "upstream alone",
    "sora_proxy": "sora_proxy",
    "sora_proxy_keyed": "sora_proxy (keyed)",
    "sora_proxy_nginx": "sora_proxy behind nginx",
    "nginx": "nginx",
    "litellm": "LiteLLM",
    "litellm_1w": "LiteLLM (1 worker)",
}


@dataclass
class System:
    """A running system: where to send requests, with which headers, whose RSS to sample."""

    key: str
    service: Service | ServiceGroup
    headers: dict[str, str] = field(default_factory=dict)
    #: What the report says about the system's set-up.
    note: str = ""
    #: The archive folder, for a system whose downloads are of archived videos.
    archive: Path | None = None

    @property
    def label(self) -> str:
        """The name in tables and charts."""
        return LABELS[self.key]

    @property
    def url(self) -> str:
        """Base URL; the API lives under ``/v1/videos``."""
        return self.service.url


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SORA_PROXY_", "LITELLM_"))
        and k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
    }
    env.update(_NO_EGRESS)
    env.update(extra)
    return env


def start_simulator(work: Path) -> Service:
    """The repo's simulator under gunicorn (2 gthread workers), behind the upstream front."""
    port = free_port()
    conf = work / "simulator.gunicorn.py"
    # No control socket (gunicorn >= 25 shares one path per user); older versions ignore it.
    conf.write_text("control_socket_disable = True\n")
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        str(conf),
        "-b",
        f"127.0.0.1:{port}",
        "-w",
        str(WORKERS),
        "-k",
        "gthread",
        "--threads",
        "8",
        "sora_proxy.simulator:create_simulator_app(seconds_per_step=0.01)",
    ]
    return Service(
        "simulator (gunicorn)", argv, port, work / "simulator.log", env=_env({}), cwd=REPO
    )


def start_sink(work: Path) -> Service:
    """The upload sink (``bench/sink.py``): reads whole bodies, answers a Video."""
    port = free_port()
    return Service(
        "upload sink",
        [sys.executable, str(BENCH / "sink.py"), str(port)],
        port,
        work / "sink.log",
        env=_env({}),
    )


def start_upstream(work: Path, simulator: Service, sink: Service, large_file: Path) -> System:
    """The upstream alone: the nginx front (canned answers, static content) + simulator."""
    service = upstream_front(
        work / "upstream-nginx", simulator.port, sink.port, large_file, WORKERS
    )
    return System(
        "upstream",
        service,
        {"Authorization": f"Bearer {UPSTREAM_KEY}"},
        f"nginx ({WORKERS} workers): canned Video JSON for retrieve, one static file "
        "by sendfile for content; edits relayed unbuffered to bench/sink.py (reads "
        "the whole body, then answers); create to the simulator",
    )


#: The bench's archives hold at most this much (oldest evicted first).
ARCHIVE_MAX_BYTES = 3 * 1024**3


def keyed_settings(upstream_url: str, directory: Path) -> dict[str, str]:
    """Caller key ``bench`` (:data:`CALLER_KEY`), the upstream key, the SQLite store, the spool
    and the archive, all under ``directory`` (never the checkout's instance folder)."""
    directory.mkdir(parents=True, exist_ok=True)
    return {
        "SORA_PROXY_UPSTREAM_URL": upstream_url,
        "SORA_PROXY_API_KEYS": f"bench:{CALLER_KEY}",
        "SORA_PROXY_UPSTREAM_API_KEY": UPSTREAM_KEY,
        "SORA_PROXY_STORE_URL": f"sqlite:///{directory / 'sora_proxy.sqlite3'}",
        "SORA_PROXY_SPOOL_DIR": str(directory / "spool"),
        "SORA_PROXY_ARCHIVE_URL": f"file://{directory / 'archive'}",
        # Every video of the fast upstream is the large file: each create's copy would take
        # 1 GiB of disk (17 GB per system in a full run); keep the newest few.
        "SORA_PROXY_ARCHIVE_MAX_BYTES": str(ARCHIVE_MAX_BYTES),
    }


def start_gunicorn(
    name: str, log_path: Path, settings: dict[str, str], workers: int = WORKERS
) -> Service:
    """``gunicorn -c config/gunicorn.conf.py wsgi:app`` with ``settings`` (and nothing else
    ``SORA_PROXY_*`` from this environment) on a free port."""
    port = free_port()
    env = _env(
        {
            "SORA_PROXY_BIND": f"127.0.0.1:{port}",
            "WEB_CONCURRENCY": str(workers),
            "SORA_PROXY_ACCESS_LOG": "",
            **settings,
        }
    )
    argv = [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.conf.py", "wsgi:app"]
    return Service(name, argv, port, log_path, env=env, cwd=REPO)


def gunicorn_workers(service: Service) -> list[int]:
    """The gunicorn master's children (its workers) under ``service``'s ``timeout`` wrapper."""
    masters = children(service.process.pid)
    return sorted(pid for master in masters for pid in children(master))


def gunicorn_worker_class(service: Service) -> str:
    """The worker class gunicorn says it uses (``Using worker: gthread``), or ``?``."""
    try:
        text = service.log_path.read_text(errors="replace")
    except OSError:
        return "?"
    found = re.findall(r"Using worker: (\S+)", text)
    return found[-1] if found else "?"


def start_sora_proxy(work: Path, upstream: System, *, keyed: bool = False) -> System:
    """sora_proxy under gunicorn with the shipped config, pass-through or keyed."""
    key = "sora_proxy_keyed" if keyed else "sora_proxy"
    if keyed:
        settings = keyed_settings(f"{upstream.url}/v1", work / key)
    else:
        settings = {"SORA_PROXY_UPSTREAM_URL": f"{upstream.url}/v1"}
    service = start_gunicorn(LABELS[key], work / f"{key}.log", settings)
    mode = "caller keys + upstream key + SQLite store" if keyed else "pass-through"
    token = CALLER_KEY if keyed else UPSTREAM_KEY
    return System(
        key,
        service,
        {"Authorization": f"Bearer {token}"},
        f"gunicorn {WORKERS} gthread workers x 16 threads, {mode}",
    )


def start_sora_proxy_nginx(work: Path, upstream: System) -> System:
    """The documented deployment: the shipped nginx site in front of the keyed gunicorn, with
    the hand-off to nginx (``SORA_PROXY_HANDOFF=nginx``) and ``SORA_PROXY_TRUSTED_PROXIES=1``.
    Its downloads are of a video it archived (see ``run.py``)."""
    directory = work / "sora_proxy_nginx"
    settings = {
        **keyed_settings(f"{upstream.url}/v1", directory),
        "SORA_PROXY_HANDOFF": "nginx",
        "SORA_PROXY_TRUSTED_PROXIES": "1",
        "SORA_PROXY_POLL_INTERVAL": "0.5",
    }
    gunicorn = start_gunicorn("sora_proxy (behind nginx)", work / "sora_proxy_nginx.log", settings)
    try:
        front = documented_site(directory / "nginx", gunicorn.port, directory / "archive")
    except BaseException:
        gunicorn.stop()
        raise
    return System(
        "sora_proxy_nginx",
        ServiceGroup("sora_proxy behind nginx", [front, gunicorn]),
        {"Authorization": f"Bearer {CALLER_KEY}"},
        "config/nginx/sora-proxy.conf (nginx, 2 workers) in front of gunicorn "
        f"({gunicorn_worker_class(gunicorn)}), keyed + SQLite store + local archive, "
        "SORA_PROXY_HANDOFF=nginx, SORA_PROXY_TRUSTED_PROXIES=1; content: the archived copy",
        archive=directory / "archive",
    )


def start_nginx(work: Path, upstream: System) -> System:
    """nginx as a plain reverse proxy to the upstream."""
    service = plain_proxy(work / "proxy-nginx", upstream.service.port, WORKERS)
    return System(
        "nginx",
        service,
        {"Authorization": f"Bearer {UPSTREAM_KEY}"},
        f"{WORKERS} workers, proxy_buffering off, keepalive upstream",
    )


def litellm_version() -> str | None:
    """The installed LiteLLM version, or ``None`` if ``bench/.litellm-venv`` lacks it."""
    metadata = list((BENCH / ".litellm-venv").glob("lib/python*/site-packages/litellm-*.dist-info"))
    if not LITELLM_BIN.exists() or not metadata:
        return None
    return metadata[0].name.removeprefix("litellm-").removesuffix(".dist-info")


def start_litellm(work: Path, upstream: System, workers: int = WORKERS) -> System:
    """LiteLLM's proxy with one OpenAI-provider model routed to the upstream.

    With ``workers`` > 1 uvicorn's supervisor runs the workers; ``workers=1`` (LiteLLM's
    default) is one process, the system ``litellm_1w``.
    """
    if litellm_version() is None:
        log = BENCH / ".litellm-install.log"
        lines = [
            line
            for line in (log.read_text(errors="replace").splitlines() if log.exists() else [])
            if "is ignored" not in line
        ]
        why = f"; the install said: {lines[-1].strip()}" if lines else ""
        raise RuntimeError(f"LiteLLM is not installed at {LITELLM_BIN} (bench/install.sh)" + why)
    port = free_port()
    config = work / "litellm.yaml"
    config.write_text(f"""\
model_list:
  - model_name: sora-2
    litellm_params:
      model: openai/sora-2
      api_base: {upstream.url}/v1
      api_key: {UPSTREAM_KEY}
litellm_settings:
  telemetry: false
general_settings:
  master_key: {LITELLM_MASTER_KEY}
""")
    argv = [
        str(LITELLM_BIN),
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        str(workers),
    ]
    env = _env({"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"})
    key = "litellm" if workers > 1 else "litellm_1w"
    service = Service(
        LABELS[key], argv, port, work / f"{key}.log", env=env, cwd=work, start_timeout=180
    )
    return System(
        key,
        service,
        {"Authorization": f"Bearer {LITELLM_MASTER_KEY}"},
        f"litellm[proxy] {litellm_version()}, uvicorn, {workers} worker(s), master key",
    )


STARTERS: dict[str, Callable[[Path, System], System]] = {
    "sora_proxy": start_sora_proxy,
    "sora_proxy_keyed": lambda work, upstream: start_sora_proxy(work, upstream, keyed=True),
    "sora_proxy_nginx": start_sora_proxy_nginx,
    "nginx": start_nginx,
    "litellm": start_litellm,
}
