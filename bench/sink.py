"""An upload sink: reads each request body to its last byte, then answers a new Video.

The upstream front sends ``POST /v1/videos/edits`` here. nginx's own ``return`` would answer
as soon as the headers arrive and discard the body afterwards, and a proxy in between could
then stop relaying early; this sink answers only once the whole body is in, as a real
upstream does, so an upload's time covers every byte going through the proxy.

    python bench/sink.py PORT
"""

from __future__ import annotations

import http.server
import json
import secrets
import sys

CHUNK = 1 << 20


class SinkHandler(http.server.BaseHTTPRequestHandler):
    """Keep-alive HTTP/1.1; any POST body (Content-Length or chunked) is read and dropped."""

    protocol_version = "HTTP/1.1"

    def _drain_length(self, length: int) -> int:
        left = length
        view = memoryview(bytearray(CHUNK))
        while left > 0:
            count = self.rfile.readinto(view[: min(CHUNK, left)])
            if not count:
                break
            left -= count
        return length - left

    def _drain_chunked(self) -> int:
        total = 0
        while True:
            size = int(self.rfile.readline(1024).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return total
            total += self._drain_length(size)
            self.rfile.readline(8)

    def do_POST(self) -> None:
        """Read the body, answer a queued Video with the byte count as a header."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            received = self._drain_chunked()
        else:
            received = self._drain_length(int(self.headers.get("Content-Length") or 0))
        body = json.dumps(
            {
                "id": f"video_{secrets.token_hex(16)}",
                "object": "video",
                "model": "sora-2",
                "status": "queued",
                "progress": 0,
                "created_at": 1767225600,
                "completed_at": None,
                "expires_at": None,
                "prompt": "bench",
                "size": "720x1280",
                "seconds": "4",
                "remixed_from_video_id": None,
                "error": None,
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Sink-Received", str(received))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """No access log."""


def main() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), SinkHandler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
