"""thumbnails.py on the simulator's sample and on videos made here with PyAV: solid colours
that change every second, so each tile's colour says which moment it shows."""

from __future__ import annotations

import io
import os
import wave
from fractions import Fraction
from pathlib import Path

import av
import pytest
from PIL import Image, ImageChops, ImageStat

from sora_proxy.thumbnails import ThumbnailError, make_spritesheet, make_thumbnail

ASSETS = Path(__file__).resolve().parent.parent / "sora_proxy" / "simulator" / "assets"
SAMPLE = ASSETS / "sample.mp4"
COLOURS = [
    (255, 0, 0),
    (0, 255, 0),
    (0, 0, 255),
    (255, 255, 0),
    (0, 255, 255),
    (255, 0, 255),
    (255, 255, 255),
    (0, 0, 0),
    (128, 128, 128),
    (255, 128, 0),
]


class Unseekable(io.RawIOBase):
    """A write-only sink the muxer cannot seek back in, as when streaming to a pipe."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, chunk) -> int:
        self.data += chunk
        return len(chunk)


def make_video(
    path: Path,
    colours: list[tuple[int, int, int]],
    *,
    fps: int = 10,
    frames_each: int | None = None,
    size: tuple[int, int] = (320, 180),
    format: str | None = None,
    streamed: bool = False,
    sample_aspect_ratio: Fraction | None = None,
) -> Path:
    """Each colour for ``frames_each`` frames (a second by default), H.264 in ``format``."""
    sink = Unseekable() if streamed else None
    output = av.open(sink if sink is not None else str(path), "w", format=format)
    stream = output.add_stream("libx264", rate=fps)
    stream.width, stream.height = size
    stream.pix_fmt = "yuv420p"
    stream.options = {"g": str(fps * 3)}  # key frames every 3 s: seeking must decode on
    if sample_aspect_ratio is not None:
        stream.codec_context.sample_aspect_ratio = sample_aspect_ratio
    index = 0
    for colour in colours:
        for _ in range(frames_each or fps):
            frame = av.VideoFrame.from_image(Image.new("RGB", size, colour))
            frame.pts = index
            index += 1
            for packet in stream.encode(frame):
                output.mux(packet)
    for packet in stream.encode():
        output.mux(packet)
    output.close()
    if sink is not None:
        path.write_bytes(sink.data)
    return path


def image(data: bytes) -> Image.Image:
    opened = Image.open(io.BytesIO(data))
    assert opened.format == "WEBP"
    return opened.convert("RGB")


def tile_colours(sheet: Image.Image, columns: int = 3, rows: int = 2) -> list[tuple[int, ...]]:
    width, height = sheet.width // columns, sheet.height // rows
    return [
        sheet.getpixel((column * width + width // 2, row * height + height // 2))
        for row in range(rows)
        for column in range(columns)
    ]


def close(colour: tuple[int, ...], expected: tuple[int, int, int], slack: int = 24) -> bool:
    return all(abs(a - b) <= slack for a, b in zip(colour, expected, strict=True))


def mean_difference(a: Image.Image, b: Image.Image) -> float:
    return sum(ImageStat.Stat(ImageChops.difference(a, b)).mean) / 3


# Tiles at 0, 1/6, ... 5/6 of 10 s: 0, 1.67, 3.33, 5, 6.67, 8.33 s -> these seconds' colours.
EXPECTED_TILES = [COLOURS[second] for second in (0, 1, 3, 5, 6, 8)]


# --- the simulator's sample ---------------------------------------------------------------------


def test_sample_has_the_assets_geometry() -> None:
    thumbnail = image(make_thumbnail(SAMPLE))
    sheet = image(make_spritesheet(SAMPLE))
    assert thumbnail.size == Image.open(ASSETS / "thumbnail.webp").size == (128, 72)
    assert sheet.size == Image.open(ASSETS / "spritesheet.webp").size == (384, 144)


def test_sample_frames_are_the_first_and_every_quarter_second() -> None:
    with av.open(str(SAMPLE)) as container:
        frames = [frame.to_image() for frame in container.decode(video=0)]
    assert len(frames) == 18  # 1.5 s at 12 fps: tiles at frames 0, 3, 6, 9, 12, 15

    def nearest(picture: Image.Image) -> int:
        differences = [mean_difference(picture, frame) for frame in frames]
        return differences.index(min(differences))

    assert nearest(image(make_thumbnail(SAMPLE))) == 0
    sheet = image(make_spritesheet(SAMPLE))
    tiles = [
        sheet.crop((i % 3 * 128, i // 3 * 72, i % 3 * 128 + 128, i // 3 * 72 + 72))
        for i in range(6)
    ]
    assert [nearest(tile) for tile in tiles] == [0, 3, 6, 9, 12, 15]


# --- videos made here ---------------------------------------------------------------------------


def test_spritesheet_tiles_show_the_right_moments_in_order(tmp_path: Path) -> None:
    video = make_video(tmp_path / "ten.mp4", COLOURS)
    sheet = image(make_spritesheet(video))
    assert sheet.size == (960, 360)
    for got, expected in zip(tile_colours(sheet), EXPECTED_TILES, strict=True):
        assert close(got, expected), (got, expected)


def test_thumbnail_is_the_first_frame_at_display_size(tmp_path: Path) -> None:
    thumbnail = image(make_thumbnail(make_video(tmp_path / "ten.mp4", COLOURS)))
    assert thumbnail.size == (320, 180)
    assert close(thumbnail.getpixel((160, 90)), COLOURS[0])


@pytest.mark.parametrize(
    ("name", "format", "streamed"),
    [("nodur.mkv", "matroska", True), ("ten.ts", "mpegts", False)],
)
def test_container_without_duration_or_exact_seeks(
    tmp_path: Path, name: str, format: str, streamed: bool
) -> None:
    """Matroska streamed to a pipe declares no duration (it is read from the packets);
    MPEG-TS seeks land on the key frame after the time asked for (the seek is redone earlier)."""
    video = make_video(tmp_path / name, COLOURS, format=format, streamed=streamed)
    if streamed:
        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            assert container.duration is None and stream.duration is None and not stream.frames
    for got, expected in zip(
        tile_colours(image(make_spritesheet(video))), EXPECTED_TILES, strict=True
    ):
        assert close(got, expected), (got, expected)
    assert close(image(make_thumbnail(video)).getpixel((160, 90)), COLOURS[0])


def test_large_video_is_capped(tmp_path: Path) -> None:
    video = make_video(tmp_path / "big.mp4", COLOURS[:2], size=(1920, 1080), frames_each=2)
    assert image(make_thumbnail(video)).size == (1280, 720)
    assert image(make_spritesheet(video)).size == (1920, 720)  # 640x360 tiles


def test_portrait_video(tmp_path: Path) -> None:
    video = make_video(tmp_path / "tall.mp4", COLOURS[:1], size=(72, 128), frames_each=3)
    assert image(make_thumbnail(video)).size == (72, 128)
    assert image(make_spritesheet(video)).size == (216, 256)


def test_sample_aspect_ratio_gives_the_display_size(tmp_path: Path) -> None:
    video = make_video(
        tmp_path / "anamorphic.mp4",
        COLOURS[:1],
        size=(240, 180),
        sample_aspect_ratio=Fraction(4, 3),
    )
    assert image(make_thumbnail(video)).size == (320, 180)
    assert image(make_spritesheet(video)).size == (960, 360)


def test_fewer_frames_than_tiles_repeat(tmp_path: Path) -> None:
    """Three frames (0.3 s): each tile shows the frame nearest its time, so each repeats."""
    video = make_video(tmp_path / "three.mp4", COLOURS[:3], frames_each=1)
    got = tile_colours(image(make_spritesheet(video)))
    expected = [COLOURS[0], COLOURS[0], COLOURS[1], COLOURS[1], COLOURS[2], COLOURS[2]]
    assert all(close(a, b) for a, b in zip(got, expected, strict=True)), got


def test_a_single_frame_fills_every_tile(tmp_path: Path) -> None:
    video = make_video(tmp_path / "one.mp4", COLOURS[4:5], frames_each=1)
    sheet = image(make_spritesheet(video))
    assert sheet.size == (960, 360)
    assert all(close(colour, COLOURS[4]) for colour in tile_colours(sheet))


# --- what is not a usable video -----------------------------------------------------------------


def _refused(path: Path) -> str:
    messages = []
    for make in (make_thumbnail, make_spritesheet):
        with pytest.raises(ThumbnailError) as caught:
            make(path)
        messages.append(str(caught.value))
    for message in messages:
        assert str(path.parent) not in message and path.name not in message
        assert "Errno" not in message and "avcodec" not in message
    return messages[0]


def test_garbage_is_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"this is not a video, only words\n" * 200)
    assert _refused(garbage) == "the file is not a readable video"
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    _refused(empty)


def test_audio_only_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tone.wav"
    with wave.open(str(path), "wb") as sound:
        sound.setnchannels(1)
        sound.setsampwidth(2)
        sound.setframerate(8000)
        sound.writeframes(b"\0\0" * 8000)
    assert _refused(path) == "the file has no video stream"


def test_absurd_frame_size_is_refused_before_decoding(tmp_path: Path) -> None:
    video = make_video(tmp_path / "wide.mkv", COLOURS[:1], size=(8208, 16), frames_each=1)
    assert "8208x16" in _refused(video)


def test_truncated_faststart_mp4_still_gives_images(tmp_path: Path) -> None:
    """The sample keeps its index first: cut in half, its first frames still decode and the
    tiles past the cut repeat the last one found."""
    truncated = tmp_path / "half.mp4"
    truncated.write_bytes(SAMPLE.read_bytes()[: SAMPLE.stat().st_size // 2])
    assert image(make_thumbnail(truncated)).size == (128, 72)
    assert image(make_spritesheet(truncated)).size == (384, 144)


def test_truncated_mp4_with_its_index_at_the_end_is_refused(tmp_path: Path) -> None:
    video = make_video(tmp_path / "whole.mp4", COLOURS[:2])
    data = video.read_bytes()
    assert data.find(b"moov") > len(data) // 2
    truncated = tmp_path / "half.mp4"
    truncated.write_bytes(data[: len(data) // 2])
    _refused(truncated)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_files_are_closed(tmp_path: Path) -> None:
    video = make_video(tmp_path / "ten.mp4", COLOURS[:2])
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\0" * 1000)

    def open_files() -> set[str]:
        found = set()
        for fd in Path("/proc/self/fd").iterdir():
            try:
                found.add(os.readlink(fd))
            except OSError:
                pass
        return found

    make_thumbnail(video)
    make_spritesheet(video)
    with pytest.raises(ThumbnailError):
        make_spritesheet(garbage)
    assert not {str(video), str(garbage)} & open_files()
