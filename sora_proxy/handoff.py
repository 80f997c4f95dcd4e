"""Hand-off to nginx: the proxy decides a download, nginx moves its bytes.

With ``SORA_PROXY_HANDOFF=nginx`` a content download that would hold a gunicorn thread for
minutes is answered instead with an empty body and ``X-Accel-Redirect`` to an ``internal``
location of the shipped site (``config/nginx/sora-proxy.conf``), which sends the bytes with
no Python thread:

- ``<prefix>/archive/<key>``: a local archive file, sent with ``sendfile``. The proxy has
  already answered what it answers itself (``HEAD``, ``304``, ``416``) and hands off only
  when nginx's own Range handling picks the same bytes it would (see
  :func:`sora_proxy.archive.serving.archived_response`).
- ``<prefix>/relay/``: an OpenAI-dialect upstream's content endpoint, passed through as the
  proxy would (its errors unchanged, except a refused key: ``502 upstream_auth_failed``).
- ``<prefix>/fetch/``: a proxy-owned video's content endpoint or result URL, which the proxy
  has just probed (status, redirects, SSRF rules, the error-document check); any error nginx
  then meets becomes ``502 upstream_result_unavailable``.

What nginx needs rides in ``X-Sora-Handoff-*`` answer headers, which nginx reads into
variables and never passes to the client: the target URL (with the address the proxy
resolved and checked, so DNS cannot change it in between), ``Host``, the TLS name, the
credentials the proxy chose (none for a result host) and the caller key for ``limit_conn``.

A hand-off happens only when the setting says ``nginx`` *and* the request came from the
shipped site: it carries ``X-Sora-Proxy-Handoff: <prefix>`` (set by nginx, never by a
client) from a loopback peer (the socket's own address, not ``X-Forwarded-For``).
Otherwise, and for the S3 archive backend, the proxy streams as it always did.
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal
from urllib.parse import quote, urlencode, urlsplit

from flask import Response, request

from .archive import Archive, LocalArchive
from .auth import Caller
from .catalog import Upstream
from .errors import UpstreamUnreachable
from .observability import note_handoff

if TYPE_CHECKING:
    from .extension import ProxyState

#: The request header nginx sets (to the hand-off prefix) on the routes that may hand off.
MARKER = "X-Sora-Proxy-Handoff"
#: Answer headers nginx reads after ``X-Accel-Redirect`` (all named ``X-Sora-Handoff-*``).
TARGET_HEADERS = ("Url", "Host", "Server-Name", "Caller", "Etag", "Last-Modified")
#: Credential headers a dialect may send, and the answer header each travels in to nginx.
CREDENTIALS = {
    "authorization": "X-Sora-Handoff-Authorization",
    "x-goog-api-key": "X-Sora-Handoff-Goog-Api-Key",
    "api-key": "X-Sora-Handoff-Api-Key",
}
#: What a probe asks a source for: its first byte (a source without ranges sends it all,
#: and the probe reads one byte of it and closes).
PROBE_RANGE = "bytes=0-0"
_DEFAULT_PORTS = {"http": 80, "https": 443}
_PATH_SAFE = "/%:@!$&'()*+,;=~-._"

Location = Literal["relay", "fetch"]


@dataclass(frozen=True)
class Target:
    """Where nginx connects: ``scheme://address:port`` + ``target`` (path and query), with
    ``Host`` and, for TLS, the certificate name ``host``."""

    scheme: str
    address: str
    port: int
    host: str
    target: str

    @property
    def url(self) -> str:
        shown = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.scheme}://{shown}:{self.port}{self.target}"

    @property
    def host_header(self) -> str:
        name = f"[{self.host}]" if ":" in self.host else self.host
        return name if self.port == _DEFAULT_PORTS[self.scheme] else f"{name}:{self.port}"


class Handoff:
    """This request's hand-off to nginx (:func:`for_request` says whether there is one).

    :param prefix: the internal locations' prefix (``SORA_PROXY_HANDOFF_PREFIX``).
    :param caller_key: what nginx's ``limit_conn`` counts streams by; ``""`` (no cap) when
        ``SORA_PROXY_STREAMS_PER_CALLER`` is 0.
    """

    def __init__(self, prefix: str, caller_key: str) -> None:
        self.prefix = prefix
        self.caller_key = caller_key

    def archived(
        self, archive: Archive, key: str, size: int, headers: Mapping[str, str]
    ) -> Response | None:
        """The hand-off of archived object ``key`` (``headers``: its ETag, Last-Modified,
        Cache-Control and Content-Type as the proxy decided them), or ``None`` when the
        archive is not a local folder nginx can read."""
        if not isinstance(archive, LocalArchive):
            return None
        answer = self._answer(f"{self.prefix}/archive/{quote(key)}")
        for name, value in headers.items():
            if name in ("ETag", "Last-Modified"):
                # nginx drops these from an X-Accel-Redirect answer; the location adds them back.
                answer.headers[f"X-Sora-Handoff-{name.title()}"] = value
            elif name not in ("Accept-Ranges", "Content-Length", "Content-Range"):
                answer.headers[name] = value  # nginx says these itself
        note_handoff({"handoff": "nginx", "handoff_bytes": size})
        return answer

    def upstream(
        self,
        upstream: Upstream,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        caller_authorization: str | None = None,
        location: Location,
    ) -> Response | None:
        """The hand-off of ``GET path`` at ``upstream`` with the credentials its dialect
        sends, or ``None`` when they cannot travel to nginx (a header it does not know)."""
        outgoing = upstream.dialect.request(
            upstream, "GET", path, headers={}, params=params,
            caller_authorization=caller_authorization,
        )  # fmt: skip
        credentials: dict[str, str] = {}
        for name, value in outgoing.headers.items():
            if name.lower() not in CREDENTIALS:
                return None
            credentials[CREDENTIALS[name.lower()]] = value
        query = urlencode(dict(outgoing.params))
        url = outgoing.url + (("&" if "?" in outgoing.url else "?") + query if query else "")
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        host = parts.hostname or ""
        port = parts.port or _DEFAULT_PORTS.get(scheme, 80)
        address = _resolve(host, port)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        return self.target(
            Target(scheme, address, port, host, target), location, credentials, upstream.name
        )

    def target(
        self,
        target: Target,
        location: Location,
        credentials: Mapping[str, str] | None = None,
        upstream_name: str | None = None,
    ) -> Response:
        """The hand-off of a GET of ``target`` through the ``location`` internal location
        (``upstream_name``: the configured upstream it is, for the log line)."""
        answer = self._answer(f"{self.prefix}/{location}/")
        answer.headers["X-Sora-Handoff-Url"] = target.url
        answer.headers["X-Sora-Handoff-Host"] = target.host_header
        answer.headers["X-Sora-Handoff-Server-Name"] = target.host
        for name, value in (credentials or {}).items():
            answer.headers[name] = value
        noted = {"handoff": "nginx", "handoff_host": target.host_header}
        if upstream_name is not None:
            noted["upstream"] = upstream_name
        note_handoff(noted)
        return answer

    def _answer(self, uri: str) -> Response:
        answer = Response(status=200)
        del answer.headers["Content-Type"]  # nginx's answer says its own (or the upstream's)
        answer.headers["X-Accel-Redirect"] = uri
        if self.caller_key:
            answer.headers["X-Sora-Handoff-Caller"] = self.caller_key
        return answer


def for_request(state: ProxyState, caller: Caller) -> Handoff | None:
    """This request's :class:`Handoff`, when the setting is ``nginx``, the request is a GET
    and it came from the shipped nginx site (the marker from a loopback peer)."""
    settings = state.settings
    if settings.handoff != "nginx" or request.method != "GET":
        return None
    if request.headers.get(MARKER) != settings.handoff_prefix or not _from_loopback():
        return None
    key = stream_key(caller) if settings.streams_per_caller else ""
    return Handoff(settings.handoff_prefix, key)


def result_target(url: str, address: str) -> Target:
    """The :class:`Target` of a result URL that :func:`sora_proxy.fetch.open_url` just
    fetched from ``address`` (checked under its SSRF rules), as it sent the request."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").encode("idna").decode("ascii").lower()
    target = quote(parts.path or "/", safe=_PATH_SAFE)
    if parts.query:
        target += "?" + quote(parts.query, safe="/?" + _PATH_SAFE)
    return Target(scheme, address, parts.port or _DEFAULT_PORTS[scheme], host, target)


def stream_key(caller: Caller) -> str:
    """An opaque, stable key per caller for counting its streams (never its name or key)."""
    who = caller.name or caller.upstream_authorization or "anonymous"
    return hashlib.sha256(f"sora-proxy-streams:{who}".encode()).hexdigest()[:32]


def scrubbed(response: Response) -> Response:
    """``response`` without ``X-Accel-*`` headers (an upstream's own, relayed): on the
    routes where nginx honours them, only the proxy's hand-off may carry one."""
    for name in [name for name in response.headers.keys() if name.lower().startswith("x-accel-")]:
        del response.headers[name]
    return response


def _from_loopback() -> bool:
    """Whether the socket's peer (before any ProxyFix rewrite) is a loopback address."""
    original = request.environ.get("werkzeug.proxy_fix.orig") or {}
    peer = original.get("REMOTE_ADDR") or request.environ.get("REMOTE_ADDR") or ""
    try:
        return ipaddress.ip_address(peer.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _resolve(host: str, port: int) -> str:
    """The configured upstream's address for nginx (which has no resolver configured): an
    operator's upstream, not a client's URL, so no SSRF rules apply."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise UpstreamUnreachable("The upstream's host name did not resolve.") from None
    return str(infos[0][4][0])
