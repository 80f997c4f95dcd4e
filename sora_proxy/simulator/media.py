"""The sample files served as every finished video's content (see ``assets/make_assets.sh``)."""

from __future__ import annotations

import functools
import hashlib
from importlib import resources

#: ``variant`` query value -> (asset file name, Content-Type).
VARIANTS: dict[str, tuple[str, str]] = {
    "video": ("sample.mp4", "video/mp4"),
    "thumbnail": ("thumbnail.webp", "image/webp"),
    "spritesheet": ("spritesheet.webp", "image/webp"),
}


@functools.cache
def load(variant: str) -> tuple[bytes, str, str]:
    """Return ``(data, content_type, etag)`` for a variant named in :data:`VARIANTS`."""
    name, content_type = VARIANTS[variant]
    data = (resources.files(__name__.rpartition(".")[0]) / "assets" / name).read_bytes()
    return data, content_type, hashlib.sha256(data).hexdigest()[:32]
