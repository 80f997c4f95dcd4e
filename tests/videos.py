"""Large multipart video uploads made on the fly, for streaming tests and benchmarks."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from sora_proxy.simulator.media import load as load_asset

MB = 1024 * 1024
MP4, _, _ = load_asset("video")


class VideoUpload:
    """A multipart body with text parts and a ``video`` file of ``size`` bytes, generated as
    it is sent (never held in memory) and sent with a Content-Length (``len()``).

    The file repeats a real MP4, so it starts with an ``ftyp`` box. ``sha256`` is the file's
    digest once the body has been iterated.
    """

    def __init__(self, size: int, fields: dict[str, str] | None = None,
                 boundary: str = "video-upload-boundary") -> None:
        assert size % MB == 0, "whole MiB only"
        self.size = size
        self.content_type = f"multipart/form-data; boundary={boundary}"
        text = "".join(
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            for name, value in (fields or {"prompt": "More rain"}).items()
        )
        self._head = (text + f"--{boundary}\r\nContent-Disposition: form-data; name=\"video\"; "
                      "filename=\"big.mp4\"\r\nContent-Type: video/mp4\r\n\r\n").encode()
        self._tail = f"\r\n--{boundary}--\r\n".encode()
        self._block = (MP4 * (MB // len(MP4) + 1))[:MB]
        self._digest = hashlib.sha256()

    def __iter__(self) -> Iterator[bytes]:
        self._digest = hashlib.sha256()
        yield self._head
        for _ in range(self.size // MB):
            self._digest.update(self._block)
            yield self._block
        yield self._tail

    def __len__(self) -> int:
        return len(self._head) + self.size + len(self._tail)

    @property
    def sha256(self) -> str:
        """The video file's digest (valid after the body was sent)."""
        return self._digest.hexdigest()
