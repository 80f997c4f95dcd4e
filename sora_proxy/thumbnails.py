"""A finished video's ``thumbnail`` and ``spritesheet`` variants, for upstreams that make none.

The geometry is the simulator's sample assets' (``simulator/assets/make_assets.sh``): the
thumbnail is the video's first frame at its display size; the spritesheet is six frames, at
0, 1/6, ... 5/6 of the duration, three across and two down, each tile the display size. Two
caps keep large videos' images reasonable: the thumbnail's longer side is at most 1280 pixels
and a tile's at most 640 (a 1280x720 video makes a 1920x720 sheet). Both are lossy WebP.

Frames are decoded one at a time: a seek to the key frame before each wanted time, decoding
on to the frame shown at that time, scaled to its tile at once. Memory is a frame or two and
the sheet, whatever the video's length. Where the video has fewer frames than the sheet has
tiles, or its timestamps end early (a truncated file), the last frame found is repeated: the
sheet always has all six tiles, so readers can rely on its layout. A file cut short whose index
is at its start (``faststart``, as generated videos are) still gives both images; one whose index
was at its end cannot be opened (:class:`ThumbnailError`).

Decoding takes a good part of a second for a long video: under gevent workers it runs in a
native thread (:func:`~sora_proxy.offload.cpu_bound`), off the worker's event loop.
"""

from __future__ import annotations

import io
import itertools
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import av
from av.container import InputContainer
from av.video.frame import VideoFrame
from av.video.stream import VideoStream
from PIL import Image

from .offload import cpu_bound

COLUMNS = 3
ROWS = 2
THUMBNAIL_MAX_SIDE = 1280
TILE_MAX_SIDE = 640
#: Larger declared frames are refused before anything is decoded.
MAX_FRAME_SIDE = 8192
WEBP_QUALITY = 80


class ThumbnailError(Exception):
    """The file is not a video that can be decoded; the message names no path and carries
    no library text."""


def make_thumbnail(video_path: str | os.PathLike[str]) -> bytes:
    """The first frame of the video at ``video_path``, as WebP at its display size (the
    longer side at most 1280 pixels).

    :raises ThumbnailError: not a decodable video, or its frames are over 8192 on a side.
    """
    return cpu_bound(_make_thumbnail, video_path)


def _make_thumbnail(video_path: str | os.PathLike[str]) -> bytes:
    with _opened(video_path) as (container, stream):
        size = _fit(_display_size(stream), THUMBNAIL_MAX_SIDE)
        (image,) = _images_at(container, stream, [0.0], size)
        return _webp(image)


def make_spritesheet(video_path: str | os.PathLike[str]) -> bytes:
    """Six frames evenly spaced through the video at ``video_path``, three across and two
    down, as one WebP image; each tile is the display size with its longer side at most 640.

    :raises ThumbnailError: not a decodable video, or its frames are over 8192 on a side.
    """
    return cpu_bound(_make_spritesheet, video_path)


def _make_spritesheet(video_path: str | os.PathLike[str]) -> bytes:
    with _opened(video_path) as (container, stream):
        width, height = _fit(_display_size(stream), TILE_MAX_SIDE)
        tiles = COLUMNS * ROWS
        duration = _duration(container, stream)
        times = [duration * index / tiles for index in range(tiles)]
        sheet = Image.new("RGB", (width * COLUMNS, height * ROWS))
        for index, tile in enumerate(_images_at(container, stream, times, (width, height))):
            sheet.paste(tile, ((index % COLUMNS) * width, (index // COLUMNS) * height))
        return _webp(sheet)


@contextmanager
def _opened(
    video_path: str | os.PathLike[str],
) -> Iterator[tuple[InputContainer, VideoStream]]:
    """The container and its first video stream, checked; closed when the block ends."""
    try:
        container = av.open(os.fspath(video_path), mode="r")
    except av.FFmpegError:
        raise ThumbnailError("the file is not a readable video") from None
    try:
        if not container.streams.video:
            raise ThumbnailError("the file has no video stream")
        stream = container.streams.video[0]
        _check_size(stream.codec_context.width, stream.codec_context.height)
        try:
            yield container, stream
        except av.FFmpegError:
            raise ThumbnailError("the video could not be decoded") from None
    finally:
        container.close()


def _images_at(
    container: InputContainer,
    stream: VideoStream,
    times: Sequence[float],
    size: tuple[int, int],
) -> list[Image.Image]:
    """The frames shown at ``times`` (seconds from the start, ascending), each at ``size``."""
    start = _start(stream)
    rate = float(stream.average_rate) if stream.average_rate else 0.0
    # Half a frame's slack, so a wanted time a rounding error before a frame still gets it.
    slack = 0.5 / rate if rate > 0 else 0.02
    images: list[Image.Image] = []
    for wanted in times:
        frame = _frame_at(container, stream, start + wanted, start, slack)
        if frame is None:
            if not images:
                raise ThumbnailError("the video has no decodable frames")
            images.append(images[-1])  # past the last frame: it repeats
            continue
        _check_size(frame.width, frame.height)
        width, height = size
        # PyAV's stubs leave to_image unannotated; it returns a PIL image.
        tile = frame.to_image(width=width, height=height, interpolation="AREA")  # type: ignore[no-untyped-call]
        images.append(tile)
    return images


def _frame_at(
    container: InputContainer, stream: VideoStream, wanted: float, start: float, slack: float
) -> VideoFrame | None:
    """The first frame at or after ``wanted`` seconds, else the last one; ``None`` if none
    (or the data there is damaged or cut off, so the tile before it repeats)."""
    try:
        return _decode_to(container, stream, wanted, start, slack)
    except av.FFmpegError:
        return None


def _decode_to(
    container: InputContainer, stream: VideoStream, wanted: float, start: float, slack: float
) -> VideoFrame | None:
    back = 0.0
    while True:
        to = wanted - back
        seeked = _seek(container, stream, to if to > start else 0.0)
        frames = container.decode(stream)
        first = next(frames, None)
        if first is not None and (first.time is None or first.time <= wanted + slack):
            break
        if not seeked or to <= start:
            break
        # Some demuxers (MPEG-TS) land on the key frame after the time asked for, or at the
        # end when there is none: ask again earlier.
        back = max(1.0, back * 4)
    last: VideoFrame | None = None
    for frame in itertools.chain((first,) if first is not None else (), frames):
        if frame.time is None or frame.time >= wanted - slack:
            return frame
        last = frame
    return last


def _seek(container: InputContainer, stream: VideoStream, to: float) -> bool:
    """Seek to the key frame before ``to`` seconds; ``False`` if the file cannot seek."""
    if not stream.time_base:
        return False
    try:
        container.seek(max(round(to / stream.time_base), 0), stream=stream)
    except av.FFmpegError:
        return False  # decoding on from here still reaches later times
    return True


def _start(stream: VideoStream) -> float:
    if stream.start_time and stream.time_base:
        return float(stream.start_time * stream.time_base)
    return 0.0


def _duration(container: InputContainer, stream: VideoStream) -> float:
    """The video's length in seconds: declared by the stream or the container, or else
    read from the last packet's timestamp (demuxed, not decoded)."""
    time_base = stream.time_base
    if stream.duration and time_base:
        return float(stream.duration * time_base)
    if container.duration:
        return container.duration / av.time_base
    if stream.frames and stream.average_rate:
        return stream.frames / float(stream.average_rate)
    end = 0.0
    try:
        for packet in container.demux(stream):
            if packet.pts is not None and time_base:
                end = max(end, float((packet.pts + (packet.duration or 0)) * time_base))
    except av.FFmpegError:
        pass  # a damaged tail: the packets before it still say how long the rest is
    return max(end - _start(stream), 0.0)


def _display_size(stream: VideoStream) -> tuple[int, int]:
    """The frame size as shown: the coded width stretched by the sample aspect ratio."""
    width, height = stream.codec_context.width, stream.codec_context.height
    ratio = stream.sample_aspect_ratio
    if ratio is not None and ratio > 0:
        width = max(round(width * ratio), 1)
    return width, height


def _fit(size: tuple[int, int], longest: int) -> tuple[int, int]:
    width, height = size
    scale = min(1.0, longest / max(width, height))
    return max(round(width * scale), 1), max(round(height * scale), 1)


def _check_size(width: int, height: int) -> None:
    if not (0 < width <= MAX_FRAME_SIDE and 0 < height <= MAX_FRAME_SIDE):
        raise ThumbnailError(
            f"the video's frame size {width}x{height} is outside 1..{MAX_FRAME_SIDE} pixels"
        )


def _webp(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "WEBP", quality=WEBP_QUALITY)
    return buffer.getvalue()
