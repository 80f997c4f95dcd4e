"""Two simulated upstreams of different dialects behind one proxy: the OpenAI API and xAI,
whose finished videos are served by a result host; and the upstreams file that names them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sora_proxy.simulator import SimulatorServer
from sora_proxy.simulator.gateways.results import create_result_host_app
from sora_proxy.simulator.xai import create_xai_app


@dataclass
class UpstreamPair:
    """The running simulators: ``openai`` (upstream ``openai``, model ``sora-2``), ``xai``
    (upstream ``xai``, model ``grok-imagine-video``) and the ``results`` host xAI links to."""

    openai: SimulatorServer
    xai: SimulatorServer
    results: SimulatorServer
    openai_key: str
    xai_key: str

    def toml(self) -> str:
        """An upstreams file naming both."""
        return upstreams_toml(
            self.openai.base_url, self.openai_key, self.xai.base_url, self.xai_key
        )


def upstreams_toml(
    openai_url: str, openai_key: str, xai_url: str | None = None, xai_key: str | None = None
) -> str:
    """An upstreams file: the OpenAI upstream, and the xAI one when its URL is given."""
    text = (
        f'[[upstream]]\nname = "openai"\nbase_url = "{openai_url}"\napi_key = "{openai_key}"\n'
        '[upstream.models."sora-2"]\n'
    )
    if xai_url:
        text += (
            f'\n[[upstream]]\nname = "xai"\nbase_url = "{xai_url}"\ndialect = "xai"\n'
            f'api_key = "{xai_key}"\n[upstream.models."grok-imagine-video"]\n'
            'sizes = ["1280x720", "720x1280"]\nseconds = ["4", "8"]\n'
        )
    return text


@contextmanager
def openai_and_xai(
    openai_key: str, xai_key: str, *, seconds_per_step: float
) -> Iterator[UpstreamPair]:
    """Both simulators and the result host on 127.0.0.1, stopped at the end of the block."""
    with (
        SimulatorServer(api_key=openai_key, seconds_per_step=seconds_per_step) as openai_sim,
        SimulatorServer(app=create_result_host_app()) as results,
    ):
        xai_app = create_xai_app(
            api_key=xai_key,
            seconds_per_step=seconds_per_step,
            result_base_url=results.base_url.removesuffix("/v1"),
        )
        with SimulatorServer(app=xai_app) as xai_sim:
            yield UpstreamPair(openai_sim, xai_sim, results, openai_key, xai_key)
