"""Decoding, fitting and re-encoding a reference image within a memory budget.

A decoded image costs far more than its file: a 311 KB PNG can decode to 160 MB. So the cost
of decoding is estimated from the header (:func:`plan_decode`) before Pillow is asked, a JPEG
is decoded at the smallest DCT scale that still covers the target (libjpeg's ``draft`` mode),
big reductions are done in strips so no full-size converted copy is ever made, modes are
converted after resizing, and the EXIF rotation is applied to the small result. All of it
runs in :data:`GATE`, which lets a worker process decode only a few images at once, off
gevent's event loop under gevent workers, and hands the memory each one freed back to the
system as it ends.
"""

from __future__ import annotations

import ctypes
import io
import math
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

from PIL import Image

from .imageinfo import SWAPPING_ORIENTATIONS, BadImage, ImageInfo
from .offload import cpu_bound

T = TypeVar("T")
Fit = Literal["cover", "contain"]
Size = tuple[int, int]
Box = tuple[float, float, float, float]

#: Images decoded at once per worker process (each within :data:`MAX_DECODE_BYTES`).
IMAGE_CONCURRENCY = 2
#: The most memory decoding one reference image may take, as :func:`plan_decode` estimates it.
MAX_DECODE_BYTES = 64 * 1024 * 1024
#: libwebp decodes into a canvas (keeping a second one for animation), then Pillow copies the
#: frame out and into its own image: measured at about 4x the frame's RGBA bytes.
WEBP_DECODE_FACTOR = 4
#: Source rows converted and reduced at a time: bounds the copy a mode conversion (or
#: Pillow's premultiplied-alpha resampling) makes to one strip, never the whole image.
STRIP_ROWS = 256
#: Modes Pillow resamples directly; others (palette, 1-bit, 16-bit grey…) are converted first.
_RESAMPLEABLE = frozenset(("L", "LA", "RGB", "RGBA", "CMYK", "I", "F"))
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _find_malloc_trim() -> Callable[[int], int] | None:
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError, TypeError):
        return None  # not glibc (musl, macOS, Windows): nothing to call
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_MALLOC_TRIM = _find_malloc_trim()


def release_free_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc only; otherwise a no-op).

    glibc keeps freed memory for reuse, and raises its mmap threshold after a big block is
    freed, so without this a worker stays at its peak after one large image.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


class ImageGate:
    """Lets at most ``concurrency`` image jobs of this process run at once, and hands the
    memory a job freed back to the system as it ends (:func:`release_free_memory`).

    Trimming after every job, not only the last of a burst, matters: each request thread
    allocates from its own glibc arena, so sixteen queued jobs would otherwise leave sixteen
    arenas each holding one decoded image's worth of free pages.
    """

    def __init__(self, concurrency: int = IMAGE_CONCURRENCY) -> None:
        if concurrency < 1:
            raise ValueError("image concurrency must be at least 1")
        self.concurrency = concurrency
        self._slots = threading.BoundedSemaphore(concurrency)

    def run(self, job: Callable[[], T]) -> T:
        """Run ``job`` when a slot is free and return its result.

        ``job`` should keep its images in its own locals, so they are garbage by the time it
        returns and the trim can give their memory back. Under gevent it runs in a native
        thread (:func:`~sora_proxy.offload.cpu_bound`); the slot is taken here, in the
        caller's greenlet, so the limit holds either way.
        """
        with self._slots:
            return cpu_bound(_run_and_trim, job)


def _run_and_trim(job: Callable[[], T]) -> T:
    try:
        return job()
    except BaseException as error:
        # The traceback holds the job's frames and so its half-decoded images.
        traceback.clear_frames(error.__traceback__)
        raise
    finally:
        release_free_memory()


#: The gate every reference image goes through in this process.
GATE = ImageGate()


def set_image_concurrency(concurrency: int) -> None:
    """Give :data:`GATE` ``concurrency`` slots (at start-up: the gate is replaced, so jobs
    already waiting keep the old one). A no-op when it already has that many."""
    global GATE
    if GATE.concurrency != concurrency:
        GATE = ImageGate(concurrency)


@dataclass(frozen=True)
class DecodePlan:
    """How an image will be decoded: at which JPEG scale, to what size, at what memory cost."""

    scale: int
    size: Size
    cost: int


def plan_decode(info: ImageInfo, wanted: Size) -> DecodePlan:
    """The cheapest decode of ``info`` giving at least ``wanted`` pixels (stored orientation).

    Only JPEG can be decoded smaller (libjpeg scales by 1/2, 1/4 or 1/8 while decoding; Pillow's
    ``draft`` picks the scale by the same rule as here). A progressive JPEG also buffers every
    DCT coefficient of the full-size image, 2 bytes each, whatever the scale.
    """
    width, height = info.width, info.height
    if info.format == "WEBP":
        return DecodePlan(1, (width, height), width * height * 4 * WEBP_DECODE_FACTOR)
    if info.format != "JPEG":
        return DecodePlan(1, (width, height), width * height * info.bytes_per_pixel)
    most = min(width // max(wanted[0], 1), height // max(wanted[1], 1))
    scale = next((s for s in (8, 4, 2) if most >= s), 1)
    size = (-(-width // scale), -(-height // scale))
    cost = size[0] * size[1] * info.bytes_per_pixel
    if info.progressive:
        most_h = max(h for h, _ in info.sampling)
        most_v = max(v for _, v in info.sampling)
        cost += sum(
            math.ceil(width * h / most_h / 8) * math.ceil(height * v / most_v / 8) * 128
            for h, v in info.sampling
        )
    return DecodePlan(scale, size, cost)


def stored_target(target: Size, orientation: int) -> Size:
    """``target`` (as displayed) in the image's stored orientation."""
    return (target[1], target[0]) if orientation in SWAPPING_ORIENTATIONS else target


def least_decoded_size(info: ImageInfo, target: Size, how: Fit) -> Size:
    """The smallest decoded size (stored orientation) that fitting to ``target`` can use
    without upscaling what it could have had at full size."""
    scale = (max if how == "cover" else min)(target[0] / info.width, target[1] / info.height)
    return (math.ceil(info.width * scale), math.ceil(info.height * scale))


def decode(data: bytes, info: ImageInfo, wanted: Size) -> Image.Image:
    """Decode ``data`` (whole file checked), at JPEG's smallest scale still ``>= wanted``."""
    image = Image.open(io.BytesIO(data), formats=[info.format])
    if image.size != (info.width, info.height):
        image.close()
        raise BadImage("the image's header and its frame disagree on its size")
    if info.format == "JPEG":
        image.draft(None, wanted)
    image.load()
    return image


def check_pixels(data: bytes, info: ImageInfo) -> None:
    """Decode ``data`` as cheaply as possible (JPEG at 1/8) only to check it, then drop it."""
    decode(data, info, (1, 1)).close()


def fit_and_encode(
    data: bytes, info: ImageInfo, target: Size, how: Fit, orientation: int, image_format: str
) -> bytes:
    """Decode ``data``, scale it to exactly ``target`` (as displayed: upright) by ``how``, and
    encode it in ``image_format``. Meant to run in :meth:`ImageGate.run`."""
    stored = stored_target(target, orientation)
    image = decode(data, info, least_decoded_size(info, stored, how))
    try:
        fitted = _fit(image, stored, how)
    finally:
        image.close()  # frees the decoded pixels now, not when the last reference goes
    if orientation in _TRANSPOSE:
        fitted = fitted.transpose(_TRANSPOSE[orientation])
    return encode(fitted, image_format)


def _fit(image: Image.Image, target: Size, how: Fit) -> Image.Image:
    inner, box = _geometry(image.size, target, how)
    ratio = min((box[2] - box[0]) / inner[0], (box[3] - box[1]) / inner[1])
    factor = int(ratio) if ratio >= 2 else 1
    source, box = _reduced(image, box, factor)
    try:
        fitted = source.resize(inner, Image.Resampling.LANCZOS, box=box)
    finally:
        if source is not image:
            source.close()
    if inner == target:
        return fitted
    canvas = Image.new(fitted.mode, target, _black(fitted.mode))
    canvas.paste(fitted, ((target[0] - inner[0]) // 2, (target[1] - inner[1]) // 2))
    return canvas


def _geometry(size: Size, target: Size, how: Fit) -> tuple[Size, Box]:
    """The size to scale to and the source box to scale from: ``cover`` crops the centre to
    the target's shape; ``contain`` keeps the whole image, to be letterboxed."""
    width, height = size
    if how == "cover":
        scale = max(target[0] / width, target[1] / height)
        crop_w, crop_h = target[0] / scale, target[1] / scale
        left, top = (width - crop_w) / 2, (height - crop_h) / 2
        return target, (left, top, left + crop_w, top + crop_h)
    scale = min(target[0] / width, target[1] / height)
    inner = (
        min(target[0], max(1, round(width * scale))),
        min(target[1], max(1, round(height * scale))),
    )
    return inner, (0.0, 0.0, float(width), float(height))


def _reduced(image: Image.Image, box: Box, factor: int) -> tuple[Image.Image, Box]:
    """``box`` of ``image`` in a mode Pillow resamples, shrunk by an integer ``factor`` (a box
    filter, as Pillow's own ``reducing_gap`` does), one strip of rows at a time.

    Returns the image unchanged when there is nothing to do. Otherwise the result is at most
    a quarter of the box (``factor`` >= 2), or the box itself when only the mode changes.
    """
    mode = _resample_mode(image)
    if factor == 1 and mode == image.mode:
        return image, box
    left, top = math.floor(box[0]), math.floor(box[1])
    right = min(image.width, math.ceil(box[2]))
    bottom = min(image.height, math.ceil(box[3]))
    out = Image.new(mode, (-(-(right - left) // factor), -(-(bottom - top) // factor)))
    step = factor * max(1, STRIP_ROWS // factor)
    for row in range(top, bottom, step):
        strip = image.crop((left, row, right, min(row + step, bottom)))
        if strip.mode != mode:
            strip = strip.convert(mode)
        if factor > 1:
            strip = strip.reduce(factor)
        out.paste(strip, (0, (row - top) // factor))
    reduced = (
        (box[0] - left) / factor,
        (box[1] - top) / factor,
        (box[2] - left) / factor,
        (box[3] - top) / factor,
    )
    return out, reduced


def _resample_mode(image: Image.Image) -> str:
    if image.mode in _RESAMPLEABLE:
        return image.mode
    if image.mode == "1":
        return "L"
    if image.mode.startswith("I;16"):
        return "I"
    return "RGBA" if image.has_transparency_data else "RGB"


def _black(mode: str) -> int | tuple[int, ...]:
    """Opaque black in ``mode``."""
    return {"RGB": (0, 0, 0), "RGBA": (0, 0, 0, 255), "LA": (0, 255), "CMYK": (0, 0, 0, 255)}.get(
        mode, 0
    )


def encode(image: Image.Image, image_format: str) -> bytes:
    """``image`` as a ``PNG``, ``JPEG`` or ``WEBP`` file, converting its mode only if the
    format cannot hold it (the image is already small)."""
    out = io.BytesIO()
    if image_format == "JPEG":
        if image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
        image.save(out, "JPEG", quality=95)
    elif image_format == "WEBP":
        if image.mode not in ("RGB", "RGBA"):
            image = image.convert("RGBA" if image.has_transparency_data else "RGB")
        image.save(out, "WEBP", quality=95)
    else:
        if image.mode == "I":
            image = image.convert("I;16")  # back to the 16-bit grey it was read from
        elif image.mode not in ("1", "L", "LA", "I;16", "P", "RGB", "RGBA"):
            image = image.convert("RGBA" if image.has_transparency_data else "RGB")
        # Level 1: a 1280x720 photo encodes in ~30 ms instead of ~90 ms at the default 6, for
        # a file about 1.6x larger; the create latency budget matters more than upload bytes.
        image.save(out, "PNG", compress_level=1)
    return out.getvalue()
