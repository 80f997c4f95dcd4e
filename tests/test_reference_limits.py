"""Reference images that are too big, bombs, or not images at all: refused with a code that
says what happened, before any upstream spend; big images that fit the budget are fitted exactly.

Memory itself is measured by ``bench/reference_memory.py``, not asserted here.
"""

from __future__ import annotations

import base64
import io
import threading
import time

import pytest
from images import data_uri, make_image, make_photo, pixel, pixel_size, png_chunk, zero_png
from PIL import Image

from sora_proxy import imagework
from sora_proxy.imageinfo import check_png_chunks, read_info

PROMPT = "A paper boat drifting down a rain gutter"


def creates(upstream):
    return [r for r in upstream.state.requests if r.method == "POST" and r.path == "/v1/videos"]


def assert_refused(response, upstream, code, param="input_reference", status=400):
    """The OpenAI error envelope with ``code``, and nothing sent upstream."""
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert (error["param"], error["code"]) == (param, code), error
    assert "Traceback" not in error["message"]
    assert creates(upstream) == []
    return error["message"]


def sent_reference(upstream):
    """The reference image part of the one create the simulator recorded."""
    from images import parse_multipart

    (recorded,) = creates(upstream)
    content_type = recorded.headers.get("Content-Type") or recorded.headers.get("content-type")
    parts = {part.name: part for part in parse_multipart(recorded.body, content_type)}
    return parts["input_reference"]


def post_json(client, reference, **fields):
    return client.post(
        "/v1/videos", json={"prompt": PROMPT, **fields, "input_reference": reference}
    )


def post_file(client, data, **fields):
    return client.post(
        "/v1/videos",
        data={
            "prompt": PROMPT,
            **fields,
            "input_reference": (io.BytesIO(data), "ref.png"),
        },
        content_type="multipart/form-data",
    )


# --- too large to decode -----------------------------------------------------------------


def test_16_bit_rgba_png_that_decodes_to_160_mb_is_refused_by_its_header(client, upstream):
    png = zero_png(6324, 6324, 16, 6)  # 311 KB on the wire
    assert len(png) < 400_000
    for response in (post_file(client, png, size="1280x720"), post_json(client, data_uri(png))):
        message = assert_refused(response, upstream, "image_too_large")
        assert "6324x6324" in message and "153 MiB" in message and "64 MiB" in message


def test_bomb_is_image_too_large_naming_its_size(client, upstream):
    bomb = zero_png(50000, 50000, 1, 0)
    message = assert_refused(post_file(client, bomb), upstream, "image_too_large")
    assert "50000x50000" in message and "megapixel" in message
    assert "corrupt" not in message and "truncated" not in message


def test_bomb_header_is_enough_even_if_the_rest_is_cut_off(client, upstream):
    bomb = zero_png(50000, 50000, 1, 0)[:100]
    message = assert_refused(post_json(client, data_uri(bomb)), upstream, "image_too_large")
    assert "50000x50000" in message


def test_webp_is_budgeted_at_what_libwebp_takes(client, upstream):
    # 2200x2200 is 19 MB of pixels; libwebp and Pillow together take about 4x that.
    webp = make_photo(2200, 2200, "WEBP", quality=30)
    message = assert_refused(post_file(client, webp, size="1280x720"), upstream, "image_too_large")
    assert "2200x2200 WEBP" in message


def test_progressive_jpeg_is_budgeted_for_its_coefficients(client, upstream):
    # libjpeg keeps every DCT coefficient of a progressive JPEG, whatever the draft scale.
    progressive = make_photo(5000, 4000, "JPEG", quality=40, progressive=True)
    assert_refused(post_file(client, progressive, size="1280x720"), upstream, "image_too_large")


def test_same_jpeg_baseline_is_decoded_small_and_fitted(client, upstream):
    baseline = make_photo(5000, 4000, "JPEG", quality=40)
    response = post_file(client, baseline, size="1280x720")
    assert response.status_code == 200, response.get_data(as_text=True)
    ref = sent_reference(upstream)
    assert ref.content_type == "image/jpeg" and pixel_size(ref.data) == (1280, 720)
    assert pixel(ref.data, (5, 360))[0] > 200 and pixel(ref.data, (1275, 360))[2] > 200


# --- fitting big images exactly ----------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "size"),
    [
        ((4000, 3000), "1280x720"),  # draft 1/2, then a cover crop
        ((4033, 2269), "1280x720"),  # odd sizes: draft rounds up, the result must not
        ((1300, 731), "1280x720"),  # barely larger: no draft at all
        ((4000, 3000), "720x1280"),  # portrait crop out of landscape
        ((641, 361), "1280x720"),  # upscaled
    ],
)
def test_jpeg_needing_a_fit_gets_exactly_the_target_size(client, upstream, source, size):
    jpeg = make_photo(*source, "JPEG", quality=85)
    response = post_json(client, base64.b64encode(jpeg).decode(), size=size)
    assert response.status_code == 200, response.get_data(as_text=True)
    ref = sent_reference(upstream)
    assert ref.filename == "reference.jpg" and ref.content_type == "image/jpeg"
    width, height = (int(v) for v in size.split("x"))
    assert pixel_size(ref.data) == (width, height)
    assert pixel(ref.data, (2, height // 2))[0] > 200
    assert pixel(ref.data, (width - 3, height // 2))[2] > 200


def test_contain_on_a_big_jpeg_letterboxes_exactly(make_app, upstream):
    client = make_app(reference_fit="contain").test_client()
    response = post_file(client, make_photo(3000, 3000, "JPEG"), size="1280x720")
    assert response.status_code == 200, response.get_data(as_text=True)
    data = sent_reference(upstream).data
    assert pixel_size(data) == (1280, 720)
    assert pixel(data, (100, 360)) == (0, 0, 0)  # the bar
    assert pixel(data, (300, 360))[0] > 200 and pixel(data, (980, 360))[2] > 200


def test_rotated_big_jpeg_is_fitted_then_turned_upright(client, upstream):
    # Stored 4000x3000 landscape, shown portrait (orientation 6: rotate 90 clockwise): the
    # stored left (red) half is shown on top.
    jpeg = make_photo(4000, 3000, "JPEG", orientation=6)
    response = post_file(client, jpeg)
    assert response.status_code == 200, response.get_data(as_text=True)
    data = sent_reference(upstream).data
    assert pixel_size(data) == (720, 1280)
    assert pixel(data, (360, 5))[0] > 200 and pixel(data, (360, 1275))[2] > 200
    assert Image.open(io.BytesIO(data)).getexif().get(0x0112) in (None, 1)


@pytest.mark.parametrize(
    ("mode", "fit"),
    [
        ("RGBA", "cover"),
        ("P", "cover"),
        ("LA", "contain"),
        ("RGBA", "contain"),
        ("1", "cover"),
    ],
)
def test_big_png_in_any_mode_is_reduced_in_strips_to_the_exact_size(make_app, upstream, mode, fit):
    client = make_app(reference_fit=fit).test_client()
    png = make_photo(3900, 2600, "PNG", mode=mode, compress_level=1)
    response = post_file(client, png, size="1280x720")
    assert response.status_code == 200, response.get_data(as_text=True)
    ref = sent_reference(upstream)
    assert ref.content_type == "image/png" and pixel_size(ref.data) == (1280, 720)
    if mode in ("RGBA", "P"):
        left, right = (pixel(ref.data, (x, 360)) for x in (250, 1030))
        assert left[0] > 200 and right[2] > 200


def test_16_bit_grey_png_is_fitted(client, upstream):
    response = post_json(client, data_uri(zero_png(2000, 1200, 16, 0)), size="1280x720")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert pixel_size(sent_reference(upstream).data) == (1280, 720)


# --- right-size images are checked, not re-encoded ---------------------------------------


def test_right_size_png_with_a_bad_crc_is_refused(client, upstream):
    png = bytearray(make_photo(1280, 720, "PNG"))
    png[len(png) // 2] ^= 0xFF  # inside IDAT: only the CRC can tell
    assert_refused(post_file(client, bytes(png)), upstream, "invalid_image")


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_right_size_truncated_jpeg_or_webp_is_refused(client, upstream, fmt):
    data = make_photo(1280, 720, fmt)
    assert_refused(post_file(client, data[: len(data) * 2 // 3]), upstream, "invalid_image")


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", "PNG"])
def test_right_size_image_goes_byte_for_byte(client, upstream, fmt):
    data = make_photo(720, 1280, fmt)
    response = post_json(client, data_uri(data), size="720x1280")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert sent_reference(upstream).data == data


def test_png_exif_after_the_pixels_is_honoured(client, upstream):
    stored = make_image(720, 1280, split=True)  # stored portrait, shown landscape
    exif = Image.Exif()
    exif[0x0112] = 6
    iend = stored.rindex(b"IEND") - 4
    tagged = stored[:iend] + png_chunk(b"eXIf", exif.tobytes()) + stored[iend:]
    response = post_file(client, tagged)
    assert response.status_code == 200, response.get_data(as_text=True)
    data = sent_reference(upstream).data
    assert pixel_size(data) == (1280, 720) and data != tagged


# --- what the caller sent is not an image reference --------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "//127.0.0.1/ref.png",
        "//127.0.0.1/",
        "127.0.0.1/ref.png",
        "example.com/cat.png",
        "localhost/x.png",
        "  //example.com/a.png  ",
    ],
)
def test_url_without_a_scheme_is_invalid_reference_url(client, upstream, file_server, value):
    for shape, param in (
        (value, "input_reference"),
        ({"image_url": value}, "input_reference.image_url"),
    ):
        message = assert_refused(
            post_json(client, shape), upstream, "invalid_reference_url", param=param
        )
        assert "http(s) URL" in message
    assert file_server.hits == []


def test_base64_of_a_jpeg_is_never_mistaken_for_a_url(client, upstream):
    jpeg = make_photo(720, 1280, "JPEG")
    encoded = base64.b64encode(jpeg).decode()
    assert encoded.startswith("/9j/")
    assert post_json(client, encoded).status_code == 200


@pytest.mark.parametrize(
    "value",
    [
        "not base64 at all!",
        "abc$%def",
        "data:image/png;base64,!!!!",
        "QUJD" + "\u00e9" * 4,
    ],
)
def test_bad_base64_is_invalid_reference(client, upstream, value):
    message = assert_refused(post_json(client, value), upstream, "invalid_reference")
    assert "base64" in message


def test_data_uri_that_is_not_base64_is_invalid_reference(client, upstream):
    assert_refused(post_json(client, "data:image/png,rawbytes"), upstream, "invalid_reference")


def test_lenient_base64_still_works(client, upstream):
    png = make_image(1280, 720)
    text = base64.urlsafe_b64encode(png).decode().rstrip("=")
    wrapped = "\n".join(text[i : i + 76] for i in range(0, len(text), 76))
    response = post_json(client, wrapped, size="1280x720")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert sent_reference(upstream).data == png


# --- the pieces underneath -----------------------------------------------------------------


def test_headers_agree_with_pillow():
    for data in (
        make_photo(333, 222, "JPEG"),
        make_photo(333, 222, "WEBP"),
        make_photo(333, 222, "WEBP", lossless=True),
        make_photo(333, 222, "PNG"),
        make_photo(333, 222, "WEBP", mode="RGBA", orientation=3),
    ):
        with Image.open(io.BytesIO(data)) as image:
            info = read_info(data, image.format)
            assert (info.width, info.height) == image.size


def test_png_walk_needs_iend():
    png = make_image(64, 64)
    check_png_chunks(png)
    with pytest.raises(ValueError):
        check_png_chunks(png[:-12])


def test_gate_runs_at_most_its_size_at_once():
    gate = imagework.ImageGate(2)
    running, most, lock = [0], [0], threading.Lock()

    def job():
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.02)
        with lock:
            running[0] -= 1
        return 1

    threads = [threading.Thread(target=gate.run, args=(job,)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most[0] == 2


def test_gate_passes_errors_through_and_frees_its_slot():
    gate = imagework.ImageGate(1)

    def failing():
        raise OSError("broken image")

    with pytest.raises(OSError):
        gate.run(failing)
    assert gate.run(lambda: "ok") == "ok"
