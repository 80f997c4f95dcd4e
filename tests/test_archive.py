"""One contract, two archives: every test runs against a local folder and against S3 (moto's
real server over HTTP), then the serving tests go through a real HTTP server with requests."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from flask import Flask, abort, jsonify, request
from s3_server import ACCESS_KEY, SECRET_KEY, S3Server
from servers import served

from sora_proxy.archive import (
    Archive,
    ArchiveError,
    LocalArchive,
    S3Archive,
    archived_response,
    open_archive,
)
from sora_proxy.archive.base import CHUNK_SIZE
from sora_proxy.errors import ProxyError

MiB = 1024 * 1024


@dataclass
class Backend:
    archive: Archive
    kind: str
    #: Seconds between two puts for their stored times to order: S3 lists whole seconds.
    gap: float
    bucket: str = ""
    s3: S3Server | None = None

    def leftovers(self) -> list[str]:
        """Everything the backend holds besides what stat() shows: files, objects, uploads."""
        if self.s3 is None:
            root = self.archive.root  # type: ignore[attr-defined]
            return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
        client = self.s3.client()
        objects = client.list_objects_v2(Bucket=self.bucket).get("Contents", [])
        uploads = client.list_multipart_uploads(Bucket=self.bucket).get("Uploads", [])
        return sorted([o["Key"] for o in objects] + [f"upload:{u['Key']}" for u in uploads])


@pytest.fixture(params=["local", "s3"])
def backend(request, tmp_path) -> Backend:
    if request.param == "local":
        return Backend(open_archive(None, str(tmp_path)), "local", gap=0.02)
    s3 = request.getfixturevalue("s3_server")
    request.getfixturevalue("aws_env")
    bucket = f"archive-{uuid.uuid4().hex[:12]}"
    s3.client().create_bucket(Bucket=bucket)
    url = f"s3://{bucket}/kept/here?endpoint_url={s3.url}&region=us-east-1"
    return Backend(open_archive(url, str(tmp_path)), "s3", gap=1.05, bucket=bucket, s3=s3)


def random_chunks(size: int, chunk: int = 1_000_003, seed: int = 7) -> Iterator[bytes]:
    """``size`` pseudo-random bytes in odd-sized chunks (so parts never align with them)."""
    generator = __import__("random").Random(seed)
    sent = 0
    while sent < size:
        piece = generator.randbytes(min(chunk, size - sent))
        sent += len(piece)
        yield piece


def body_of(size: int, seed: int = 7) -> bytes:
    return b"".join(random_chunks(size, seed=seed))


def failing_after(data: bytes, chunk: int = MiB) -> Iterator[bytes]:
    for offset in range(0, len(data), chunk):
        yield data[offset : offset + chunk]
    raise RuntimeError("the upstream broke off")


# --- storing and reading -------------------------------------------------------------------


def test_large_body_round_trips_byte_exact(backend: Backend):
    size = 20 * MiB + 12345  # three 8 MiB parts on S3, the last short
    expected = body_of(size)
    stored = backend.archive.put("videos/v1/video", random_chunks(size), content_type="video/mp4")

    assert stored.size == size
    assert stored.etag == hashlib.sha256(expected).hexdigest()
    assert stored.content_type == "video/mp4"
    assert abs(stored.stored_at - time.time()) < 30
    assert backend.archive.stat("videos/v1/video") == stored
    assert b"".join(backend.archive.read("videos/v1/video")) == expected
    part = 8 * MiB
    for start, end in [(0, 0), (part - 10, part + 10), (size - 5, size - 1), (12345, None)]:
        got = b"".join(backend.archive.read("videos/v1/video", start, end))
        assert got == expected[start : None if end is None else end + 1]
    # Only the object itself is left: no temporary copy, no unfinished upload.
    assert [name for name in backend.leftovers() if ".partial-" in name or "upload:" in name] == []


@pytest.mark.parametrize("size", [0, 1, 8 * MiB, 8 * MiB + 1])
def test_part_boundaries(backend: Backend, size: int):
    expected = body_of(size, seed=size)
    stored = backend.archive.put("k", random_chunks(size, seed=size), content_type="image/webp")
    assert stored.etag == hashlib.sha256(expected).hexdigest()
    assert backend.archive.stat("k") == stored
    assert b"".join(backend.archive.read("k")) == expected


def test_a_source_that_fails_leaves_nothing(backend: Backend):
    data = body_of(10 * MiB)  # past one part: S3 has started a multipart upload
    with pytest.raises(RuntimeError, match="broke off"):
        backend.archive.put("videos/v/video", failing_after(data), content_type="video/mp4")
    assert backend.archive.stat("videos/v/video") is None
    assert backend.leftovers() == []


def test_a_failed_put_keeps_the_older_object(backend: Backend):
    old = backend.archive.put("videos/v/video", [b"old bytes"], content_type="video/mp4")
    for failing in (failing_after(body_of(10 * MiB)), failing_after(b"")):
        with pytest.raises(RuntimeError):
            backend.archive.put("videos/v/video", failing, content_type="video/webm")
    assert backend.archive.stat("videos/v/video") == old
    assert b"".join(backend.archive.read("videos/v/video")) == b"old bytes"
    assert not [name for name in backend.leftovers() if ".partial-" in name or "upload:" in name]


def test_a_put_in_progress_is_invisible(backend: Backend):
    release, halfway = threading.Event(), threading.Event()
    data = body_of(9 * MiB)

    def slow() -> Iterator[bytes]:
        yield data[: 9 * MiB - 100]
        halfway.set()
        release.wait(30)
        yield data[9 * MiB - 100 :]

    result: list = []
    writer = threading.Thread(
        target=lambda: result.append(backend.archive.put("a/b", slow(), content_type="x/y"))
    )
    writer.start()
    try:
        assert halfway.wait(30)
        time.sleep(0.2)  # let the first part reach the backend
        assert backend.archive.stat("a/b") is None
        assert backend.archive.local_path("a/b") is None
        assert backend.archive.sweep(now=time.time(), retention=0, max_bytes=0) == []
    finally:
        release.set()
        writer.join(30)
    assert result and backend.archive.stat("a/b") == result[0]
    assert b"".join(backend.archive.read("a/b")) == data


def test_delete_prefix(backend: Backend):
    for key in ("videos/a/video", "videos/a/thumbnail", "videos/ab/video", "videos/b/video"):
        backend.archive.put(key, [key.encode()], content_type="text/plain")
    assert backend.archive.delete_prefix("videos/a/") == 2
    assert backend.archive.stat("videos/a/video") is None
    assert backend.archive.stat("videos/a/thumbnail") is None
    assert backend.archive.stat("videos/ab/video") is not None
    assert backend.archive.delete_prefix("videos/a/") == 0
    assert backend.archive.delete_prefix("videos/a") == 1  # a string prefix, as in S3
    assert [b"".join(backend.archive.read("videos/b/video"))] == [b"videos/b/video"]


def test_sweep_by_retention(backend: Backend):
    backend.archive.put("old", [b"1" * 10], content_type="text/plain")
    time.sleep(backend.gap)
    middle = time.time()
    time.sleep(backend.gap)
    backend.archive.put("new", [b"2" * 10], content_type="text/plain")
    now = time.time()
    assert backend.archive.sweep(now=now, retention=now - middle, max_bytes=None) == ["old"]
    assert backend.archive.stat("old") is None
    assert backend.archive.stat("new") is not None
    assert backend.archive.sweep(now=now, retention=3600, max_bytes=None) == []


def test_sweep_by_size_oldest_first(backend: Backend):
    for key in ("first", "second", "third"):
        backend.archive.put(key, [b"x" * 100], content_type="text/plain")
        time.sleep(backend.gap)
    now = time.time()
    assert backend.archive.sweep(now=now, retention=None, max_bytes=300) == []
    assert backend.archive.sweep(now=now, retention=None, max_bytes=250) == ["first"]
    assert backend.archive.sweep(now=now, retention=None, max_bytes=100) == ["second"]
    assert backend.archive.stat("third") is not None
    assert backend.archive.sweep(now=now, retention=None, max_bytes=0) == ["third"]
    assert backend.leftovers() == []


def test_sweep_deletes_old_leftovers_of_dead_writes(backend: Backend):
    backend.archive.put("videos/v/video", [b"kept"], content_type="video/mp4")
    if backend.s3 is None:
        folder = backend.archive.root / "videos" / "v"  # type: ignore[attr-defined]
        (folder / "video.partial-dead").write_bytes(b"half a vid")
        (folder / "thumbnail.meta.json").write_text("{}")  # its data file never arrived
    else:
        # Named as a killed put names them: its start time, by our clock, then a random part.
        # (moto reports every upload as begun in 2010, so the name's time is what counts.)
        dead = f"kept/here/videos/v/video.partial-{int(time.time())}-dead"
        client = backend.s3.client()
        client.put_object(Bucket=backend.bucket, Key=dead)
        client.create_multipart_upload(Bucket=backend.bucket, Key=dead + "2")
    before = backend.leftovers()
    assert backend.archive.sweep(now=time.time(), retention=None, max_bytes=None) == []
    assert backend.leftovers() == before  # young: could be a write under way
    assert backend.archive.stat("videos/v/video") is not None
    later = time.time() + 7200
    assert backend.archive.sweep(now=later, retention=None, max_bytes=None) == []
    assert not [name for name in backend.leftovers() if "partial" in name or "thumbnail" in name]
    assert b"".join(backend.archive.read("videos/v/video")) == b"kept"


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/abs",
        "a//b",
        "a/",
        "../a",
        "a/../b",
        "a/./b",
        "..",
        "a\\b",
        "a\x00b",
        "a\nb",
        "v.meta.json",
        "a/v.partial-1",
    ],
)
def test_bad_keys_are_refused(backend: Backend, key: str):
    with pytest.raises(ValueError):
        backend.archive.put(key, [b"x"], content_type="text/plain")
    for call in (backend.archive.stat, backend.archive.read, backend.archive.local_path):
        with pytest.raises(ValueError):
            call(key)
    assert backend.leftovers() == []


def test_bad_prefixes_are_refused(backend: Backend):
    for prefix in ("", "/", "../", "a//"):
        with pytest.raises(ValueError):
            backend.archive.delete_prefix(prefix)


def test_ping_and_describe(backend: Backend):
    backend.archive.ping()
    description = backend.archive.describe()
    assert description.startswith("local folder" if backend.s3 is None else "s3 bucket")
    assert ACCESS_KEY not in description and SECRET_KEY not in description


def test_read_is_lazy_and_releases_its_file(backend: Backend):
    backend.archive.put("k", random_chunks(3 * MiB), content_type="video/mp4")
    never_started = backend.archive.read("k")
    never_started.close()
    reading = backend.archive.read("k")
    assert len(next(reading)) == CHUNK_SIZE
    reading.close()
    with pytest.raises(StopIteration):
        next(reading)
    missing = backend.archive.read("missing")
    with pytest.raises(ArchiveError):
        next(missing)


# --- local specifics -----------------------------------------------------------------------


def test_local_layout_and_local_path(tmp_path: Path):
    archive = LocalArchive(tmp_path / "a")
    archive.put("videos/v/video", [b"abc"], content_type="video/mp4")
    assert archive.local_path("videos/v/video") == tmp_path / "a/videos/v/video"
    assert archive.local_path("videos/v/thumbnail") is None
    assert sorted(p.name for p in (tmp_path / "a/videos/v").iterdir()) == [
        "video",
        "video.meta.json",
    ]
    archive.delete_prefix("videos/v/")
    assert list((tmp_path / "a").iterdir()) == []  # emptied folders go too


def test_local_sidecar_missing_or_stale_is_rebuilt(tmp_path: Path):
    archive = LocalArchive(tmp_path)
    first = archive.put("k", [b"first bytes"], content_type="video/mp4")
    sidecar = tmp_path / "k.meta.json"
    sidecar.unlink()
    rebuilt = archive.stat("k")
    assert rebuilt is not None and (rebuilt.size, rebuilt.etag) == (first.size, first.etag)
    assert sidecar.exists()  # healed

    # A writer killed between its two renames: the new sidecar beside the old file.
    archive.put("other", [b"other bytes!"], content_type="video/mp4")
    os.replace(tmp_path / "other.meta.json", sidecar)
    stale = archive.stat("k")
    assert stale is not None and stale.etag == hashlib.sha256(b"first bytes").hexdigest()


def test_local_sigkill_never_leaves_a_partial_file_at_the_key(tmp_path: Path):
    script = f"""
import sys, time
from sora_proxy.archive import LocalArchive
def slow():
    while True:
        yield b"x" * 65536
        time.sleep(0.001)
LocalArchive({str(tmp_path)!r}).put("videos/v/video", slow(), content_type="video/mp4")
"""
    archive = LocalArchive(tmp_path)
    archive.put("videos/v/video", [b"older"], content_type="video/mp4")
    child = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).parent.parent)
    try:
        deadline = time.monotonic() + 30
        while not any(p.stat().st_size > MiB for p in tmp_path.rglob("video.partial-*")):
            assert time.monotonic() < deadline and child.poll() is None
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert (tmp_path / "videos/v/video").read_bytes() == b"older"
    assert b"".join(archive.read("videos/v/video")) == b"older"
    assert archive.sweep(now=time.time() + 7200, retention=None, max_bytes=None) == []
    assert sorted(p.name for p in (tmp_path / "videos/v").iterdir()) == ["video", "video.meta.json"]


def test_local_unusable_folder_fails_ping(tmp_path: Path):
    (tmp_path / "file").write_text("not a folder")
    archive = LocalArchive(tmp_path / "file" / "archive")
    with pytest.raises(ArchiveError):
        archive.ping()
    with pytest.raises(ArchiveError):
        archive.put("k", [b"x"], content_type="text/plain")


# --- S3 specifics --------------------------------------------------------------------------


def test_s3_keeps_the_hash_as_metadata_and_copies_big_objects_in_parts(
    s3_server: S3Server, aws_env, tmp_path: Path
):
    bucket = f"archive-{uuid.uuid4().hex[:12]}"
    s3_server.client().create_bucket(Bucket=bucket)
    archive = S3Archive(bucket, "p", endpoint_url=s3_server.url, copy_part_size=6 * MiB)
    expected = body_of(20 * MiB)
    stored = archive.put("k", random_chunks(20 * MiB), content_type="video/mp4")
    head = s3_server.client().head_object(Bucket=bucket, Key="p/k")
    assert head["Metadata"]["sha256"] == stored.etag == hashlib.sha256(expected).hexdigest()
    assert head["ContentType"] == "video/mp4"
    assert b"".join(archive.read("k")) == expected
    assert archive.local_path("k") is None


def test_s3_errors_are_archive_errors_without_secrets(s3_server: S3Server, aws_env):
    archive = S3Archive("no-such-bucket", endpoint_url=s3_server.url)
    for attempt in (
        archive.ping,
        lambda: archive.put("k", [b"x"], content_type="text/plain"),
        lambda: archive.sweep(now=time.time(), retention=0, max_bytes=None),
    ):
        with pytest.raises(ArchiveError) as caught:
            attempt()
        assert ACCESS_KEY not in str(caught.value) and SECRET_KEY not in str(caught.value)
        assert "NoSuchBucket" in str(caught.value)


# --- open_archive --------------------------------------------------------------------------


def test_open_archive_forms(tmp_path: Path, aws_env):
    default = open_archive(None, str(tmp_path))
    assert isinstance(default, LocalArchive)
    assert default.root == tmp_path / "sora_proxy-archive"
    assert open_archive("", str(tmp_path)).describe() == default.describe()
    assert open_archive(f"file://{tmp_path}/x", "/i").root == tmp_path / "x"  # type: ignore[attr-defined]
    assert open_archive(f"{tmp_path}/y", "/i").root == tmp_path / "y"  # type: ignore[attr-defined]
    s3 = open_archive("s3://bucket/a/b/?endpoint_url=http://127.0.0.1:9/&region=eu-west-1", "/i")
    assert s3.describe() == "s3 bucket bucket prefix a/b/ at http://127.0.0.1:9/"
    assert open_archive("s3://bucket", "/i").describe() == "s3 bucket bucket prefix /"


@pytest.mark.parametrize(
    "url",
    [
        "relative/path",
        "ftp://host/x",
        "file://host/x",
        "file:relative",
        "s3://",
        f"s3://{ACCESS_KEY}:{SECRET_KEY}@bucket/p",
        f"s3://bucket/p?aws_secret_access_key={SECRET_KEY}",
        f"s3://bucket/p?{SECRET_KEY}",
        "s3://bucket/p?region=us-east-1&region=eu-west-1",
        f"s3://bucket/p?endpoint_url=http://{ACCESS_KEY}:{SECRET_KEY}@host:9000",
        "s3://bucket/p?endpoint_url=ftp://host",
        "s3://bucket/a/../b",
    ],
)
def test_open_archive_refuses_with_one_clean_line(url: str, tmp_path: Path):
    with pytest.raises(ValueError) as caught:
        open_archive(url, str(tmp_path))
    message = str(caught.value)
    assert "\n" not in message and message
    assert SECRET_KEY not in message and ACCESS_KEY not in message


# --- serving over HTTP ---------------------------------------------------------------------


class Spy:
    """The archive, counting the reads the response makes."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self.reads: list[tuple[int, int | None]] = []

    def read(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        self.reads.append((start, end))
        return self.archive.read(key, start, end)


@pytest.fixture
def serving(backend: Backend):
    size = 3 * MiB + 17
    data = body_of(size, seed=3)
    stored = backend.archive.put(
        "videos/v/video", random_chunks(size, seed=3), content_type="video/mp4"
    )
    backend.archive.put("empty", [], content_type="image/webp")
    spy = Spy(backend.archive)
    app = Flask(__name__)
    # As the proxy's blueprint renders them: the envelope, with the error's headers.
    app.register_error_handler(
        ProxyError, lambda error: (jsonify(error.envelope()), error.status, error.headers)
    )

    @app.route("/content/<path:key>", methods=["GET", "HEAD"])
    def content(key: str):
        found = backend.archive.stat(key)
        if found is None:
            abort(404)
        return archived_response(spy, found, request.headers, method=request.method)  # type: ignore[arg-type]

    with served(app) as url:
        yield url + "/content/videos/v/video", data, stored, spy


def test_serving_whole_and_head(serving):
    url, data, stored, spy = serving
    answer = requests.get(url, timeout=30)
    assert answer.status_code == 200
    assert answer.content == data
    assert answer.headers["ETag"] == f'"{stored.etag}"'
    assert answer.headers["Content-Length"] == str(len(data))
    assert answer.headers["Content-Type"] == "video/mp4"
    assert answer.headers["Accept-Ranges"] == "bytes"
    assert answer.headers["Cache-Control"] == "private, max-age=3600"
    assert answer.headers["Last-Modified"].endswith("GMT")
    assert spy.reads == [(0, len(data) - 1)]

    head = requests.head(url, timeout=30)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["Content-Length"] == str(len(data))
    assert head.headers["ETag"] == f'"{stored.etag}"'
    assert spy.reads == [(0, len(data) - 1)]  # nothing read for the HEAD

    empty = requests.get(url.replace("videos/v/video", "empty"), timeout=30)
    assert (empty.status_code, empty.content, empty.headers["Content-Type"]) == (
        200,
        b"",
        "image/webp",
    )


@pytest.mark.parametrize(
    "header, start, stop",
    [
        ("bytes=0-0", 0, 1),
        ("bytes=100-1048675", 100, 1048676),
        ("bytes=3145000-", 3145000, None),
        ("bytes=-1000", -1000, None),
        ("bytes=10-99999999", 10, None),  # past the end: up to the end
        ("bytes=-99999999", 0, None),  # a suffix longer than the object: all of it
    ],
)
def test_serving_ranges(serving, header, start, stop):
    url, data, stored, spy = serving
    expected = data[start:stop]
    first = start if start >= 0 else len(data) + start
    answer = requests.get(url, headers={"Range": header}, timeout=30)
    assert answer.status_code == 206
    assert answer.content == expected
    assert (
        answer.headers["Content-Range"] == f"bytes {first}-{first + len(expected) - 1}/{len(data)}"
    )
    assert answer.headers["Content-Length"] == str(len(expected))
    head = requests.head(url, headers={"Range": header}, timeout=30)
    assert (head.status_code, head.headers["Content-Length"]) == (206, str(len(expected)))
    assert len(spy.reads) == 1


def test_serving_unsatisfiable_range(serving):
    url, data, stored, spy = serving
    answer = requests.get(url, headers={"Range": f"bytes={len(data)}-"}, timeout=30)
    assert answer.status_code == 416
    assert answer.headers["Content-Range"] == f"bytes */{len(data)}"
    assert answer.json()["error"]["code"] == "range_not_satisfiable"
    assert answer.json()["error"]["param"] == "Range"
    empty = requests.get(
        url.replace("videos/v/video", "empty"), headers={"Range": "bytes=-5"}, timeout=30
    )
    assert (empty.status_code, empty.headers["Content-Range"]) == (416, "bytes */0")
    assert spy.reads == []


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "bytes=9-2", "items=0-1", "bytes=x"])
def test_serving_many_or_bad_ranges_send_it_whole(serving, header):
    url, data, stored, spy = serving
    answer = requests.get(url, headers={"Range": header}, timeout=30)
    assert answer.status_code == 200 and answer.content == data


@pytest.mark.parametrize("form", ['"{}"', 'W/"{}"', '"other", "{}"', "*"])
def test_serving_if_none_match(serving, form):
    url, data, stored, spy = serving
    for method in (requests.get, requests.head):
        answer = method(url, headers={"If-None-Match": form.format(stored.etag)}, timeout=30)
        assert answer.status_code == 304
        assert answer.content == b""
        assert answer.headers["ETag"] == f'"{stored.etag}"'
    other = requests.get(url, headers={"If-None-Match": '"other"'}, timeout=30)
    assert other.status_code == 200 and other.content == data
    last_modified = other.headers["Last-Modified"]
    assert (
        requests.get(url, headers={"If-Modified-Since": last_modified}, timeout=30).status_code
        == 304
    )
    # If-None-Match wins over If-Modified-Since (RFC 9110 §13.1.3).
    both = {"If-None-Match": '"other"', "If-Modified-Since": last_modified}
    assert requests.head(url, headers=both, timeout=30).status_code == 200
    assert spy.reads == [(0, len(data) - 1)]


def test_serving_if_range(serving):
    url, data, stored, spy = serving
    last_modified = requests.head(url, timeout=30).headers["Last-Modified"]
    cases = {
        f'"{stored.etag}"': 206,
        '"something-else"': 200,
        f'W/"{stored.etag}"': 200,  # If-Range compares strongly
        last_modified: 206,
        "Thu, 01 Jan 2015 00:00:00 GMT": 200,
    }
    for if_range, status in cases.items():
        answer = requests.get(url, headers={"Range": "bytes=5-9", "If-Range": if_range}, timeout=30)
        assert answer.status_code == status, if_range
        assert answer.content == (data[5:10] if status == 206 else data)


def open_descriptors(path: Path) -> int:
    """How many of this process's file descriptors are open on ``path``."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}") == str(path)
        except OSError:
            pass
    return count


def test_serving_abandoned_download_closes_the_read(serving, backend: Backend):
    url, data, stored, spy = serving
    local = backend.archive.local_path("videos/v/video")
    with requests.get(url, stream=True, timeout=30) as answer:
        assert len(next(answer.iter_content(1024))) == 1024
    if local is not None:
        deadline = time.monotonic() + 10
        while open_descriptors(local) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert open_descriptors(local) == 0
    # The next request on the same object is served whole.
    assert requests.get(url, headers={"Range": "bytes=0-3"}, timeout=30).content == data[:4]
