"""Every simulated dialect at once, on consecutive ports: what ``make serve`` relays to.

``python -m sora_proxy.simulator --all --port 8001`` serves the exact OpenAI upstream on 8001,
then new-api, LiteLLM and reseller-style gateways, vLLM-Omni, and the result host the gateways
point their signed URLs at; :func:`upstreams_toml` describes them to the proxy, one model per
dialect, so ``GET /v1/videos/models`` lists them all.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from flask import Flask
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from .app import create_simulator_app
from .gateways import create_gateway_app
from .gateways.results import create_result_host_app
from .gemini import create_gemini_app
from .openrouter import create_openrouter_app
from .vllm_omni import DEFAULT_SERVED_MODEL, create_vllm_omni_app
from .xai import create_xai_app

#: (name, port offset from the first), in the order the ports are taken.
MEMBERS = (
    "openai",
    "new-api",
    "litellm",
    "reseller",
    "vllm-omni",
    "xai",
    "gemini",
    "openrouter",
    "results",
)


def build_apps(first_port: int, seconds_per_step: float) -> dict[str, Flask]:
    """One app per member; the gateways' result URLs point at the result host's port."""
    results_url = f"http://127.0.0.1:{first_port + MEMBERS.index('results')}"

    def gateway(style: str) -> Callable[[], Flask]:
        return lambda: create_gateway_app(
            style, seconds_per_step=seconds_per_step, result_base_url=results_url
        )

    factories: dict[str, Callable[[], Flask]] = {
        "openai": lambda: create_simulator_app(seconds_per_step=seconds_per_step),
        "new-api": gateway("new-api"),
        "litellm": gateway("litellm"),
        "reseller": gateway("reseller"),
        "vllm-omni": lambda: create_vllm_omni_app(seconds_per_step=seconds_per_step),
        "gemini": lambda: create_gemini_app(seconds_per_step=seconds_per_step),
        "openrouter": lambda: create_openrouter_app(
            seconds_per_step=seconds_per_step, storage_base_url=results_url
        ),
        "xai": lambda: create_xai_app(
            seconds_per_step=seconds_per_step, result_base_url=results_url
        ),
        "results": create_result_host_app,
    }
    return {name: factories[name]() for name in MEMBERS}


def serve_all(
    host: str,
    first_port: int,
    *,
    seconds_per_step: float,
    handler: type[WSGIRequestHandler],
    announce: Callable[[str], None],
) -> None:
    """Serve every member until interrupted (each port bound first, so a taken one fails
    before anything is served)."""
    servers: list[BaseWSGIServer] = []
    try:
        for offset, (name, app) in enumerate(build_apps(first_port, seconds_per_step).items()):
            port = first_port + offset
            servers.append(make_server(host, port, app, threaded=True, request_handler=handler))
            announce(f"sora simulator ({name}) listening on http://{host}:{port}/v1")
        threads = [
            threading.Thread(target=server.serve_forever, daemon=True) for server in servers[1:]
        ]
        for thread in threads:
            thread.start()
        servers[0].serve_forever()
    finally:
        for server in servers:
            server.server_close()


def upstreams_toml(first_port: int) -> str:
    """The ``[[upstream]]`` tables for :func:`serve_all`'s members, one model each (the exact
    OpenAI simulator offers the Sora models, and comes first: ``sora-2`` is the default)."""
    url = {name: f"http://127.0.0.1:{first_port + i}/v1" for i, name in enumerate(MEMBERS)}
    tables = [
        f'[[upstream]]\nname = "openai-sim"\nbase_url = "{url["openai"]}"\n'
        '[upstream.models."sora-2"]\n[upstream.models."sora-2-pro"]\n'
    ]
    for style in ("new-api", "litellm", "reseller"):
        tables.append(
            f'[[upstream]]\nname = "{style}-sim"\nbase_url = "{url[style]}"\n'
            f'dialect = "openai"\ngateway = "{style}"\n'
            f'[upstream.models."sora-2-{style}"]\ndeployment = "sora-2"\n'
            'sizes = ["720x1280", "1280x720"]\nseconds = ["4", "8", "12"]\n'
        )
    tables.append(
        f'[[upstream]]\nname = "vllm-omni-sim"\nbase_url = "{url["vllm-omni"]}"\n'
        'dialect = "vllm-omni"\n'
        f'[upstream.models."wan-2.2"]\ndeployment = "{DEFAULT_SERVED_MODEL}"\n'
        'sizes = ["832x480", "1280x720"]\nseconds = ["4", "8"]\n'
    )
    tables.append(
        f'[[upstream]]\nname = "xai-sim"\nbase_url = "{url["xai"]}"\ndialect = "xai"\n'
        '[upstream.models."grok-imagine-video"]\n'
        'sizes = ["1280x720", "720x1280", "848x480"]\nseconds = ["4", "8", "12"]\n'
    )
    gemini = f"http://127.0.0.1:{first_port + MEMBERS.index('gemini')}/v1beta"
    tables.append(
        f'[[upstream]]\nname = "gemini-sim"\nbase_url = "{gemini}"\ndialect = "gemini"\n'
        '[upstream.models."veo-3.1"]\ndeployment = "veo-3.1-generate-preview"\n'
        'sizes = ["1280x720", "720x1280", "1920x1080", "1080x1920"]\nseconds = ["4", "6", "8"]\n'
    )
    openrouter = f"http://127.0.0.1:{first_port + MEMBERS.index('openrouter')}/api/v1"
    tables.append(
        f'[[upstream]]\nname = "openrouter-sim"\nbase_url = "{openrouter}"\n'
        'dialect = "openrouter"\n'
        '[upstream.models."openai/sora-2-pro"]\ndeployment = "openai/sora-2-pro"\n'
        'sizes = ["1280x720", "720x1280", "1792x1024", "1024x1792"]\nseconds = ["4", "8", "12"]\n'
    )
    return "\n".join(tables)
