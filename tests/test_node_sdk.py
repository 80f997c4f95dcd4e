"""The official openai Node SDK (tests/node, installed by .ci/node-packages) through the
proxy to a proxy-owned dialect: the same round trip as the Python SDK's."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from images import make_image
from test_dialects import ALICE, MP4, _stack

NODE_DIR = Path(__file__).resolve().parent / "node"


def test_node_sdk_round_trip(tmp_path):
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules" / "openai").is_dir():
        pytest.fail("Node.js and the openai Node SDK are missing: run bash .ci/node-packages")
    reference = tmp_path / "cat.png"
    reference.write_bytes(make_image(1280, 720, "PNG"))
    with _stack("new-api", tmp_path) as stack:
        result = subprocess.run(
            [
                node,
                str(NODE_DIR / "round_trip.mjs"),
                f"{stack.url}/v1",
                ALICE,
                "sora-2",
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
        assert seen["done"] == {"status": "completed", "progress": 100, "model": "sora-2"}
        assert seen["sha256"] == hashlib.sha256(MP4).hexdigest() and seen["length"] == len(MP4)
        assert sorted(seen["listed"]) == sorted(seen["ids"])
        assert seen["deleted"] is True and seen["afterDelete"] == 404
        creates = stack.upstream_requests("POST")
        assert len(creates) == 3
        assert creates[1].files["input_reference"][0].data == reference.read_bytes()
