"""Bad input gets a 4xx in the envelope, never a 500; upstream refusals of the proxy's key and
ids of other callers never reach callers or the upstream; broken downloads are logged as such."""

from __future__ import annotations

import io
import json
import logging
import socket

import pytest
import requests
from conftest import CALLER_KEY, UPSTREAM_KEY
from servers import Gunicorn

from sora_proxy import create_app
from sora_proxy.simulator import SimulatorServer
from sora_proxy.simulator.media import load as load_asset
from sora_proxy.simulator.records import FailureSpec

MP4, _, _ = load_asset("video")
AUTH = {"Authorization": f"Bearer {CALLER_KEY}"}
DEEP = 10_000


def assert_error(response, status: int, code: str | None = None, param: str | None = None) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    if code is not None:
        assert error["code"] == code, error
    if param is not None:
        assert error["param"] == param, error
    return error


@pytest.fixture
def keyed(make_app, tmp_path):
    def build(**extra):
        return make_app(
            upstream_api_key=UPSTREAM_KEY,
            api_keys=f"alice:{CALLER_KEY},bob:sk-bob",
            store_url=f"sqlite:///{tmp_path}/s.db",
            spool_dir=str(tmp_path / "spool"),
            **extra,
        ).test_client()

    return build


# -- nesting ---------------------------------------------------------------------------------


def _deep_json(depth: int) -> bytes:
    return b'{"prompt": "p", "metadata": ' + b'{"a": ' * depth + b"1" + b"}" * depth + b"}"


@pytest.mark.parametrize(
    "path",
    [
        "/v1/videos",
        "/v1/videos/video_1/remix",
        "/v1/videos/edits",
        "/v1/videos/extensions",
        "/sora/v1/characters",
    ],
)
@pytest.mark.parametrize("idempotent", [False, True])
def test_deeply_nested_json_is_400(keyed, upstream, caplog, path, idempotent):
    client = keyed()
    headers = {**AUTH, "Content-Type": "application/json"}
    if idempotent:
        headers["Idempotency-Key"] = "deep"
    response = client.post(path, data=_deep_json(DEEP), headers=headers)
    error = assert_error(response, 400, "invalid_json")
    assert "nested" in error["message"]
    assert upstream.state.requests == []
    assert not any(record.exc_info for record in caplog.records)


def test_json_nested_just_within_the_limit_is_judged_on_its_fields(keyed, upstream):
    body = json.dumps({"prompt": "p", "metadata": json.loads(_deep_json(20))["metadata"]})
    response = keyed().post(
        "/v1/videos", data=body, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert response.status_code == 200, response.get_json()


def test_deeply_nested_multipart_metadata_and_bracket_names_are_400(keyed, upstream):
    client = keyed()
    deep_text = _deep_json(DEEP).decode()[len('{"prompt": "p", "metadata": ') : -1]
    response = client.post(
        "/v1/videos",
        headers=AUTH,
        content_type="multipart/form-data",
        data={"prompt": "p", "metadata": deep_text},
    )
    assert_error(response, 400, param="metadata")
    name = "metadata" + "[a]" * 1000
    response = client.post(
        "/v1/videos",
        headers={**AUTH, "Idempotency-Key": "b"},
        content_type="multipart/form-data",
        data={"prompt": "p", name: "1"},
    )
    assert_error(response, 400, "invalid_multipart")
    assert upstream.state.requests == []


# -- multipart framing -----------------------------------------------------------------------


def _multipart(boundary: str, *, close: bool = True) -> bytes:
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nA cat\r\n'
    ).encode()
    return body + (f"--{boundary}--\r\n".encode() if close else b"")


@pytest.mark.parametrize(
    "content_type, body, says",
    [
        ("multipart/form-data", _multipart("abc"), "no boundary"),
        ("multipart/form-data; boundary=xyz", _multipart("abc"), "no part"),
        ("multipart/form-data; boundary=abc", _multipart("abc", close=False), "ends before"),
        ("multipart/form-data; boundary=abc", b"--abc\r\nno headers here", "closing boundary"),
    ],
)
def test_malformed_multipart_is_invalid_multipart(keyed, upstream, content_type, body, says):
    response = keyed().post("/v1/videos", data=body, headers={**AUTH, "Content-Type": content_type})
    error = assert_error(response, 400, "invalid_multipart")
    assert says in error["message"]
    assert upstream.state.requests == []


@pytest.mark.parametrize("video", ["abc", [1, 2], "", 7])
def test_edit_video_of_the_wrong_type_names_the_field(keyed, upstream, video):
    response = keyed().post("/v1/videos/edits", json={"prompt": "p", "video": video}, headers=AUTH)
    error = assert_error(response, 400, param="video")
    assert "_schema" not in error["message"]


# -- methods ---------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["TRACE", "CONNECT", "PATCH", "PUT"])
def test_every_method_gets_the_envelope(client, method):
    response = client.open("/v1/videos/video_1", method=method)
    assert_error(response, 405, "method_not_allowed")
    assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD", "DELETE", "OPTIONS"}


@pytest.mark.parametrize(
    "path, allowed",
    [
        ("/v1/videos/video_1", {"GET", "HEAD", "DELETE"}),
        ("/v1/videos", {"GET", "HEAD", "POST"}),
        ("/v1/videos/video_1/content", {"GET", "HEAD"}),
        ("/v1/videos/video_1/remix", {"POST"}),
    ],
)
def test_options_lists_only_what_the_route_takes(client, path, allowed):
    response = client.options(path)
    assert response.status_code == 204
    assert set(response.headers["Allow"].split(", ")) == allowed | {"OPTIONS"}
    for method in {"PUT", "PATCH", "POST", "DELETE", "GET"} - allowed:
        assert client.open(path, method=method).status_code == 405


def test_unknown_path_with_trace_is_a_404_envelope(client):
    assert_error(client.open("/v1/videos/a/b/c", method="TRACE"), 404, "unknown_route")


# -- the proxy's own key refused upstream ----------------------------------------------------


def test_upstream_refusing_the_proxy_key_is_502_without_its_text(tmp_path, caplog):
    caplog.set_level(logging.ERROR, "sora_proxy")
    with SimulatorServer(seconds_per_step=0.05, api_key="sk-the-right-one") as sim:
        client = create_app(
            {
                "SORA_PROXY_UPSTREAM_URL": sim.base_url,
                "SORA_PROXY_UPSTREAM_API_KEY": UPSTREAM_KEY,
                "SORA_PROXY_API_KEYS": f"alice:{CALLER_KEY}",
                "SORA_PROXY_STORE_URL": f"sqlite:///{tmp_path}/s.db",
                "SORA_PROXY_SPOOL_DIR": str(tmp_path / "spool"),
            }
        ).test_client()
        for response in (
            client.post("/v1/videos", json={"prompt": "p"}, headers=AUTH),
            client.post(
                "/v1/videos", json={"prompt": "p"}, headers={**AUTH, "Idempotency-Key": "i"}
            ),
        ):
            error = assert_error(response, 502, "upstream_auth_failed")
            assert response.headers["x-should-retry"] == "false"
            assert "Incorrect API key" not in error["message"]
            assert UPSTREAM_KEY[-4:] not in response.get_data(as_text=True)
        # Nothing was paid: the key is free again, and retried it is refused the same way.
        again = client.post(
            "/v1/videos", json={"prompt": "p"}, headers={**AUTH, "Idempotency-Key": "i"}
        )
        assert_error(again, 502, "upstream_auth_failed")
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("refused the proxy's key" in line for line in logged)
    assert not any(UPSTREAM_KEY in line for line in logged)


def test_pass_through_relays_the_upstreams_401_to_the_caller(tmp_path):
    with SimulatorServer(seconds_per_step=0.05, api_key="sk-callers-own") as sim:
        client = create_app({"SORA_PROXY_UPSTREAM_URL": sim.base_url}).test_client()
        response = client.post(
            "/v1/videos", json={"prompt": "p"}, headers={"Authorization": "Bearer sk-wrong"}
        )
        assert_error(response, 401, "invalid_api_key")


# -- ids of other callers in create bodies ---------------------------------------------------


def _character(client, headers) -> str:
    response = client.post(
        "/v1/videos/characters",
        headers=headers,
        data={"name": "Kite", "video": (io.BytesIO(MP4), "k.mp4", "video/mp4")},
    )
    assert response.status_code == 200, response.get_json()
    return response.get_json()["id"]


@pytest.mark.parametrize(
    "field, shape",
    [
        ("characters", lambda cid: [{"id": cid}]),
        ("characters", lambda cid: [cid]),
        ("character_ids", lambda cid: [cid]),
    ],
)
def test_characters_of_another_caller_are_not_found(keyed, upstream, field, shape):
    client = keyed()
    alices = _character(client, AUTH)
    upstream.state.clear_requests()
    bob = {"Authorization": "Bearer sk-bob"}
    for path, body in (("/v1/videos", {"prompt": "p"}),):
        error = assert_error(
            client.post(path, json={**body, field: shape(alices)}, headers=bob),
            404,
            "character_not_found",
        )
        assert alices in error["message"]
    assert upstream.state.requests == []
    own = client.post("/v1/videos", json={"prompt": "p", field: shape(alices)}, headers=AUTH)
    assert own.status_code == 200
    (sent,) = upstream.state.requests
    assert json.loads(sent.form[field][0]) == shape(alices)  # a text part, JSON-encoded


def test_characters_in_a_multipart_create_are_checked_too(keyed, upstream):
    client = keyed()
    alices = _character(client, AUTH)
    upstream.state.clear_requests()
    response = client.post(
        "/v1/videos",
        headers={"Authorization": "Bearer sk-bob"},
        content_type="multipart/form-data",
        data={"prompt": "p", "character_ids[]": alices},
    )
    assert_error(response, 404, "character_not_found")
    assert upstream.state.requests == []


def test_file_ids_are_refused_when_callers_share_the_key(keyed, upstream):
    response = keyed().post(
        "/v1/videos", json={"prompt": "p", "input_reference": {"file_id": "file-abc"}}, headers=AUTH
    )
    assert_error(response, 404, "file_not_found", "input_reference.file_id")
    assert upstream.state.requests == []


# -- through gunicorn: chunked framing, caps, broken downloads --------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("served")
    with SimulatorServer(seconds_per_step=0.05) as sim:
        proxy = Gunicorn(
            {
                "SORA_PROXY_UPSTREAM_URL": sim.base_url,
                "SORA_PROXY_MAX_REFERENCE_BYTES": str(1024 * 1024),
                "SORA_PROXY_METRICS": "true",
                "PROMETHEUS_MULTIPROC_DIR": str(tmp / "prom"),
            },
            tmp / "gunicorn.log",
            workers=1,
        )
        try:
            yield proxy, sim
        finally:
            log = proxy.stop()
            assert "Traceback" not in log, log


def _raw(proxy: Gunicorn, head: str, body: bytes) -> tuple[int, dict]:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as conn:
        conn.sendall(head.encode() + b"\r\n" + body)
        received = b""
        while b"\r\n\r\n" not in received or not received.rstrip().endswith(b"}"):
            chunk = conn.recv(65536)
            if not chunk:
                break
            received += chunk
    status = int(received.split(b" ", 2)[1])
    return status, json.loads(received.split(b"\r\n\r\n", 1)[1])


def _chunked(path: str, content_type: str) -> str:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
        "Transfer-Encoding: chunked\r\nConnection: close\r\n"
    )


def _chunks(data: bytes, size: int = 65536) -> bytes:
    out = b"".join(
        b"%x\r\n%s\r\n" % (len(data[i : i + size]), data[i : i + size])
        for i in range(0, len(data), size)
    )
    return out + b"0\r\n\r\n"


@pytest.mark.parametrize(
    "path, content_type",
    [
        ("/v1/videos", "application/json"),
        ("/v1/videos", "multipart/form-data; boundary=abc"),
        ("/v1/videos/edits", "multipart/form-data; boundary=abc"),
        ("/v1/videos/video_1/remix", "application/json"),
    ],
)
def test_bad_chunk_size_is_400(served, path, content_type):
    proxy, sim = served
    before = len(sim.state.requests)
    status, body = _raw(proxy, _chunked(path, content_type), b"zz\r\nhello\r\n0\r\n\r\n")
    assert status == 400, body
    assert body["error"]["code"] == "invalid_body"
    assert len(sim.state.requests) == before


@pytest.mark.parametrize(
    "content_type, data",
    [
        ("application/json", b'{"prompt": "' + b"x" * (5 * 1024 * 1024) + b'"}'),
        (
            "multipart/form-data; boundary=abc",
            b'--abc\r\nContent-Disposition: form-data; name="prompt"\r\n\r\n'
            + b"x" * (5 * 1024 * 1024)
            + b"\r\n--abc--\r\n",
        ),
    ],
)
def test_chunked_body_over_the_cap_is_413(served, content_type, data):
    proxy, sim = served
    status, body = _raw(proxy, _chunked("/v1/videos", content_type), _chunks(data))
    assert status == 413, body
    assert body["error"]["code"] == "request_too_large"


def test_download_cut_off_by_the_upstream_is_logged_as_such(served):
    proxy, sim = served
    video_id = sim.state.add_large_video(8 * 1024 * 1024, seed=3)
    sim.state.fail_next.append(
        FailureSpec(
            path_prefix=f"/v1/videos/{video_id}/content", method="GET", truncate_after=1024 * 1024
        )
    )
    with pytest.raises(
        (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError)
    ):
        with requests.get(
            f"{proxy.url}/v1/videos/{video_id}/content", stream=True, timeout=30
        ) as got:
            for _ in got.iter_content(65536):
                pass
    deadline_lines = []
    for _ in range(50):
        deadline_lines = [
            json.loads(line)
            for line in proxy.log_path.read_text().splitlines()
            if line.startswith("{") and f"/{video_id}/content" in line
        ]
        if deadline_lines:
            break
        import time

        time.sleep(0.1)
    (line,) = deadline_lines
    assert line["error_code"] == "upstream_broke_off"
    assert 0 < line["bytes_out"] < 8 * 1024 * 1024
    metrics = requests.get(f"{proxy.url}/metrics", timeout=10).text
    assert 'sora_proxy_errors_total{code="upstream_broke_off"} 1.0' in metrics
