"""examples/host_app.py: a host app's own pages and login, with the proxy mounted at /ai."""

from __future__ import annotations

import sys

import pytest
from conftest import UPSTREAM_KEY
from servers import REPO

from sora_proxy.simulator import SimulatorServer

if str(REPO) not in sys.path:  # the repository root, as for gunicorn 'examples.host_app:...'
    sys.path.insert(0, str(REPO))
from examples.host_app import create_host_app  # noqa: E402


@pytest.fixture(scope="module")
def sim():
    with SimulatorServer(seconds_per_step=0.05, api_key=UPSTREAM_KEY) as server:
        yield server


@pytest.fixture
def app(sim, tmp_path):
    return create_host_app(
        {
            "TESTING": True,
            "SECRET_KEY": "test-secret",
            "SORA_PROXY_UPSTREAM_URL": sim.base_url,
            "SORA_PROXY_UPSTREAM_API_KEY": UPSTREAM_KEY,
            "SORA_PROXY_STORE_URL": f"sqlite:///{tmp_path / 'host.db'}",
        }
    )


def logged_in(app, user, password):
    client = app.test_client()
    response = client.post("/login", data={"username": user, "password": password})
    assert response.status_code == 302
    return client


def test_the_hosts_own_pages_and_login(app):
    client = app.test_client()
    home = client.get("/")
    assert home.status_code == 200 and home.mimetype == "text/html"
    assert b"Log in" in home.data
    assert client.get("/login").status_code == 200
    assert client.get("/me").status_code == 401
    bad = client.post("/login", data={"username": "ann", "password": "nope"})
    assert bad.status_code == 401 and b"Wrong user or password" in bad.data
    assert client.post("/login", data={"username": "zed", "password": "x"}).status_code == 401
    assert client.get("/me").status_code == 401
    good = client.post("/login", data={"username": "ann", "password": "wonderland"})
    assert good.status_code == 302
    assert client.get("/me").get_json() == {"user": "ann"}
    assert b"Logged in as ann" in client.get("/").data
    assert client.get("/logout").status_code == 302
    assert client.get("/me").status_code == 401


def test_the_api_needs_a_login(app, sim):
    sim.state.clear_requests()
    response = app.test_client().get("/ai/v1/videos")
    assert response.status_code == 401
    error = response.get_json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert app.test_client().post("/ai/v1/videos", json={"prompt": "p"}).status_code == 401
    assert sim.state.requests == []


def test_each_user_sees_only_their_own_videos(app, sim):
    ann = logged_in(app, "ann", "wonderland")
    ben = logged_in(app, "ben", "builder")
    sim.state.clear_requests()

    created = ann.post("/ai/v1/videos", json={"prompt": "A kite over the dunes", "seconds": "4"})
    assert created.status_code == 200, created.get_data(as_text=True)
    video_id = created.get_json()["id"]
    assert ann.get(f"/ai/v1/videos/{video_id}").get_json()["id"] == video_id
    assert [v["id"] for v in ann.get("/ai/v1/videos").get_json()["data"]] == [video_id]

    hidden = ben.get(f"/ai/v1/videos/{video_id}")
    assert hidden.status_code == 404 and hidden.get_json()["error"]["code"] == "video_not_found"
    assert ben.get(f"/ai/v1/videos/{video_id}/content").status_code == 404
    assert ben.delete(f"/ai/v1/videos/{video_id}").status_code == 404
    assert ben.get("/ai/v1/videos").get_json()["data"] == []

    # Only ann's create went upstream, then polls of her video (the tracker's, or a retrieve
    # standing in for it), with the upstream key and no cookie; nothing of ben's.
    seen = [(r.method, r.path) for r in sim.state.requests]
    assert seen[0] == ("POST", "/v1/videos")
    assert set(seen[1:]) <= {("GET", f"/v1/videos/{video_id}")}
    for recorded in sim.state.requests:
        assert recorded.header("Authorization") == f"Bearer {UPSTREAM_KEY}"
        assert recorded.header("Cookie") is None


def test_the_hosts_own_404_stays_html(app):
    client = logged_in(app, "ann", "wonderland")
    for path in ("/nope", "/v1/videos", "/ai/nope"):
        response = client.get(path)
        assert response.status_code == 404 and response.mimetype == "text/html", path
    # Under the proxy's prefix, its own envelope.
    unknown = client.get("/ai/v1/videos/video_1/nope")
    assert unknown.status_code == 404 and unknown.get_json()["error"]["code"] == "unknown_route"
