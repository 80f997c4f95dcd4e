"""Request ids, the JSON log line, metrics, health and readiness."""

from __future__ import annotations

import json
import logging
import re
import socket

import pytest
import requests
from conftest import CALLER_KEY, UPSTREAM_KEY
from flask import Flask
from servers import Gunicorn

from sora_proxy import SoraProxy, create_app
from sora_proxy.simulator import SimulatorServer

AUTH = {"Authorization": f"Bearer {CALLER_KEY}"}
FIELDS = {
    "ts",
    "request_id",
    "caller",
    "method",
    "route",
    "path",
    "status",
    "upstream",
    "upstream_request_id",
    "client_addr",
    "bytes_in",
    "bytes_out",
    "duration_ms",
    "error_code",
}


def keyed(make_app, tmp_path, **extra):
    return make_app(
        upstream_api_key=UPSTREAM_KEY,
        api_keys=f"olga:{CALLER_KEY}",
        store_url=f"sqlite:///{tmp_path}/s.db",
        **extra,
    )


def access_lines(caplog):
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "sora_proxy.access"]


def test_one_json_line_per_request_with_the_fields(make_app, upstream, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="sora_proxy")
    client = keyed(make_app, tmp_path).test_client()
    response = client.post(
        "/v1/videos", json={"prompt": "a secret plan"}, headers={**AUTH, "X-Request-ID": "mine-123"}
    )
    assert response.status_code == 200
    (line,) = access_lines(caplog)
    assert set(line) == FIELDS
    assert line["request_id"] == "mine-123" and line["caller"] == "olga"
    assert line["method"] == "POST" and line["route"] == "/v1/videos" and line["status"] == 200
    assert line["upstream"] == "default" and line["client_addr"] == "127.0.0.1"
    assert line["bytes_in"] > 0 and line["bytes_out"] == len(response.get_data())
    assert line["duration_ms"] >= 0
    assert upstream.state.requests[-1].header("X-Request-ID") == "mine-123"
    text = caplog.text
    assert CALLER_KEY not in text and UPSTREAM_KEY not in text and "a secret plan" not in text


def test_prompts_are_logged_only_when_asked(make_app, upstream, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="sora_proxy")
    client = keyed(make_app, tmp_path, log_prompts="true").test_client()
    client.post("/v1/videos", json={"prompt": "a lighthouse"}, headers=AUTH)
    (line,) = access_lines(caplog)
    assert line["prompt"] == "a lighthouse"


def test_request_id_is_made_when_missing_and_errors_are_logged(
    make_app, upstream, tmp_path, caplog
):
    caplog.set_level(logging.INFO, logger="sora_proxy")
    client = keyed(make_app, tmp_path).test_client()
    response = client.post("/v1/videos", json={"prompt": ""}, headers=AUTH)
    assert response.status_code == 400
    request_id = response.headers["X-Request-ID"]
    assert re.fullmatch(r"req_[0-9a-f]{32}", request_id)
    (line,) = access_lines(caplog)
    assert line["request_id"] == request_id and line["status"] == 400
    assert line["error_code"] == "http_400"  # field errors carry no code in the envelope
    assert line["upstream"] is None
    bad = client.get("/v1/videos", headers={"Authorization": "Bearer wrong"})
    assert access_lines(caplog)[-1]["error_code"] == "invalid_api_key"
    assert access_lines(caplog)[-1]["caller"] is None
    assert bad.headers["X-Request-ID"].startswith("req_")


def test_streamed_download_is_logged_with_bytes_sent(make_app, upstream, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="sora_proxy")
    client = keyed(make_app, tmp_path).test_client()
    video_id = client.post("/v1/videos", json={"prompt": "p"}, headers=AUTH).get_json()["id"]
    upstream.state.complete(video_id)
    response = client.get(f"/v1/videos/{video_id}/content", headers=AUTH)
    body = response.get_data()
    response.close()
    line = access_lines(caplog)[-1]
    assert line["route"] == "/v1/videos/<video_id>/content"
    assert line["bytes_out"] == len(body) > 0


def test_trusted_proxies_give_the_real_client_address(make_app, upstream, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="sora_proxy")
    forwarded = {"X-Forwarded-For": "203.0.113.9, 198.51.100.7"}  # documentation ranges; no traffic
    keyed(make_app, tmp_path, trusted_proxies="1").test_client().get("/healthz")
    keyed(make_app, tmp_path, trusted_proxies="1").test_client().get(
        "/v1/videos", headers={**AUTH, **forwarded}
    )
    keyed(make_app, tmp_path).test_client().get("/v1/videos", headers={**AUTH, **forwarded})
    one_hop, no_trust = access_lines(caplog)
    assert one_hop["client_addr"] == "198.51.100.7"
    assert no_trust["client_addr"] == "127.0.0.1"


def test_host_app_keeps_its_environ_but_logs_the_real_address(upstream, caplog):
    caplog.set_level(logging.INFO, logger="sora_proxy")
    host = Flask("host")
    host.config.update(SORA_PROXY_UPSTREAM_URL=upstream.base_url, SORA_PROXY_TRUSTED_PROXIES="2")

    @host.get("/whoami")
    def whoami():
        from flask import request

        return request.remote_addr or ""

    SoraProxy(host)
    client = host.test_client()
    headers = {"X-Forwarded-For": "192.0.2.1, 192.0.2.2"}
    assert client.get("/whoami", headers=headers).get_data(as_text=True) == "127.0.0.1"
    client.post("/v1/videos", json={"prompt": "p"}, headers=headers).close()  # logged at close
    (line,) = access_lines(caplog)
    assert line["client_addr"] == "192.0.2.1"


def test_metrics_move(make_app, upstream, tmp_path):
    app = keyed(make_app, tmp_path, metrics="true")
    client = app.test_client()
    client.post("/v1/videos", json={"prompt": "p"}, headers=AUTH)
    client.post("/v1/videos", json={"prompt": ""}, headers=AUTH)
    client.post(
        "/v1/videos",
        json={"prompt": "p", "input_reference": "http://127.0.0.1:9/x.png"},
        headers=AUTH,
    )
    text = client.get("/metrics").get_data(as_text=True)
    assert (
        'sora_proxy_requests_total{method="POST",route="/v1/videos",status="200",upstream="default"} 1.0'
        in text
    )
    assert (
        'sora_proxy_requests_total{method="POST",route="/v1/videos",status="400",upstream="none"} 2.0'
        in text
    )
    assert 'sora_proxy_reference_fetches_refused_total{reason="refused"} 1.0' in text
    assert 'sora_proxy_errors_total{code="invalid_reference_url"} 1.0' in text
    assert re.search(
        r'sora_proxy_upstream_latency_seconds_count\{route="/v1/videos",upstream="default"\} 1\.0',
        text,
    )
    assert re.search(r'sora_proxy_bytes_total\{direction="out",route="/v1/videos"\} [1-9]', text)
    assert "sora_proxy_requests_total{" in text and 'route="/metrics"' not in text


def test_metrics_are_off_by_default(client):
    assert client.get("/metrics").status_code == 404


def test_healthz_and_readyz(make_app, upstream, tmp_path):
    client = keyed(make_app, tmp_path).test_client()
    upstream.state.clear_requests()
    assert client.get("/healthz").get_json() == {"status": "ok"}
    assert upstream.state.requests == []  # no upstream call for liveness
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json() == {
        "status": "ok",
        "checks": {"store": "ok", "upstream:default": "ok"},
        "tracker": {"mode": "workers", "pending": {}},
    }
    before = len(upstream.state.requests)
    client.get("/readyz")
    assert len(upstream.state.requests) == before  # cached for a few seconds


def test_readyz_is_503_when_the_upstream_is_down(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = create_app({"SORA_PROXY_UPSTREAM_URL": f"http://127.0.0.1:{port}/v1"}).test_client()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["checks"] == {"upstream:default": "unreachable"}
    assert client.get("/healthz").status_code == 200


def test_metrics_under_gunicorn_aggregate_workers(tmp_path):
    with SimulatorServer(seconds_per_step=0.05) as sim:
        proxy = Gunicorn(
            {
                "SORA_PROXY_UPSTREAM_URL": sim.base_url,
                "SORA_PROXY_METRICS": "true",
                "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom"),
            },
            tmp_path / "g.log",
            workers=2,
        )
        try:
            for _ in range(12):
                requests.post(f"{proxy.url}/v1/videos", json={"prompt": "p"}, timeout=10)
            totals = set()
            for _ in range(6):  # whichever worker answers, it reports all workers' samples
                text = requests.get(f"{proxy.url}/metrics", timeout=10).text
                match = re.search(
                    r'sora_proxy_requests_total\{method="POST",route="/v1/videos",'
                    r'status="200",upstream="default"\} (\S+)',
                    text,
                )
                totals.add(float(match.group(1)))
            assert totals == {12.0}
        finally:
            log = proxy.stop()
        lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
        assert len([line for line in lines if line["route"] == "/v1/videos"]) == 12


@pytest.mark.parametrize("value", ["-1", "two"])
def test_bad_trusted_proxies_setting(upstream, value):
    from sora_proxy import ConfigError

    with pytest.raises(ConfigError, match="SORA_PROXY_TRUSTED_PROXIES"):
        create_app(
            {"SORA_PROXY_UPSTREAM_URL": upstream.base_url, "SORA_PROXY_TRUSTED_PROXIES": value}
        )
