"""Uploaded videos are judged by their whole container structure, walked as they stream.

Unit tests of :mod:`sora_proxy.containers`, then uploads through the app and gunicorn with the
simulator as upstream: a file that only *starts* like a video is refused, and the upstream
never holds a complete request for it.
"""

from __future__ import annotations

import base64
import random
import struct
import zlib
from collections.abc import Iterator

import pytest
import requests
from servers import Gunicorn
from test_create_validation import assert_error
from videos import MB, MIN_MP4_SIZE, MP4, VideoUpload, ebml_element, mp4_chunks, mp4_head, webm

from sora_proxy.containers import ContainerWalker, checked_video_chunks
from sora_proxy.errors import InvalidRequest
from sora_proxy.simulator import SimulatorServer

#: The 24-byte ``ftyp`` box the simulator's large bodies start with.
FTYP = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"
#: A VP8 WebM written by libavformat with its ``live`` option: an unknown-size Segment.
LIVE_WEBM = zlib.decompress(
    base64.b64decode("""
eNqTcr2/eL5TWyOj03cg/tTI4vS5kcOpqaU8NSnXqb2Ryam1kUkiuCGd8T8ECPrOLlntu7s7eHWLqOfKtOA1jQshPLGQ
ddlA3lnf3T1AnlDI4fTgNU2MAm8YGcAgg4FOAOSq5VrXNzbzOzn4NvT6JJalmRnpGQKRgVG4Iyof5OZ966AuNL3eyFh8
tOPuDed95jGqN+Y0MihtndNcmpfS0cjQ1hoWHxZg0dzIqPy4uYX160OGB20bGh12NRqAPLq4uHhB8oGG9BOzXBe3u/o5
+7u4Brm0o1ol77yt1HHx80aGxSsaGRgaNjAxzGXUcmAwYGBw52ht7Wht6WBiYmDr8z9zfPbHCIZ//1cHNCxe3siQwmDI
xMAqsIZBwp+58olkcWTlAiblhn87bs2wexrjw3STj+mGG8PixY0MJxguMkIUMhho6H9hYHFj+LdSaM2lfZN3Wy7fklTC
sHhpI6MOFkWH1nzSUw/giFOJEvbjbgCZxTiBGLO+EGHWkkamCCzK0Fw/u5FpD4MgyJsCIgkMmeb7LzDcEnyWzvDvdRTI
CGYFNCMUsAUAcwsRjmZ+QdjR4IgKeN7E4gMKVgYiTAVGEjFBgTWKMPyBNY4wAn8CcRH5hQizsMYQulk4o+hNHzjwFeDJ
lEHHgf8Lw5XCwwrdE/4t+/kt8O4edVsfBgC+PGqP""")
)


def box(kind: bytes, payload: bytes = b"") -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


MOOV = box(b"moov", b"\x00" * 100)
MDAT = box(b"mdat", b"\x01" * 100)
SMALL_MP4 = FTYP + MOOV + MDAT


def walk(data: bytes, step: int | None = None, max_size: int | None = None) -> None:
    walker = ContainerWalker(max_size=max_size)
    step = step or len(data) or 1
    for start in range(0, len(data), step):
        walker.feed(data[start : start + step])
    walker.finish()


def refusal(data: bytes, step: int | None = None, max_size: int | None = None) -> str:
    with pytest.raises(InvalidRequest) as caught:
        walk(data, step, max_size)
    assert caught.value.code == "invalid_video" and caught.value.param == "video"
    return caught.value.message


# --- MP4 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("step", [1, 7, 1000, None])
def test_real_mp4_in_any_chunking(step):
    walk(MP4, step)


@pytest.mark.parametrize("size", [MIN_MP4_SIZE, 1_000_003, 3 * MB])
def test_made_mp4_of_any_size_is_whole(size):
    data = b"".join(mp4_chunks(size))
    assert len(data) == size
    walk(data, 65536)


def test_random_after_ftyp_is_refused():
    noise = random.Random(1).randbytes(20 * MB)
    message = refusal(FTYP + noise, MB)
    assert "at byte 24" in message and "not a whole MP4" in message


def test_a_box_type_must_be_printable():
    message = refusal(FTYP + box(b"xyz\x01") + MOOV + MDAT)
    assert message == (
        "'video': the MP4 box 'xyz\\x01' at byte 24 is not a box type: the file is not a whole MP4."
    )


@pytest.mark.parametrize("cut", [1, 50, 100, 108, 109])
def test_truncated_mp4_is_refused(cut):
    assert "not a whole MP4" in refusal(SMALL_MP4[:-cut])


def test_mp4_cut_mid_media_is_refused():
    message = refusal(MP4[:-1000], 333)
    assert "'mdat'" in message and "1000 more bytes" in message


def test_trailing_bytes_are_refused():
    assert "ends inside a box header" in refusal(SMALL_MP4 + b"\x00\x00")


def test_a_box_overshooting_the_end_is_refused():
    data = FTYP + MOOV + struct.pack(">I4s", 5000, b"mdat") + b"\x00" * 100
    assert "needs 4892 more bytes" in refusal(data)
    # With a bound on the file's size the box is refused as soon as its header is read.
    walker = ContainerWalker(max_size=len(data))
    with pytest.raises(InvalidRequest, match="past the largest possible end"):
        walker.feed(data[: len(FTYP) + len(MOOV) + 8])


def test_size_zero_runs_to_the_end_of_the_file():
    walk(FTYP + MOOV + struct.pack(">I4s", 0, b"mdat") + b"\x00" * 5000, 999)
    # Everything after a size-0 box is inside it: a moov there is not a box.
    assert "no 'moov'" in refusal(FTYP + struct.pack(">I4s", 0, b"mdat") + MOOV)


def test_64_bit_largesize():
    walk(FTYP + MOOV + struct.pack(">I4sQ", 1, b"mdat", 16 + 50) + b"\x00" * 50, 5)
    assert "shorter than its own 16-byte header" in refusal(
        FTYP + MOOV + struct.pack(">I4sQ", 1, b"mdat", 8) + MDAT
    )
    # A 5 GiB file (bytes fed as views of one zero block: nothing this large is held).
    size = (5 << 30) + 7
    head = mp4_head(size)
    at = head.index(b"mdat") - 4
    assert struct.unpack(">I4sQ", head[at : at + 16]) == (1, b"mdat", size - at)
    walker = ContainerWalker()
    walker.feed(head)
    block = memoryview(bytes(MB))
    left = size - len(head)
    while left:
        walker.feed(block[: min(left, MB)])
        left -= min(left, MB)
    walker.finish()


def test_a_box_shorter_than_its_header_is_refused():
    assert "shorter than its own 8-byte header" in refusal(FTYP + struct.pack(">I4s", 4, b"free"))


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (box(b"ftyp", b"mp42") + MOOV + MDAT, "does not start with an 'ftyp' box"),
        (FTYP + MDAT, "no 'moov'"),
        (FTYP + MOOV + box(b"free"), "no 'mdat'"),
        (FTYP + MOOV + MOOV + MDAT, "a second 'moov' box starts at byte"),
        (b"not a video at all", "is not an MP4, QuickTime or WebM video"),
        (b"", "is not an MP4, QuickTime or WebM video"),
    ],
)
def test_mp4_requirements(data, why):
    assert why in refusal(data)


# --- WebM -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [webm(), webm(live=True), webm(doc_type=b"matroska"), LIVE_WEBM],
    ids=["known-size", "unknown-size", "matroska", "libavformat-live"],
)
@pytest.mark.parametrize("step", [1, 5, None])
def test_whole_webm_in_any_chunking(data, step):
    walk(data, step)


def test_libavformat_live_webm_has_an_unknown_size_segment():
    assert LIVE_WEBM[:4] == b"\x1a\x45\xdf\xa3"
    assert b"\x18\x53\x80\x67\x01\xff\xff\xff\xff\xff\xff\xff" in LIVE_WEBM


@pytest.mark.parametrize("data", [webm(), webm(live=True), LIVE_WEBM])
def test_truncated_or_extended_webm_is_refused(data):
    for cut in (1, 7, len(data) // 2):
        assert "not a whole WebM" in refusal(data[:-cut])
    assert "not a whole WebM" in refusal(data + b"\x00")


def test_ebml_magic_followed_by_noise_is_refused():
    assert "not a whole WebM" in refusal(b"\x1a\x45\xdf\xa3" + random.Random(2).randbytes(MB))
    assert "not a whole WebM" in refusal(b"\x1a\x45\xdf\xa3" + b"\x00" * 64)


def test_webm_requirements():
    header = webm()[: webm().index(b"\x18\x53\x80\x67")]
    tracks = ebml_element(0x1654AE6B, ebml_element(0xAE))
    cluster = ebml_element(0x1F43B675, ebml_element(0xE7, b"\x00"))
    assert "DocType is 'mkvx'" in refusal(webm(doc_type=b"mkvx"))
    assert "no Segment" in refusal(header)
    assert "no Tracks" in refusal(header + ebml_element(0x18538067, cluster))
    assert "no Cluster" in refusal(header + ebml_element(0x18538067, tracks))
    assert "unknown size, which only a Segment or Cluster may have" in refusal(
        header + ebml_element(0x18538067, ebml_element(0x1654AE6B, unknown_size=True))
    )
    # A child longer than its Segment.
    inner = tracks + cluster
    segment = ebml_element(0x18538067, inner)
    oversized = segment[:4] + ((1 << 56) | (len(inner) - 1)).to_bytes(8, "big") + inner
    assert "runs past the end of the element holding it" in refusal(header + oversized)
    # Reserved IDs (all value bits set) and a size with no length marker.
    assert "reserved" in refusal(header + b"\x7f\xff\x81\x00")
    assert "invalid size" in refusal(header + b"\xec\x00")


# --- checked_video_chunks (the character_url path) -------------------------------------------


def test_checked_video_chunks_pass_a_whole_video_unchanged():
    chunks = list(mp4_chunks(3 * MB + 5, 100_000))
    assert list(checked_video_chunks(chunks[0], iter(chunks[1:]))) == chunks


def test_checked_video_chunks_hold_back_the_last_chunk_of_a_bad_one():
    chunks = list(mp4_chunks(3 * MB + 5, 100_000))
    chunks[-1] = chunks[-1][:-1]
    sent: list[bytes] = []
    with pytest.raises(InvalidRequest) as caught:
        sent.extend(checked_video_chunks(chunks[0], iter(chunks[1:]), param="character_url"))
    assert caught.value.param == "character_url"
    assert sent == chunks[:-1]


def test_checked_video_chunks_refuse_a_bad_start_before_iteration():
    with pytest.raises(InvalidRequest, match="not a box type"):
        checked_video_chunks(FTYP + b"\x00\x00\x00\x10\x01\x02\x03\x04", iter([b"x" * 100]))


# --- through the app, the simulator upstream ----------------------------------------------


def multipart(
    video: bytes, name: str = "prompt", value: str = "Snow", boundary: str = "container-test"
) -> tuple[bytes, dict[str, str]]:
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="video"; filename="v.mp4"'
            "\r\nContent-Type: video/mp4\r\n\r\n"
        ).encode()
        + video
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def assert_no_complete_edit(sim: SimulatorServer, body_length: int, videos_before: int) -> None:
    edits = [r for r in sim.state.requests if r.path == "/v1/videos/edits"]
    assert not any(r.body_length == body_length for r in edits)
    assert len(sim.state.videos) == videos_before


def test_random_after_ftyp_is_refused_before_the_upstream(client, upstream):
    body, headers = multipart(FTYP + random.Random(3).randbytes(20 * MB))
    error = assert_error(client.post("/v1/videos/edits", data=body, headers=headers), 400, "video")
    assert error["code"] == "invalid_video"
    assert [r for r in upstream.state.requests if r.path == "/v1/videos/edits"] == []
    assert upstream.state.videos == {}


@pytest.mark.parametrize("route", ["/v1/videos/edits", "/v1/videos/characters"])
def test_a_video_cut_short_is_refused_at_its_end(client, upstream, route):
    # Valid as far as it goes: only its end shows the last box is short, after the upstream
    # was sent all but the held-back last chunk.
    video = b"".join(mp4_chunks(4 * MB + 3))[:-2]
    body, headers = multipart(video, *(("name", "Kite") if route.endswith("characters") else ()))
    error = assert_error(client.post(route, data=body, headers=headers), 400, "video")
    assert error["code"] == "invalid_video" and "needs 2 more bytes" in error["message"]
    assert not any(r.path == route and r.body_length == len(body) for r in upstream.state.requests)
    assert upstream.state.videos == {}


def test_webm_uploads_pass_byte_for_byte(client, upstream):
    for video in (webm(), webm(live=True), LIVE_WEBM):
        body, headers = multipart(video)
        response = client.post("/v1/videos/edits", data=body, headers=headers)
        assert response.status_code == 200, response.get_json()
        assert upstream.state.requests[-1].files["video"][0].data == video


# --- through gunicorn -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(seconds_per_step=0.05) as server:
        yield server


@pytest.fixture(scope="module")
def proxy(sim, tmp_path_factory) -> Iterator[Gunicorn]:
    server = Gunicorn(
        {"SORA_PROXY_UPSTREAM_URL": sim.base_url},
        tmp_path_factory.mktemp("gunicorn") / "gunicorn.log",
    )
    yield server
    server.stop()


def test_gunicorn_refuses_a_bad_video_and_passes_a_whole_one(proxy, sim):
    size = 50 * MB
    whole = VideoUpload(size, {"prompt": "Snow"})
    response = requests.post(
        f"{proxy.url}/v1/videos/edits",
        data=whole,
        timeout=120,
        headers={"Content-Type": whole.content_type},
    )
    assert response.status_code == 200, response.text
    (video,) = sim.state.requests[-1].files["video"]
    assert video.size == size and video.sha256 == whole.sha256

    videos_before = len(sim.state.videos)
    # 20 MiB of noise after an ftyp box, then 20 MiB cut short at the end: both refused.
    noise = FTYP + random.Random(4).randbytes(20 * MB - len(FTYP))
    cut = list(mp4_chunks(20 * MB + 1))
    cut[-1] = cut[-1][:-1]
    for chunks in ([noise], cut):
        upload = VideoUpload(20 * MB, {"prompt": "Snow"}, chunks=iter(chunks))
        response = requests.post(
            f"{proxy.url}/v1/videos/edits",
            data=upload,
            timeout=120,
            headers={"Content-Type": upload.content_type},
        )
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "invalid_video"
        assert response.json()["error"]["param"] == "video"
        assert_no_complete_edit(sim, len(upload), videos_before)


def test_character_url_pointing_at_noise_after_ftyp_is_refused(client, upstream, file_server):
    noise = MP4[:32] + random.Random(5).randbytes(3 * MB)
    cut = MP4[:-7]
    for name, body in (("noise.mp4", noise), ("cut.mp4", cut)):
        url = file_server.add(f"/{name}", body, **{"Content-Type": "video/mp4"})
        response = client.post(
            "/sora/v1/characters",
            json={"character_url": url, "character_timestamps": "1,2", "name": "Kite"},
        )
        error = assert_error(response, 400, "character_url")
        assert error["code"] == "invalid_video"
    assert not any(
        r.path == "/v1/videos/characters" and r.body_length >= len(cut)
        for r in upstream.state.requests
    )
    whole = file_server.add("/whole.mp4", MP4, **{"Content-Type": "video/mp4"})
    accepted = client.post(
        "/sora/v1/characters",
        json={"character_url": whole, "character_timestamps": "1,2", "name": "Kite"},
    )
    assert accepted.status_code == 200, accepted.get_json()
