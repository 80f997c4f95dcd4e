"""The official openai Node SDK (tests/node, installed by .ci/node-packages) through the
proxy to xAI's dialect: the same round trip the Python SDK makes."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from images import make_image
from test_dialect_xai import ALICE, MODEL, MP4, UPSTREAM_KEY, _stack

NODE_DIR = Path(__file__).resolve().parent / "node"


def test_node_sdk_round_trip_through_the_xai_dialect(tmp_path):
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules" / "openai").is_dir():
        pytest.fail("Node.js and the openai Node SDK are missing: run bash .ci/node-packages")
    reference = tmp_path / "cat.png"
    reference.write_bytes(make_image(1280, 720, "PNG"))
    with _stack(tmp_path) as stack:
        result = subprocess.run(
            [
                node,
                str(NODE_DIR / "round_trip.mjs"),
                f"{stack.url}/v1",
                ALICE,
                MODEL,
                str(reference),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        seen = json.loads(result.stdout.strip().splitlines()[-1])
        assert seen["created"] == ["queued", "queued"]
        assert all(video_id.startswith("video_") for video_id in seen["ids"])
        assert seen["done"] == {"status": "completed", "progress": 100, "model": MODEL}
        assert seen["sha256"] == hashlib.sha256(MP4).hexdigest() and seen["length"] == len(MP4)
        assert sorted(seen["listed"]) == sorted(seen["ids"])
        assert seen["deleted"] is True and seen["afterDelete"] == 404
        creates = stack.upstream("POST")
        assert [r.path for r in creates] == ["/v1/videos/generations"] * 3
        image = creates[1].json["image"]["url"]
        assert image.startswith("data:image/png;base64,")
        assert base64.b64decode(image.split(",", 1)[1]) == reference.read_bytes()
        # The video came from xAI's credential-free URL, which never saw a key.
        assert stack.results.state.requests
        for fetched in stack.results.state.requests:
            assert fetched.header("Authorization") is None
            assert UPSTREAM_KEY not in str(fetched.headers)
